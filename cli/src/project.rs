//! Task projects: `caisson new` writes one from a template, `caisson build`
//! turns one into a checked component, and `caisson run DIR` rebuilds it
//! when its sources changed.
//!
//! A project is a directory with either a `Cargo.toml` (a Rust `cdylib`)
//! or an `app.py` (a Python task). Its component goes to
//! `target/caisson/NAME.wasm` inside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};

/// The SDKs in the checkout this binary was built from: `caisson new`
/// points new projects at them, after checking they are still there.
const RUST_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/rust");
const PYTHON_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/python");
/// The Python toolchain `scripts/install-python-toolchain` installs in that
/// checkout, used when neither the environment nor `PATH` names one.
const PYTHON_TOOLCHAIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tools/python/bin");

/// Where Debian's rustc-web looks for the wasi libc:
/// `scripts/install-guest-toolchain` links it there.
const DEBIAN_WASI_LIBC: &str = "/usr/lib/rustlib/wasm32-wasip2/lib/self-contained";

/// Directory entries that are not a task's sources: not bundled into a
/// Python component, and not looked at to decide whether to rebuild.
const NOT_SOURCES: &[&str] = &["target", "tests", "data", "__pycache__"];

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// The project directory to create; its last component names the task.
    name: PathBuf,
    /// The task's language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// The Caisson SDK to depend on: the SDK's directory (`sdk/rust` or
    /// `sdk/python`) or a Caisson checkout. Default: the SDK this `caisson`
    /// was built from.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The task project: a Rust crate (`Cargo.toml`) or a Python task (`app.py`).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where to write the component. Default: `DIR/target/caisson/NAME.wasm`.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// A template file: its path in the new project and its text.
type Template = (&'static str, &'static str);

const SAMPLE_DATA: &[Template] = &[
    (
        "data/sales/2026-01.csv",
        include_str!("../templates/data/sales/2026-01.csv"),
    ),
    (
        "data/sales/2026-02.csv",
        include_str!("../templates/data/sales/2026-02.csv"),
    ),
];

const RUST_TEMPLATE: &[Template] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    (
        "caisson.toml",
        include_str!("../templates/rust/caisson.toml"),
    ),
    ("README.md", include_str!("../templates/rust/README.md")),
    (".gitignore", include_str!("../templates/rust/gitignore")),
    (
        ".cargo/config.toml",
        include_str!("../templates/rust/cargo/config.toml"),
    ),
];

const PYTHON_TEMPLATE: &[Template] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    (
        "tests/test_app.py",
        include_str!("../templates/python/tests/test_app.py"),
    ),
    (
        "tests/conftest.py",
        include_str!("../templates/python/tests/conftest.py"),
    ),
    (
        "caisson.toml",
        include_str!("../templates/python/caisson.toml"),
    ),
    ("README.md", include_str!("../templates/python/README.md")),
    (".gitignore", include_str!("../templates/python/gitignore")),
];

pub fn new(args: NewArgs) -> anyhow::Result<()> {
    let dir = &args.name;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the project needs a name, e.g. `caisson new sales-report`")?;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` is not a task name: use lower-case letters, digits, `-` and `_`, \
             starting with a letter"
        );
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} already exists and is not empty; pick another name",
            dir.display()
        );
    }
    let (template, sdk) = match args.lang {
        Lang::Rust => (RUST_TEMPLATE, rust_sdk(args.sdk.as_deref())?),
        Lang::Python => (PYTHON_TEMPLATE, python_sdk(args.sdk.as_deref())?),
    };
    let sdk_text = sdk
        .to_str()
        .with_context(|| format!("the SDK path {} is not UTF-8", sdk.display()))?;
    // The path as a TOML string and as a Python string literal (JSON's
    // escapes are valid in both).
    let sdk_quoted = serde_json::to_string(sdk_text)?;
    for (path, text) in template.iter().chain(SAMPLE_DATA) {
        let text = text
            .replace("{{name}}", name)
            .replace("{{sdk_quoted}}", &sdk_quoted)
            .replace("{{sdk}}", sdk_text);
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(dir.as_path()))
            .with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let (lang, test) = match args.lang {
        Lang::Rust => ("Rust", "cargo test"),
        Lang::Python => ("Python", "python3 -m pytest"),
    };
    println!(
        "created the {lang} task `{name}` in {} (SDK: {})",
        dir.display(),
        sdk.display()
    );
    println!("next:");
    println!("  cd {}", dir.display());
    println!("  caisson build    # build and check the component");
    println!("  caisson run .    # run it on the sample data in ./data");
    println!("  {test:<16} # test the task's logic");
    Ok(())
}

/// The Rust SDK to depend on: `--sdk` (the SDK or a checkout) or the one
/// this binary was built from, checked to be a `caisson-sdk` crate.
fn rust_sdk(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let is_sdk = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|text| text.contains("name = \"caisson-sdk\""))
    };
    find_sdk(given, RUST_SDK, "sdk/rust", is_sdk)
}

/// The Python SDK (the directory holding the `caisson` package).
fn python_sdk(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let is_sdk = |dir: &Path| dir.join("caisson/__init__.py").is_file();
    find_sdk(given, PYTHON_SDK, "sdk/python", is_sdk)
}

fn find_sdk(
    given: Option<&Path>,
    built_from: &str,
    in_checkout: &str,
    is_sdk: impl Fn(&Path) -> bool,
) -> anyhow::Result<PathBuf> {
    let found = match given {
        Some(path) => [path.to_path_buf(), path.join(in_checkout)]
            .into_iter()
            .find(|dir| is_sdk(dir.as_path()))
            .with_context(|| {
                format!(
                    "--sdk {}: neither it nor its {in_checkout} is a Caisson SDK",
                    path.display()
                )
            })?,
        None => {
            let path = PathBuf::from(built_from);
            if !is_sdk(path.as_path()) {
                bail!(
                    "the Caisson SDK this `caisson` was built from is no longer at {}: pass \
                     --sdk PATH, the {in_checkout} directory of a Caisson checkout",
                    path.display()
                );
            }
            path
        }
    };
    std::fs::canonicalize(&found).with_context(|| format!("resolving {}", found.display()))
}

/// What kind of task a project directory holds.
enum Project {
    /// A Rust crate; `name` is its package name.
    Rust {
        name: String,
    },
    Python {
        name: String,
    },
}

impl Project {
    fn detect(dir: &Path) -> anyhow::Result<Project> {
        let manifest = dir.join("Cargo.toml");
        if manifest.is_file() {
            return rust_package(&manifest).map(|name| Project::Rust { name });
        }
        if dir.join("app.py").is_file() {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("task")
                .to_string();
            return Ok(Project::Python { name });
        }
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        bail!(
            "{} has neither a Cargo.toml (a Rust task) nor an app.py (a Python task): \
             `caisson new NAME` starts a task project",
            dir.display()
        )
    }

    fn name(&self) -> &str {
        match self {
            Project::Rust { name } | Project::Python { name } => name,
        }
    }

    fn component(&self, dir: &Path) -> PathBuf {
        dir.join("target/caisson")
            .join(format!("{}.wasm", self.name()))
    }
}

/// The package name of the crate at `manifest`, if it builds a `cdylib`.
fn rust_package(manifest: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let Some(name) = table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
    else {
        bail!(
            "{}: no `[package] name`; point caisson build at the task crate's own directory, \
             not a workspace",
            manifest.display()
        );
    };
    let cdylib = table
        .get("lib")
        .and_then(|lib| lib.get("crate-type"))
        .and_then(|types| types.as_array())
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
    if !cdylib {
        bail!(
            "{}: `{name}` is not a cdylib, so it cannot build a task component. Add:\n\n\
             [lib]\ncrate-type = [\"cdylib\"]",
            manifest.display()
        );
    }
    Ok(name.to_string())
}

/// `caisson build`: builds, then checks and describes the component.
pub async fn build(args: BuildArgs) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("{} does not exist", args.dir.display()))?;
    let output = match &args.output {
        Some(path) => Some(std::path::absolute(path)?),
        None => None,
    };
    let project = Project::detect(&dir)?;
    let output = output.unwrap_or_else(|| project.component(&dir));
    let started = Instant::now();
    let rust = matches!(project, Project::Rust { .. });
    let built = {
        let (dir, output) = (dir.clone(), output.clone());
        tokio::task::spawn_blocking(move || compile(&project, &dir, &output)).await??
    };
    if rust {
        // (`build-python` says this itself for a Python task.)
        eprintln!(
            "built {} in {:.1?}",
            relative(&built, &dir).display(),
            started.elapsed()
        );
    }
    // Checked with the project's own configuration, as `caisson run .`
    // will run it: relative paths in it are the project's.
    std::env::set_current_dir(&dir).with_context(|| format!("entering {}", dir.display()))?;
    crate::inspect(&built, None).await
}

/// The project's component, built first if it is missing or older than
/// any of its sources.
pub async fn ensure_built(dir: &Path) -> anyhow::Result<PathBuf> {
    let project = Project::detect(dir)?;
    let component = project.component(dir);
    let built_at = std::fs::metadata(&component)
        .and_then(|m| m.modified())
        .ok();
    let newest = newest_source(dir)?;
    if built_at.is_some_and(|built| newest.is_none_or(|source| source <= built)) {
        return Ok(component);
    }
    eprintln!(
        "caisson: {}; building",
        if built_at.is_some() {
            "sources changed"
        } else {
            "not built yet"
        }
    );
    let started = Instant::now();
    let (dir, out) = (dir.to_path_buf(), component.clone());
    let built = tokio::task::spawn_blocking(move || compile(&project, &dir, &out)).await??;
    eprintln!("caisson: built in {:.1?}", started.elapsed());
    Ok(built)
}

fn compile(project: &Project, dir: &Path, output: &Path) -> anyhow::Result<PathBuf> {
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match project {
        Project::Rust { name } => build_rust(dir, name, output)?,
        Project::Python { .. } => build_python(dir, output)?,
    }
    Ok(output.to_path_buf())
}

/// How this machine builds wasm32-wasip2.
enum Toolchain {
    /// rustup's `wasm32-wasip2` target.
    Rustup,
    /// Debian's `rustc-web`, building std from source
    /// (`scripts/install-guest-toolchain`).
    Debian,
}

fn rust_toolchain() -> anyhow::Result<Toolchain> {
    let rustup = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stderr(Stdio::null())
        .output();
    if let Ok(out) = rustup
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == "wasm32-wasip2")
    {
        return Ok(Toolchain::Rustup);
    }
    if Path::new(DEBIAN_WASI_LIBC).exists() && Path::new("/usr/bin/cargo").exists() {
        return Ok(Toolchain::Debian);
    }
    bail!(
        "no Rust toolchain for wasm32-wasip2 on this machine. Install one:\n  \
         rustup target add wasm32-wasip2\n\
         or, where rustup's servers are out of reach (Debian 12 and later), Debian's \
         rustc-web, as a Caisson checkout's scripts/install-guest-toolchain does:\n  \
         apt-get install rustc-web cargo-web rust-web-src lld-19 wasi-libc\n  \
         mkdir -p /usr/lib/rustlib/wasm32-wasip2/lib\n  \
         ln -sfn /usr/lib/wasm32-wasi {DEBIAN_WASI_LIBC}"
    )
}

fn build_rust(dir: &Path, name: &str, output: &Path) -> anyhow::Result<()> {
    let manifest = dir.join("Cargo.toml");
    let mut command = match rust_toolchain()? {
        Toolchain::Rustup => Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into())),
        Toolchain::Debian => {
            eprintln!(
                "caisson: building with Debian's rustc-web; std is built from source, so the \
                 first build takes minutes"
            );
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![PathBuf::from("/usr/lib/llvm-19/bin")];
            paths.extend(std::env::split_paths(&path));
            let mut command = Command::new("/usr/bin/cargo");
            command
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTDOC", "/usr/bin/rustdoc")
                .env("RUSTC_BOOTSTRAP", "1")
                .env("PATH", std::env::join_paths(paths)?)
                .arg("-Zbuild-std=std,panic_abort");
            command
        }
    };
    // The release profile is the project's own: `caisson new` writes the
    // one this repository's guests use (opt-level 3, LTO, one codegen unit),
    // and its `.cargo/config.toml` the flags, which cargo finds from the
    // directory it runs in (`dir` is absolute: `build` resolved it).
    command
        .current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = command
        .spawn()
        .with_context(|| format!("could not run {:?}", command.get_program()))?
        .wait_with_output()?;
    if !out.status.success() {
        bail!("cargo could not build {name} (its errors are above)");
    }
    // The artifact's path from cargo's own report, wherever the target
    // directory is (`CARGO_TARGET_DIR` included).
    let wasm = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact"
                && Path::new(message["manifest_path"].as_str().unwrap_or_default()) == manifest
                && message["target"]["kind"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .with_context(|| format!("cargo built {name} but reported no .wasm file"))?;
    std::fs::copy(&wasm, output)
        .with_context(|| format!("copying {} to {}", wasm.display(), output.display()))?;
    Ok(())
}

fn build_python(dir: &Path, output: &Path) -> anyhow::Result<()> {
    // Only the task's modules go into the component: not its tests, sample
    // data or build outputs.
    let work = dir.join("target/caisson");
    let sources = work.join("src");
    if sources.exists() {
        std::fs::remove_dir_all(&sources)
            .with_context(|| format!("clearing {}", sources.display()))?;
    }
    for file in source_files(dir)? {
        let to = sources.join(file.strip_prefix(dir)?);
        std::fs::create_dir_all(to.parent().unwrap_or(&sources))?;
        std::fs::copy(&file, &to).with_context(|| format!("copying {}", file.display()))?;
    }
    let tool = |var: &str, name: &str| -> PathBuf {
        if let Some(path) = std::env::var_os(var) {
            return path.into();
        }
        let installed = Path::new(PYTHON_TOOLCHAIN).join(name);
        let on_path = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !on_path && installed.exists() {
            installed
        } else {
            name.into()
        }
    };
    crate::pybuild::build_python(crate::pybuild::BuildPythonArgs {
        dir: sources,
        output: output.to_path_buf(),
        module: "app".into(),
        componentize_py: tool("CAISSON_COMPONENTIZE_PY", "componentize-py"),
        python: tool("CAISSON_PYTHON", "python3"),
        build_dir: Some(work.join("python")),
        build_from_source: Vec::new(),
    })
}

/// The project's source files: everything but [`NOT_SOURCES`] and
/// dot-files, at any depth.
fn source_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).with_context(|| format!("reading {}", at.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || NOT_SOURCES.contains(&name.as_ref()) {
                continue;
            }
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

fn newest_source(dir: &Path) -> anyhow::Result<Option<SystemTime>> {
    let mut newest = None;
    for file in source_files(dir)? {
        let modified = std::fs::metadata(&file)?.modified()?;
        newest = newest.max(Some(modified));
    }
    Ok(newest)
}

fn relative<'a>(path: &'a Path, dir: &Path) -> &'a Path {
    path.strip_prefix(dir).unwrap_or(path)
}
