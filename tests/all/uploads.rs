//! Bad uploads through the REST API of a real `caisson serve`: each is
//! refused with a status and a reason, none is stored, none crashes or
//! balloons the server, which then runs a good module as before.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use caisson_tests::{ServerToml, guest};

use crate::exhaustion::task_component_with;
use crate::server::Proc;

/// A component (`\0asm`, layer 1) holding one core module.
fn component_of_core_module(module: &[u8]) -> Vec<u8> {
    let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
    bytes.push(1); // core module section
    leb128(&mut bytes, module.len() as u64);
    bytes.extend_from_slice(module);
    bytes
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A 40-byte component whose one function declares 4,294,967,295 locals.
fn locals_bomb() -> Vec<u8> {
    let mut module = b"\0asm\x01\x00\x00\x00".to_vec();
    module.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]); // type: () -> ()
    module.extend_from_slice(&[3, 2, 1, 0]); // one function of type 0
    // One body: one local group of u32::MAX i32s, then `end`.
    let body = [1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x7f, 0x0b];
    module.extend_from_slice(&[10, body.len() as u8 + 2, 1, body.len() as u8]);
    module.extend_from_slice(&body);
    component_of_core_module(&module)
}

/// A core module whose type section claims 4,294,967,295 entries.
fn count_bomb() -> Vec<u8> {
    let mut module = b"\0asm\x01\x00\x00\x00".to_vec();
    module.extend_from_slice(&[1, 6, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x60]);
    component_of_core_module(&module)
}

/// Uploads `total` bytes of zeros as a module over a raw socket, streamed
/// from a generator (never held in memory), with a declared length or
/// chunked. Stops sending once the server answers or hangs up. Returns
/// the response's status, the response text and the bytes sent.
fn stream_upload(addr: &str, total: u64, chunked: bool) -> (u16, String, u64) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {total}")
    };
    write!(
        stream,
        "POST /v1/modules?name=huge HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/wasm\r\n{framing}\r\n\r\n"
    )
    .unwrap();
    let answered = Arc::new(AtomicBool::new(false));
    let reader = std::thread::spawn({
        let mut stream = stream.try_clone().unwrap();
        let answered = answered.clone();
        move || {
            stream
                .set_read_timeout(Some(Duration::from_secs(120)))
                .unwrap();
            let mut response = Vec::new();
            let mut buf = [0u8; 8192];
            // The whole answer is small; stop at its end or the hang-up.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                answered.store(true, Ordering::Relaxed);
                response.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&response).contains("}}") {
                    break;
                }
            }
            response
        }
    });
    let chunk = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    while sent < total && !answered.load(Ordering::Relaxed) {
        let n = chunk.len().min((total - sent) as usize);
        let written = if chunked {
            write!(stream, "{n:x}\r\n")
                .and_then(|()| stream.write_all(&chunk[..n]))
                .and_then(|()| stream.write_all(b"\r\n"))
        } else {
            stream.write_all(&chunk[..n])
        };
        if written.is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let response = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response after {sent} bytes: {response:?}"));
    (status, response, sent)
}

/// The peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("no VmHWM in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib << 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_the_server_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    // Default limits (max_module_bytes 256 MiB, engine max_memory 4 GiB),
    // as an operator would run it.
    ServerToml::sqlite_in(dir.path())
        .local_modules(&dir.path().join("modules"))
        .server("poll", "\"50ms\"")
        .write(dir.path());
    let server = Proc::start(&["serve"], dir.path());
    let url = server.url().to_string();
    let addr = url.strip_prefix("http://").unwrap().to_string();
    let pid = server.child.id();
    let http = reqwest::Client::new();
    let upload = |name: &'static str, bytes: Vec<u8>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let response = http
                .post(format!("{url}/v1/modules?name={name}"))
                .header("content-type", "application/wasm")
                .body(bytes)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    let mut random = vec![0u8; 64 << 10];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for b in random.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let hello = guest("hello");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("random bytes", random, "not a WebAssembly binary"),
        (
            "a truncated component",
            hello[..hello.len() / 3].to_vec(),
            "not a valid task component",
        ),
        (
            "a core module",
            wat::parse_str("(module (func (export \"run\")))").unwrap(),
            "core WebAssembly module, not a component",
        ),
        (
            "a WASI command component",
            wat::parse_str(
                r#"(component
                    (core module $m (func (export "run") (result i32) i32.const 0))
                    (core instance $i (instantiate $m))
                    (func $run (result (result)) (canon lift (core func $i "run")))
                    (instance $cli (export "run" (func $run)))
                    (export "wasi:cli/run@0.2.6" (instance $cli))
                )"#,
            )
            .unwrap(),
            "run",
        ),
        (
            "a component whose `run` has another type",
            wat::parse_str(
                r#"(component
                    (core module $m (func (export "run") (param i32) (result i32) local.get 0))
                    (core instance $i (instantiate $m))
                    (func $run (param "x" u32) (result u32) (canon lift (core func $i "run")))
                    (export "run" (func $run))
                )"#,
            )
            .unwrap(),
            "run",
        ),
        ("4 billion locals", locals_bomb(), "locals"),
        (
            "4 billion types",
            count_bomb(),
            "not a valid task component",
        ),
        (
            "a 1 TiB memory",
            task_component_with("(memory i64 16777216)"),
            "exceeds the limit",
        ),
        (
            "a table of 100 million elements",
            task_component_with("(table 100000000 funcref)"),
            "exceeds the limit",
        ),
    ];
    for (what, bytes, expect) in cases {
        let size = bytes.len();
        let (status, body) = upload("bad", bytes).await;
        // Any bytes fit the `application/wasm` body the schema describes,
        // so a refusal is 422 (well formed, not a component), not 400.
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unprocessable", "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expect), "{what}: {message}");
        eprintln!("{what} ({size} bytes): 422 {message}");
    }

    // 2 GiB, streamed: cut off at the limit (chunked) or before reading a
    // byte (declared length), never buffered whole.
    let total = 2u64 << 30;
    let limit = 256u64 << 20;
    for chunked in [false, true] {
        let addr = addr.clone();
        let (status, response, sent) =
            tokio::task::spawn_blocking(move || stream_upload(&addr, total, chunked))
                .await
                .unwrap();
        assert_eq!(status, 413, "chunked {chunked}: {response}");
        assert!(response.contains("upload limit"), "{response}");
        assert!(sent < total, "the server read all {sent} bytes");
        eprintln!(
            "2 GiB upload ({}): 413 after {} MiB sent",
            if chunked { "chunked" } else { "Content-Length" },
            sent >> 20
        );
    }
    let peak = peak_rss(pid);
    eprintln!("caisson serve peak RSS (VmHWM): {} MiB", peak >> 20);
    assert!(
        peak < limit + (512 << 20),
        "the server's peak RSS was {} MiB",
        peak >> 20
    );

    // Nothing was stored, and the server still takes and runs a module.
    let modules: Value = http
        .get(format!("{url}/v1/modules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(modules, json!([]));
    let (status, body) = upload("hello", hello).await;
    assert_eq!(status, 201, "{body}");
    let run: Value = http
        .post(format!("{url}/v1/runs"))
        .json(&json!({"module": "hello", "input": "still here"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap();
    for _ in 0..600 {
        let run: Value = http
            .get(format!("{url}/v1/runs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["state"] == "succeeded" {
            assert_eq!(run["output"], "hello, still here");
            return;
        }
        assert!(
            matches!(run["state"].as_str(), Some("queued" | "running")),
            "{run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the run after the bad uploads did not finish");
}
