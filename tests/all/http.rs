//! The HTTP surface's own defences (SECURITY.md): open mode's Host, Origin
//! and header rules, the timeouts and the connection limit of a real
//! `caisson serve`, the headers on every response, token listing and
//! revocation of the file's tokens, log streams (revocation, the cap) and
//! the CLI's escaping of what a task prints.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::api::{App, app, app_with};
use crate::server::{cli, push_guest, text, write_embedded_config};
use caisson_tests::{Served, guest, guest_path};

const ADMIN: &str = "http-admin-token";
const ALPHA: &str = "http-alpha-token";

/// A router app with an admin token and tenant `alpha` holding `ALPHA`,
/// with `server_extra` in its `[server]` table.
async fn app_with_alpha(server_extra: &str) -> App {
    let server = format!("admin_token = \"{ADMIN}\"\n{server_extra}");
    app_with(
        &server,
        &format!("[tenants.alpha]\ntokens = [\"{ALPHA}\"]"),
        0,
    )
    .await
}

/// A request to the router with exactly `headers` (no content type or
/// token added).
async fn send(app: &App, method: &str, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (status, body, _) = app.send(request.body(Body::empty()).unwrap()).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_refuses_foreign_hosts_origins_and_simple_requests() {
    let app = app("", 0).await;
    // Loopback names, with or without a port, are served.
    for host in [
        "localhost",
        "localhost:7070",
        "127.0.0.1:7070",
        "127.3.4.5",
        "[::1]:7070",
    ] {
        let (status, answer) = send(&app, "GET", "/v1/runs", &[("host", host)]).await;
        assert_eq!(status, StatusCode::OK, "{host}: {answer}");
    }
    // DNS rebinding: the browser sends the attacker's name as `Host`.
    for host in [
        "evil.example",
        "evil.example:7070",
        "127.0.0.1.nip.io:7070",
        "10.1.2.3:7070",
    ] {
        let (status, answer) = send(&app, "GET", "/v1/runs", &[("host", host)]).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}: {answer}");
        assert_eq!(answer["error"]["code"], "misdirected_request");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("no API tokens") && message.contains(host),
            "{message}"
        );
    }
    // A page of another site, even sending to a loopback Host.
    for origin in [
        "http://evil.example",
        "null",
        "https://localhost.evil.example",
    ] {
        let headers = [("host", "127.0.0.1:7070"), ("origin", origin)];
        let (status, answer) = send(&app, "GET", "/v1/runs", &headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("other sites")
        );
    }
    let local = [
        ("host", "localhost:7070"),
        ("origin", "http://localhost:3000"),
    ];
    assert_eq!(
        send(&app, "GET", "/v1/runs", &local).await.0,
        StatusCode::OK
    );

    // Simple requests that change state: a body-less POST, a form post, a
    // raw upload with no content type. All refused before any handler.
    let (status, run) = app
        .json("POST", "/v1/runs", None, Some(json!({"module": "nope"})))
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "JSON is not simple: {run}"
    );
    let cancel = "/v1/runs/00000000-0000-0000-0000-000000000000/cancel";
    for headers in [
        vec![],
        vec![("content-type", "text/plain")],
        vec![("content-type", "application/x-www-form-urlencoded")],
        vec![("content-type", "multipart/form-data; boundary=x")],
    ] {
        for (method, uri) in [
            ("POST", cancel),
            ("POST", "/v1/modules?name=m"),
            ("DELETE", "/v1/modules/m"),
        ] {
            let (status, answer) = send(&app, method, uri, &headers).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {uri} {headers:?}: {answer}"
            );
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("X-Caisson-Client"),
                "{answer}"
            );
        }
    }
    // With the CLI's header, or a content type a form cannot send, the
    // handler answers (here: no such run, not a component).
    let (status, _) = send(&app, "POST", cancel, &[("x-caisson-client", "test")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let upload = [("content-type", "application/wasm")];
    let (status, answer) = send(&app, "POST", "/v1/modules?name=m", &upload).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");

    // With tokens, a browser has no credential: none of this applies.
    let app = app_with_alpha("").await;
    let bearer = format!("Bearer {ALPHA}");
    let headers = [
        ("host", "api.example:443"),
        ("origin", "https://console.example"),
        ("authorization", bearer.as_str()),
    ];
    let (status, answer) = send(&app, "POST", cancel, &headers).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_says_nosniff_and_no_store() {
    let app = app_with(&format!("admin_token = \"{ADMIN}\""), "[tenants.alpha]", 0).await;
    let admin = format!("Bearer {ADMIN}");
    let admin = Some(admin.as_str());
    let requests = [
        ("GET", "/healthz", None),
        ("GET", "/openapi.json", None),
        ("GET", "/v1/modules", admin),
        ("GET", "/v1/modules", None),                // 401
        ("GET", "/v1/no-such-route", admin),         // 404
        ("PUT", "/v1/modules", admin),               // 405
        ("POST", "/v1/tenants/alpha/tokens", admin), // the minted token
        ("GET", "/v1/tenants/alpha/tokens", admin),
    ];
    for (method, uri, auth) in requests {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let (status, body, headers) = app.send(request.body(Body::empty()).unwrap()).await;
        if uri.ends_with("/tokens") && method == "POST" {
            assert_eq!(
                status,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        assert_eq!(
            headers[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{method} {uri} ({status})"
        );
        assert_eq!(
            headers[header::CACHE_CONTROL],
            "no-store",
            "{method} {uri} ({status})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_by_id_and_never_by_secret() {
    let app = app_with_alpha("").await;
    let (status, minted) = app
        .json("POST", "/v1/tenants/alpha/tokens", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let (status, list) = app
        .json("GET", "/v1/tenants/alpha/tokens", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["source"], "config");
    assert_eq!(list[1]["source"], "api");
    assert_eq!(list[1]["id"], minted["id"]);
    for token in list {
        assert!(token["created_at"].is_string(), "{token}");
        assert!(token["revoked_at"].is_null(), "{token}");
    }
    let text = serde_json::to_string(&list).unwrap();
    let secret = minted["token"].as_str().unwrap();
    for never in [
        ALPHA.to_string(),
        secret.to_string(),
        caisson_server::api::hash_token(ALPHA),
        caisson_server::api::hash_token(secret),
    ] {
        assert!(!text.contains(&never), "the listing shows {never}: {text}");
    }
    // Revoked tokens stay listed, with the time of revocation.
    let uri = format!("/v1/tokens/{}", minted["id"].as_str().unwrap());
    assert_eq!(
        app.json("DELETE", &uri, Some(ADMIN), None).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, list) = app
        .json("GET", "/v1/tenants/alpha/tokens", Some(ADMIN), None)
        .await;
    assert!(list[1]["revoked_at"].is_string(), "{list}");
    // Admin only, and an unknown tenant is a 404.
    let (status, _) = app
        .json("GET", "/v1/tenants/alpha/tokens", Some(ALPHA), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .json("GET", "/v1/tenants/nobody/tokens", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Submits a run of `hello` (which stays queued: the app has no worker)
/// and stores one log line for it, as a worker would.
async fn queued_run_with_a_log_line(app: &App, token: Option<&str>) -> String {
    let (status, module) = app.upload("hello", guest("hello"), token).await;
    assert!(status.is_success(), "{module}");
    let (status, run) = app
        .json("POST", "/v1/runs", token, Some(json!({"module": "hello"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let line = caisson_server::model::NewLogLine {
        time: caisson_server::now_ms(),
        level: caisson_host_api::log::Level::Info,
        source: caisson_server::model::LogSource::Task,
        message: "first line".into(),
    };
    app.state
        .services
        .db
        .append_logs(&id, 1, &[line])
        .await
        .unwrap();
    id
}

/// Opens `/v1/runs/{id}/logs?follow=true`.
async fn follow(app: &App, id: &str, token: Option<&str>) -> axum::response::Response {
    let mut request = Request::builder().uri(format!("/v1/runs/{id}/logs?follow=true"));
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    app.stream(request.body(Body::empty()).unwrap()).await
}

/// Reads a followed log until `until` holds for what came, or it ends
/// (within 20 s): its text.
async fn read_events(body: &mut Body, until: impl Fn(&str) -> bool) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !until(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.frame()).await {
            Ok(Some(frame)) => {
                if let Ok(data) = frame.unwrap().into_data() {
                    seen.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Ok(None) => return seen,
            Err(_) => panic!("the stream neither ended nor matched in 20s: {seen}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_its_open_log_stream() {
    let app = app_with(&format!("admin_token = \"{ADMIN}\""), "[tenants.alpha]", 0).await;
    let (_, minted) = app
        .json("POST", "/v1/tenants/alpha/tokens", Some(ADMIN), None)
        .await;
    let token = minted["token"].as_str().unwrap();
    let id = queued_run_with_a_log_line(&app, Some(token)).await;
    let response = follow(&app, &id, Some(token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    // The stream is live: it delivers the line.
    let seen = read_events(&mut body, |seen| seen.contains("first line")).await;
    assert!(seen.contains("event: log"), "{seen}");

    let uri = format!("/v1/tokens/{}", minted["id"].as_str().unwrap());
    assert_eq!(
        app.json("DELETE", &uri, Some(ADMIN), None).await.0,
        StatusCode::NO_CONTENT
    );
    let rest = read_events(&mut body, |_| false).await;
    assert!(rest.contains("event: error"), "{rest}");
    assert!(rest.contains("revoked"), "{rest}");
    assert!(!rest.contains("event: end"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_ends_a_followed_log_with_an_error_not_an_end() {
    let app = app_with_alpha("").await;
    let id = queued_run_with_a_log_line(&app, Some(ALPHA)).await;
    let response = follow(&app, &id, Some(ALPHA)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let seen = read_events(&mut body, |seen| seen.contains("first line")).await;
    assert!(seen.contains("event: log"), "{seen}");

    // The database goes away under the open stream: the follower must not
    // be told that the run ended (it is still queued), but that the
    // database is unavailable, so it can follow again later.
    app.state.services.db.close().await;
    let rest = read_events(&mut body, |_| false).await;
    assert!(rest.contains("event: error"), "{rest}");
    assert!(rest.contains("unavailable"), "{rest}");
    assert!(!rest.contains("event: end"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_log_streams_are_capped_per_tenant() {
    let app = app_with_alpha("max_log_streams = 2").await;
    let mine = queued_run_with_a_log_line(&app, Some(ALPHA)).await;
    let first = follow(&app, &mine, Some(ALPHA)).await;
    let second = follow(&app, &mine, Some(ALPHA)).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = follow(&app, &mine, Some(ALPHA)).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let answer: Value =
        serde_json::from_slice(&third.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(answer["error"]["code"], "too_many_streams", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_log_streams")
    );
    // Reading the log without following is not capped.
    let (status, _) = app
        .json("GET", &format!("/v1/runs/{mine}/logs"), Some(ALPHA), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // Another tenant has its own allowance.
    let theirs = queued_run_with_a_log_line(&app, Some(ADMIN)).await;
    assert_eq!(
        follow(&app, &theirs, Some(ADMIN)).await.status(),
        StatusCode::OK
    );
    // A stream the client drops gives its place back.
    drop(first);
    assert_eq!(
        follow(&app, &mine, Some(ALPHA)).await.status(),
        StatusCode::OK
    );
    drop(second);
}

/// Writes `caisson.toml` in `dir` for an embedded `serve` with
/// `server_extra` in its `[server]` table and `extra` after it, and starts it.
fn serve(dir: &Path, server_extra: &str, extra: &str, envs: &[(&str, &str)]) -> Served {
    write_embedded_config(dir, server_extra);
    let config = dir.join("caisson.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(extra);
    std::fs::write(&config, text).unwrap();
    Served::start(&config, dir, envs)
}

fn addr(served: &Served) -> String {
    served.url.strip_prefix("http://").unwrap().to_string()
}

/// Sends `request` on a new connection and reads until the server closes it.
fn raw(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// Reads from `stream` until the server closes it: what it sent, and when.
fn read_until_closed(stream: &mut TcpStream) -> (String, Instant) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                return (
                    String::from_utf8_lossy(&answer).into_owned(),
                    Instant::now(),
                );
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn slow_and_silent_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        "workers = 0\nheader_read_timeout = \"2s\"\nidle_timeout = \"300ms\"",
        "",
        &[],
    );
    let addr = addr(&server);

    // Slowloris: a request head, one byte every 100 ms, never finished.
    // Bytes keep coming, so it is never idle: the header timer cuts it.
    let mut slow = TcpStream::connect(&addr).unwrap();
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut sent = 0;
    for byte in head.iter().cycle().take(2000) {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
        // Once the server has closed its side, a read returns at once.
        slow.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 256];
        let closed = slow.read(&mut probe).is_ok();
        slow.set_nonblocking(false).unwrap();
        if closed {
            break;
        }
    }
    let cut = started.elapsed();
    assert!(
        cut >= Duration::from_secs(2),
        "cut after {cut:?}, before the header timeout"
    );
    assert!(
        cut < Duration::from_secs(60),
        "never cut off ({sent} bytes sent)"
    );
    assert!(sent > 15, "only {sent} bytes were sent: not a slow head");

    // A silent connection is closed once idle, before the header timer.
    let mut silent = TcpStream::connect(&addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let opened = Instant::now();
    let (answer, closed) = read_until_closed(&mut silent);
    assert!(answer.is_empty(), "{answer}");
    let idle = closed - opened;
    // Not to the millisecond: the server's timer starts when it accepts,
    // and tokio's timers tick in whole milliseconds (299.4 ms was seen).
    assert!(idle >= Duration::from_millis(250), "closed after {idle:?}");
    assert!(
        idle < Duration::from_secs(2),
        "closed after {idle:?}: by the header timer, not when idle"
    );

    // A prompt client is served, and may keep its connection between
    // requests sent closer together than the idle timeout.
    let mut client = TcpStream::connect(&addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for _ in 0..2 {
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = client.read(&mut buf).unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[test]
fn connections_over_the_limit_are_refused_with_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), "workers = 0\nmax_connections = 2", "", &[]);
    let addr = addr(&server);
    let healthz = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    assert!(raw(&addr, healthz).starts_with("HTTP/1.1 200"));

    // Two connections that stay open (idle, well within the 5 s default).
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // Wait until the server has accepted both: then a third is over.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = raw(&addr, healthz);
        if answer.starts_with("HTTP/1.1 503") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "a third connection was never refused: {answer}"
        );
    };
    let lower = refused.to_ascii_lowercase();
    assert!(lower.contains("retry-after:"), "{refused}");
    assert!(
        lower.contains("x-content-type-options: nosniff"),
        "{refused}"
    );
    assert!(
        refused.contains("too_many_connections") && refused.contains("max_connections"),
        "{refused}"
    );

    // Once one closes, new connections are served again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !raw(&addr, healthz).starts_with("HTTP/1.1 200") {
        assert!(
            Instant::now() < deadline,
            "never served again after connections closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn request_timeout_ends_slow_requests_but_not_log_streams_or_steady_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), "workers = 1\nrequest_timeout = \"1s\"", "", &[]);
    let addr = addr(&server);

    // A JSON body that stops coming: 408 after the request timeout.
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"module\": "
    )
    .unwrap();
    let (answer, _) = read_until_closed_or_answered(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // An upload whose body stops for longer than the timeout: 408.
    let wasm = std::fs::read(guest_path("hello")).unwrap();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /v1/modules?name=stalled HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/wasm\r\nContent-Length: {}\r\n\r\n",
        wasm.len()
    )
    .unwrap();
    stream.write_all(&wasm[..wasm.len() / 2]).unwrap();
    let (answer, _) = read_until_closed_or_answered(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // An upload that keeps coming, in pieces 400 ms apart, takes longer
    // than the timeout in all and is stored.
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /v1/modules?name=hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        wasm.len()
    )
    .unwrap();
    let started = Instant::now();
    for piece in wasm.chunks(wasm.len().div_ceil(5)) {
        std::thread::sleep(Duration::from_millis(400));
        stream.write_all(piece).unwrap();
    }
    let (answer, _) = read_until_closed(&mut stream);
    assert!(started.elapsed() > Duration::from_secs(1));
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    // A followed log outlives the timeout: a run of 2.5 s, followed to its end.
    push_guest("busy", &server.url);
    let out = cli(&["run", "submit", "busy", "-p", "ms=2500"], &server.url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let started = Instant::now();
    let out = cli(&["run", "logs", "-f", &id], &server.url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("succeeded"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the stream did not outlive the timeout"
    );
}

/// Reads until the server closes or has sent a whole small response.
fn read_until_closed_or_answered(stream: &mut TcpStream) -> (String, Instant) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        Instant::now(),
    )
}

/// `GET {url}{path}` with `token`: the status and the body.
async fn get(url: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{url}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_removed_from_the_config_are_revoked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = |tokens: &str| format!("\n[tenants.alpha]\ntokens = [{tokens}]\n");
    let server_extra = format!("workers = 0\nadmin_token = \"{ADMIN}\"");
    let kept = "http-kept-token";
    let both = tenants(&format!("\"{ALPHA}\", \"{kept}\""));
    let server = serve(dir.path(), &server_extra, &both, &[]);
    assert_eq!(get(&server.url, "/v1/runs", Some(ALPHA)).await.0, 200);
    drop(server);

    // The operator deletes ALPHA from the file and restarts.
    let only_kept = tenants(&format!("\"{kept}\""));
    let server = serve(
        dir.path(),
        &server_extra,
        &only_kept,
        &[("CAISSON_LOG", "info")],
    );
    let (status, _) = get(&server.url, "/v1/runs", Some(ALPHA)).await;
    assert_eq!(status, 401, "a token removed from the file still works");
    assert_eq!(get(&server.url, "/v1/runs", Some(kept)).await.0, 200);
    let (status, listed) = get(&server.url, "/v1/tenants/alpha/tokens", Some(ADMIN)).await;
    assert_eq!(status, 200, "{listed}");
    let list: Value = serde_json::from_str(&listed).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{listed}");
    assert!(list.iter().all(|t| t["source"] == "config"), "{listed}");
    let revoked = list.iter().filter(|t| t["revoked_at"].is_string()).count();
    assert_eq!(revoked, 1, "{listed}");
    for secret in [ALPHA, kept] {
        assert!(!listed.contains(secret), "{listed}");
        assert!(
            !listed.contains(&caisson_server::api::hash_token(secret)),
            "{listed}"
        );
    }
    assert!(
        server.output().contains("revoked 1 token"),
        "{}",
        server.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_read_from_the_environment_without_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = "http-env-admin-token";
    // No --config and no caisson.toml in the working directory: the
    // embedded default.
    let args = [
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--no-worker",
    ];
    let server = Served::start_args(&args, dir.path(), &[("CAISSON_ADMIN_TOKEN", token)]);
    // Not open: no token is a 401, the admin token is served.
    assert_eq!(get(&server.url, "/v1/runs", None).await.0, 401);
    assert_eq!(get(&server.url, "/v1/runs", Some(token)).await.0, 200);
    let created = reqwest::Client::new()
        .post(format!("{}/v1/tenants", server.url))
        .bearer_auth(token)
        .json(&json!({"name": "from-env"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(
        !server.output().contains("no API tokens"),
        "{}",
        server.output()
    );
}

#[test]
fn the_cli_escapes_what_a_task_prints_and_works_in_open_mode() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), "workers = 1", "", &[]);
    let url = server.url.clone();
    push_guest("hello", &url);

    // The input comes back in the output and in a log line: a window
    // title, a colour, a screen clear and a carriage return.
    let hostile = "\x1b]0;pwned\x07\x1b[31mred\x1b[2J\rX";
    let out = cli(
        &["run", "submit", "hello", "--input", hostile, "--wait"],
        &url,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\r'),
        "{stdout:?}"
    );
    assert!(
        stdout.contains("hello, \\x1b]0;pwned\\x07\\x1b[31mred\\x1b[2J\\x0dX"),
        "{stdout}"
    );

    let out = cli(&["run", "list", "--json"], &url);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = page["runs"][0]["id"].as_str().unwrap().to_string();
    let id = id.as_str();
    for args in [
        vec!["run", "logs", id],
        vec!["run", "logs", "-f", id],
        vec!["run", "get", id],
    ] {
        let out = cli(&args, &url);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("\\x1b]0;pwned\\x07"), "{args:?}: {stdout}");
        assert!(
            !stdout.contains('\x1b') && !stdout.contains('\r'),
            "{args:?}: {stdout:?}"
        );
    }
    // --json is for programs: JSON-escaped, the text intact.
    let out = cli(&["run", "get", id, "--json"], &url);
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["output"], format!("hello, {hostile}"));

    // Body-less POSTs from the CLI pass open mode's header rule...
    let out = cli(&["run", "cancel", id], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // ...which the same request without the CLI's header does not.
    let cancel = format!(
        "POST /v1/runs/{id}/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let answer = raw(&addr(&server), &cancel);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // And a rebound name is misdirected, over a real socket too.
    let rebound = "GET /v1/runs HTTP/1.1\r\nHost: evil.example:7070\r\nConnection: close\r\n\r\n";
    let answer = raw(&addr(&server), rebound);
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
}
