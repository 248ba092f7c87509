//! Embeds the dashboard (`ui/` at the repository's root) in the binary,
//! and rebuilds the crate when a migration is added.
//!
//! The dashboard is plain ES modules and CSS with no build step, so the
//! files under `ui/` are what the browser gets: this script only lists them
//! (every file with a type [`content_type`] knows) as `include_bytes!`
//! entries in `$OUT_DIR/ui_files.rs`, which `src/ui.rs` includes. A file
//! added, changed or removed under `ui/` rebuilds the list, so the served
//! copy can never be out of date with its source.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The `Content-Type` of a dashboard file, by extension; `None` for files
/// that are not served (notes, editor leftovers).
fn content_type(path: &Path) -> Option<&'static str> {
    Some(match path.extension()?.to_str()? {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => return None,
    })
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, files)?;
        } else if content_type(&path).is_some() {
            files.push(path);
        }
    }
    Ok(())
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ui = manifest.join("../ui");
    // A directory makes cargo rerun this script when anything under it
    // changes.
    println!("cargo::rerun-if-changed={}", ui.display());
    // `sqlx::migrate!` embeds `migrations/` when the crate compiles, and a
    // new migration is a new file, which cargo does not watch by itself:
    // without this a build could keep the last build's list (sqlx's own
    // advice).
    println!(
        "cargo::rerun-if-changed={}",
        manifest.join("migrations").display()
    );
    let mut files = Vec::new();
    if let Err(e) = walk(&ui, &mut files) {
        panic!(
            "could not list the dashboard's files in {}: {e}",
            ui.display()
        );
    }
    files.sort();
    let mut out = String::from("&[\n");
    for file in &files {
        let name = file
            .strip_prefix(&ui)
            .expect("under ui/")
            .to_str()
            .expect("dashboard file names are UTF-8")
            .replace('\\', "/");
        let kind = content_type(file).expect("listed files have a type");
        let absolute = file.canonicalize().expect("a listed file exists");
        writeln!(
            out,
            "    ({name:?}, {kind:?}, include_bytes!({:?}) as &[u8]),",
            absolute.display().to_string()
        )
        .expect("writing to a String");
    }
    out.push(']');
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("ui_files.rs");
    std::fs::write(&dest, out).expect("could not write the dashboard's file list");
}
