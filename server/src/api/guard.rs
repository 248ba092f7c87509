//! Middleware that guards every request before a handler sees it: open
//! mode's defences against web pages, and the request timeout.
//!
//! **Open mode** (no tokens configured, loopback only) has no credential
//! for a browser to lack, so a web page the operator visits could reach the
//! API: by DNS rebinding (a name of the page's that resolves to 127.0.0.1,
//! so the browser sends `Host: evil.example`), or by a cross-site "simple"
//! request (a form post, a body-less `fetch`, a raw upload with no
//! content type) that a browser sends without asking first. So, in open
//! mode only:
//!
//! - the `Host` must be a loopback name (`localhost`, `127.0.0.0/8`,
//!   `[::1]`, with or without a port), else 421;
//! - an `Origin`, if any, must be a loopback origin, else 403;
//! - a request that changes state (any method but GET, HEAD, OPTIONS)
//!   must carry `X-Caisson-Client` or a content type a form cannot send
//!   (such as `application/json` or `application/wasm`), else 403. A page
//!   can set neither without a CORS preflight, which this API never grants.
//!
//! With tokens, a browser has no token to send, so none of this applies.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;

/// The header the `caisson` CLI sends on every request; any value will do.
pub const CLIENT_HEADER: &str = "x-caisson-client";

/// Refuses, in open mode, what a web page could send. See the module docs.
pub(crate) async fn open_mode(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.services.config.open_access()
        && let Err(refusal) =
            check_local_request(request.method(), request.uri(), request.headers())
    {
        return refusal.into_response();
    }
    next.run(request).await
}

/// The open-mode checks, on a request's method, URI and headers.
pub fn check_local_request(
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    // HTTP/1.1 carries the target in `Host`; an absolute-form request line
    // (or HTTP/2) in the URI's authority. A request with neither did not
    // come from a browser, which always sends one.
    let host = headers
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .or_else(|| uri.authority().map(|a| a.as_str()));
    if let Some(host) = host
        && !is_loopback_host(host)
    {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            format!(
                "this server has no API tokens, so it answers only requests addressed to \
                 localhost, 127.0.0.1 or [::1], not to {}: configure tokens to serve other names",
                quote(host)
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("\u{fffd}");
        if !is_loopback_origin(origin) {
            return Err(ApiError::forbidden(format!(
                "this server has no API tokens, so it refuses requests from web pages of other \
                 sites (Origin {})",
                quote(origin)
            )));
        }
    }
    let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state && !headers.contains_key(CLIENT_HEADER) && !non_simple_content_type(headers) {
        return Err(ApiError::forbidden(
            "this server has no API tokens, so a request that changes something must carry an \
             `X-Caisson-Client` header or a JSON (or other non-form) content type, which web \
             pages cannot send unasked; the caisson CLI sends it",
        ));
    }
    Ok(())
}

/// Whether `host` (a `Host` value: a name or address, maybe a port) is a
/// loopback name.
fn is_loopback_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        return port.is_none_or(valid_port)
            && address.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    port.is_none_or(valid_port) && is_loopback_name(name)
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
}

/// `localhost` or a loopback IPv4 address (`127.0.0.0/8`), the forms a
/// browser puts in `Host`.
fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|a| a.is_ipv4() && a.is_loopback())
}

/// Whether `origin` is `http(s)://` a loopback host, any port. `null`
/// (sandboxed frames, `file:` pages) is not.
fn is_loopback_origin(origin: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

/// Whether the request's content type is one a cross-site form or a
/// simple `fetch` cannot send without a CORS preflight: present, and not
/// `application/x-www-form-urlencoded`, `multipart/form-data` or
/// `text/plain` (the CORS-safelisted ones).
fn non_simple_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        // Bytes a browser would not send as a content type.
        return true;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    !essence.is_empty()
        && ![
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "text/plain",
        ]
        .iter()
        .any(|simple| essence.eq_ignore_ascii_case(simple))
}

/// A client-sent value, quoted and shortened for an error message.
fn quote(value: &str) -> String {
    let short: String = value.chars().take(100).collect();
    format!("{short:?}")
}

/// Ends a request that takes longer than `[server] request_timeout` to
/// produce its response, with a 408. Once a response has started, its
/// body is not timed: a followed log or a large output download streams
/// as long as it needs. A module upload is exempt here because its body
/// may be large; its handler bounds each wait for the next piece instead.
pub(crate) async fn request_timeout(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let limit = state.services.config.server.request_timeout;
    if *request.method() == Method::POST && request.uri().path() == "/v1/modules" {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => timed_out(limit).into_response(),
    }
}

/// The 408 for a request (or a piece of an upload's body) that took longer
/// than `limit`.
pub(crate) fn timed_out(limit: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request took longer than {} (`[server] request_timeout`)",
            humantime::format_duration(limit)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_apart_from_others() {
        for host in [
            "localhost",
            "LOCALHOST:7070",
            "127.0.0.1",
            "127.0.0.1:7070",
            "127.8.9.10:1",
            "[::1]",
            "[::1]:7070",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:7070",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "localhost:",
            "localhost:99999",
            "localhost:80:80",
            "10.0.0.1:7070",
            "0.0.0.0",
            "[::ffff:127.0.0.1]",
            "[::1",
            "[::1]x",
            "[fe80::1]:7070",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn loopback_origins_are_told_apart_from_others() {
        for origin in [
            "http://localhost:3000",
            "http://127.0.0.1:7070",
            "https://[::1]",
        ] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "null",
            "http://evil.example",
            "http://localhost.evil.example",
            "file:///tmp/page.html",
            "chrome-extension://abc",
            "",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }

    #[test]
    fn form_content_types_are_simple_and_others_are_not() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            headers
        };
        assert!(!non_simple_content_type(&HeaderMap::new()));
        for simple in [
            "text/plain",
            "text/plain; charset=utf-8",
            "Multipart/Form-Data; boundary=x",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!non_simple_content_type(&with(simple)), "{simple}");
        }
        for other in ["application/json", "application/wasm"] {
            assert!(non_simple_content_type(&with(other)), "{other}");
        }
    }
}
