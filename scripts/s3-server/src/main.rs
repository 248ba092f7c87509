//! `caisson-test-s3`: the `s3s-fs` S3 server with `TCP_NODELAY` on every
//! accepted connection.
//!
//! ```text
//! caisson-test-s3 [--host H] [--port P] [--access-key K --secret-key S] ROOT
//! ```
//!
//! The same options as `s3s-fs`'s own binary (which `scripts/services`
//! used to run), minus virtual-hosted-style domains, which the tests do not
//! use. A bucket is a directory under `ROOT`.
//!
//! Why not `s3s-fs`'s binary: hyper writes a streamed response's headers
//! and its first body chunk as separate writes. Without `TCP_NODELAY`,
//! Nagle's algorithm holds the second small segment until the first is
//! acknowledged, and the client delays that ACK by up to 40 ms, so every
//! GET on a kept-alive connection waited ~34 ms. Benchmarks measured the
//! stall rather than Caisson. Real S3 sets no such trap on its clients.
//!
//! It also answers a listing without a delimiter itself, reading only what
//! the page returns, where `s3s-fs` walks the whole bucket for every page
//! (see `listing.rs`).

use std::process::ExitCode;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

mod listing;

const USAGE: &str =
    "usage: caisson-test-s3 [--host H] [--port P] [--access-key K --secret-key S] ROOT";

struct Options {
    host: String,
    port: u16,
    access_key: Option<String>,
    secret_key: Option<String>,
    root: String,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        host: "localhost".into(),
        port: 8014,
        access_key: None,
        secret_key: None,
        root: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--version" | "-V" => {
                // What scripts/services checks to decide whether to rebuild.
                println!(
                    "caisson-test-s3 {} (s3s-fs 0.14.1)",
                    env!("CARGO_PKG_VERSION")
                );
                std::process::exit(0);
            }
            "--host" => options.host = value("--host")?,
            "--port" => {
                let port = value("--port")?;
                options.port = port.parse().map_err(|_| format!("bad --port {port:?}"))?;
            }
            "--access-key" => options.access_key = Some(value("--access-key")?),
            "--secret-key" => options.secret_key = Some(value("--secret-key")?),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            root if options.root.is_empty() => options.root = root.to_owned(),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    if options.root.is_empty() {
        return Err("the root directory is missing".into());
    }
    if options.access_key.is_some() != options.secret_key.is_some() {
        return Err("--access-key and --secret-key go together".into());
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("caisson-test-s3: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_ansi(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("caisson-test-s3: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caisson-test-s3: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let store =
        listing::Store::new(&options.root).map_err(|e| format!("root {:?}: {e}", options.root))?;
    let mut builder = S3ServiceBuilder::new(store);
    if let (Some(access_key), Some(secret_key)) = (options.access_key, options.secret_key) {
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
    }
    let service = builder.build();

    let listener = TcpListener::bind((options.host.as_str(), options.port))
        .await
        .map_err(|e| format!("binding {}:{}: {e}", options.host, options.port))?;
    tracing::info!(
        "serving {} at http://{}",
        options.root,
        listener.local_addr()?
    );
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                // Out of file descriptors and the like: keep serving the
                // connections we have.
                Err(e) => {
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        // The point of this binary; see the module doc.
        if let Err(e) = socket.set_nodelay(true) {
            tracing::warn!("could not set TCP_NODELAY: {e}");
        }
        let connection = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}
