//! The web dashboard, served at `/ui/` on the API's own port.
//!
//! The dashboard is plain ES modules and CSS (`ui/` at the repository's
//! root), embedded in the binary by `build.rs`, so running it needs nothing
//! but `caisson`. It is a client of the public REST API and nothing else:
//! these routes serve static files only, and hold no secret.
//!
//! Every file is sent gzip-compressed when the browser accepts it, and with
//! headers that make the pages safe by construction: a Content-Security-
//! Policy that allows scripts, styles and requests from this origin only
//! (no inline script, no `eval`) and requires Trusted Types, so that an
//! `innerHTML` assignment with a string throws instead of parsing data as
//! HTML; no framing; no referrer.
//!
//! `CAISSON_UI_DIR` serves the same file names from a directory instead of
//! the embedded copies, so that work on the dashboard needs no rebuild.

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;

/// `(path under ui/, content type, bytes)` for every served file.
static FILES: &[(&str, &str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/ui_files.rs"));

/// Where the dashboard lives.
pub const PATH: &str = "/ui/";

/// The policy for every dashboard response. `connect-src 'self'` lets the
/// pages call the API (and follow logs) on this origin only;
/// `form-action 'none'` means a form the scripts failed to intercept cannot
/// send a pasted token anywhere; `trusted-types 'none'` leaves no way to
/// turn a string into HTML.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

/// The embedded file at `name` (a path under `ui/`), if there is one.
pub fn embedded(name: &str) -> Option<(&'static str, &'static [u8])> {
    FILES
        .iter()
        .find(|(path, _, _)| *path == name)
        .map(|(_, kind, bytes)| (*kind, *bytes))
}

fn dev_dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("CAISSON_UI_DIR").map(PathBuf::from))
        .as_ref()
}

async fn file(name: &str) -> Response {
    let Some((kind, bytes)) = embedded(name) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    // Only names of embedded files are read from the directory, so a
    // request path never reaches the file system.
    if let Some(dir) = dev_dir() {
        return match tokio::fs::read(dir.join(name)).await {
            Ok(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
            Err(e) => {
                tracing::warn!("CAISSON_UI_DIR: could not read {name}: {e}");
                (StatusCode::NOT_FOUND, "not found").into_response()
            }
        };
    }
    ([(header::CONTENT_TYPE, kind)], bytes).into_response()
}

/// The dashboard's routes: `/ui` (redirected to `/ui/`), `/ui/` (the page)
/// and `/ui/<file>`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let headers: [(HeaderName, &'static str); 6] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
    ];
    let mut router = Router::new()
        .route("/ui", get(|| async { Redirect::permanent(PATH) }))
        .route("/ui/", get(|| file("index.html")))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>| async move { file(&path).await }),
        )
        // Gzip only: it is what every browser accepts, and brotli would add
        // a second, larger compressor for a few percent.
        .layer(CompressionLayer::new().gzip(true));
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
}
