//! `caisson build-python`: a Python task directory to a task component.
//!
//! componentize-py does the compiling: it snapshots CPython with the task's
//! modules imported into a component. This command adds what it leaves to
//! the author: the Caisson SDK and WIT world (both built into this binary,
//! so they always match the host), the task's requirements resolved for the
//! guest's Python rather than the host's (markers included: see
//! `sdk/python/tools/guest_install.py`), optional pure-Python builds from
//! source, and a clear error when a requirement needs native code.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// The componentize-py release the SDK is written and tested against.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The CPython inside componentize-py 0.25 components: requirements are
/// resolved for it.
const GUEST_PYTHON: &str = "3.14";
/// componentize-py's entry module, generated; it imports the author's module
/// at build time so that module's imports land in the snapshot.
const ENTRY_MODULE: &str = "_caisson_entry";

const SDK: &[(&str, &str)] = &[
    (
        "caisson/__init__.py",
        include_str!("../../sdk/python/caisson/__init__.py"),
    ),
    (
        "caisson/_task.py",
        include_str!("../../sdk/python/caisson/_task.py"),
    ),
    (
        "caisson/_wit.py",
        include_str!("../../sdk/python/caisson/_wit.py"),
    ),
    (
        "caisson/dbapi.py",
        include_str!("../../sdk/python/caisson/dbapi.py"),
    ),
    (
        "caisson/errors.py",
        include_str!("../../sdk/python/caisson/errors.py"),
    ),
    (
        "caisson/log.py",
        include_str!("../../sdk/python/caisson/log.py"),
    ),
    (
        "caisson/map.py",
        include_str!("../../sdk/python/caisson/map.py"),
    ),
    (
        "caisson/objects.py",
        include_str!("../../sdk/python/caisson/objects.py"),
    ),
    (
        "caisson/params.py",
        include_str!("../../sdk/python/caisson/params.py"),
    ),
    (
        "caisson/sql.py",
        include_str!("../../sdk/python/caisson/sql.py"),
    ),
    (
        "caisson/sqlalchemy.py",
        include_str!("../../sdk/python/caisson/sqlalchemy.py"),
    ),
];

/// Resolves and installs the requirements for the guest, and builds the ones
/// asked for from source in a sandbox. Run with `--python`.
const GUEST_INSTALL: &str = include_str!("../../sdk/python/tools/guest_install.py");

const WIT: &[(&str, &str)] = &[
    ("caisson.wit", include_str!("../../wit/caisson.wit")),
    ("deps/io.wit", include_str!("../../wit/deps/io.wit")),
    ("deps/config.wit", include_str!("../../wit/deps/config.wit")),
    (
        "deps/logging.wit",
        include_str!("../../wit/deps/logging.wit"),
    ),
];

#[derive(clap::Args)]
pub struct BuildPythonArgs {
    /// The task directory: the task's module (`app.py`) and, optionally,
    /// `requirements.txt`. Everything in it is bundled.
    pub(crate) dir: PathBuf,
    /// Where to write the component.
    #[arg(long, short)]
    pub(crate) output: PathBuf,
    /// The module, in the task directory, that holds the `@task` function.
    #[arg(long, default_value = "app")]
    pub(crate) module: String,
    /// componentize-py (version 0.25.1).
    #[arg(
        long,
        env = "CAISSON_COMPONENTIZE_PY",
        default_value = "componentize-py"
    )]
    pub(crate) componentize_py: PathBuf,
    /// A Python 3 with pip, used to download the requirements (for the
    /// guest's Python, whatever this one's version).
    #[arg(long, env = "CAISSON_PYTHON", default_value = "python3")]
    pub(crate) python: PathBuf,
    /// A directory to build in. Installed requirements are kept there and
    /// reused while `requirements.txt` is unchanged. Default: a fresh
    /// temporary directory.
    #[arg(long)]
    pub(crate) build_dir: Option<PathBuf>,
    /// Build this requirement (a distribution name, e.g. `markupsafe`) from
    /// its source release, with C compilation disabled, for packages whose
    /// native part is optional. Repeatable; `# caisson: build-from-source`
    /// after a line of requirements.txt does the same. This runs the
    /// package's setup code on this machine, inside a sandbox (bubblewrap:
    /// no network, read-only file system but for its build directory).
    #[arg(long, value_name = "NAME")]
    pub(crate) build_from_source: Vec<String>,
}

pub fn build_python(args: BuildPythonArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = &args.dir;
    if !dir.join(format!("{}.py", args.module)).is_file()
        && !dir.join(&args.module).join("__init__.py").is_file()
    {
        bail!(
            "{} has no `{}.py`: the task directory needs the module with the `@task` \
             function (or name it with --module)",
            dir.display(),
            args.module
        );
    }
    for shadow in [
        "caisson.py",
        "caisson",
        "wit_world",
        "componentize_py_types.py",
    ] {
        if dir.join(shadow).exists() {
            bail!(
                "{} contains `{shadow}`, which would hide the SDK module of that name; rename it",
                dir.display()
            );
        }
    }
    check_componentize_py(&args.componentize_py)?;

    let temporary;
    let build = match &args.build_dir {
        Some(build) => build.clone(),
        None => {
            temporary = tempfile::tempdir().context("creating a build directory")?;
            temporary.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&build)
        .with_context(|| format!("creating the build directory {}", build.display()))?;
    let build = std::fs::canonicalize(&build)?;

    let deps = build.join("deps");
    let bundled = install_requirements(&args.python, dir, &build, &args.build_from_source)?;
    write_files(&build.join("sdk"), SDK)?;
    write_files(&build.join("wit"), WIT)?;
    write_files(
        &build.join("entry"),
        &[(
            &format!("{ENTRY_MODULE}.py"),
            &format!(
                "# Generated by `caisson build-python`.\n\
                 import {module}  # noqa: F401  (registers the @task function)\n\
                 from caisson._task import WitWorld  # noqa: F401\n",
                module = args.module
            ),
        )],
    )?;

    let mut command = Command::new(&args.componentize_py);
    // Inside a virtualenv componentize-py would also bundle that
    // environment's packages (componentize-py itself among them).
    command
        .env_remove("VIRTUAL_ENV")
        // Its Rust backtrace says nothing about the task; the Python
        // traceback above it does.
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .arg("-d")
        .arg(build.join("wit"))
        .args(["-w", "caisson:task/task", "componentize", ENTRY_MODULE])
        .arg("-p")
        .arg(build.join("entry"))
        .arg("-p")
        .arg(build.join("sdk"))
        .arg("-p")
        .arg(dir)
        .arg("-p")
        .arg(&deps)
        .arg("-o")
        .arg(&args.output);
    let output = run(&mut command, "componentize-py")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("ImportError") || stderr.contains("ModuleNotFoundError") {
            "\nhint: the task's modules are imported while building; an import error means a \
             module is missing from requirements.txt, or the installed version lacks that name"
        } else {
            ""
        };
        bail!(
            "componentize-py could not build the task:\n{}{hint}",
            stderr.trim_end()
        );
    }

    let bytes = std::fs::read(&args.output)
        .with_context(|| format!("reading {}", args.output.display()))?;
    let info = caisson_runtime::inspect(&bytes)?;
    if !info.exports.iter().any(|e| e == "run") {
        bail!("the built component does not export `run`; this is a bug in caisson build-python");
    }
    eprintln!(
        "built {} ({:.1} MB) in {:.1?}{}",
        args.output.display(),
        bytes.len() as f64 / 1e6,
        started.elapsed(),
        if bundled.is_empty() {
            String::new()
        } else {
            format!("; bundled {}", bundled.join(", "))
        }
    );
    Ok(())
}

fn check_componentize_py(program: &Path) -> anyhow::Result<()> {
    let output = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "could not run {} ({e}): install it with `pip install \
             componentize-py=={COMPONENTIZE_PY_VERSION}` (scripts/install-python-toolchain \
             does), or point --componentize-py / CAISSON_COMPONENTIZE_PY at it",
                program.display()
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.trim().rsplit(' ').next().unwrap_or("");
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    if minor(version) != minor(COMPONENTIZE_PY_VERSION) {
        bail!(
            "{} is version {version:?}; Caisson's Python SDK needs componentize-py \
             {COMPONENTIZE_PY_VERSION}",
            program.display()
        );
    }
    Ok(())
}

/// Installs `requirements.txt` into `build/deps` as pure-Python wheels for
/// the guest (`guest_install.py` does the work), and returns what got
/// bundled (`name version`).
fn install_requirements(
    python: &Path,
    dir: &Path,
    build: &Path,
    from_source: &[String],
) -> anyhow::Result<Vec<String>> {
    let deps = &build.join("deps");
    let requirements = dir.join("requirements.txt");
    let wanted = match std::fs::read(&requirements) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).context(format!("reading {}", requirements.display())),
    };
    if wanted.is_empty()
        && let Some(name) = from_source.first()
    {
        bail!("--build-from-source {name}: the task has no requirements.txt naming it");
    }
    let stamp = deps.join(".caisson-requirements");
    let mut hasher = Sha256::new()
        .chain_update(&wanted)
        .chain_update(GUEST_PYTHON)
        .chain_update(GUEST_INSTALL);
    for name in from_source {
        hasher.update(b"\0");
        hasher.update(name);
    }
    let fingerprint = hex::encode(hasher.finalize());
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(fingerprint.as_str()) {
        return distributions(deps);
    }
    if deps.exists() {
        std::fs::remove_dir_all(deps).with_context(|| format!("clearing {}", deps.display()))?;
    }
    std::fs::create_dir_all(deps)?;
    if !wanted.is_empty() {
        let tools = build.join("tools");
        write_files(&tools, &[("guest_install.py", GUEST_INSTALL)])?;
        let mut command = Command::new(python);
        command
            .arg(tools.join("guest_install.py"))
            .arg("install")
            .arg("--requirements")
            .arg(&requirements)
            .arg("--target")
            .arg(deps)
            .arg("--work")
            .arg(build.join("sources"));
        for name in from_source {
            command.arg("--from-source").arg(name);
        }
        let output = run(&mut command, "pip")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => {}
            // pip's own failure: say which package and why.
            Some(2) => bail!("{}", explain_pip_failure(&stderr)),
            _ => bail!(
                "could not install the requirements: {}",
                stderr.trim_end().trim_start_matches("error: ")
            ),
        }
        let native = native_files(deps)?;
        if let Some(file) = native.first() {
            bail!(
                "a requirement ships native code ({}), which cannot run inside a WASI \
                 component; only pure-Python packages can be bundled",
                file.strip_prefix(deps).unwrap_or(file).display()
            );
        }
    }
    std::fs::write(&stamp, &fingerprint)?;
    distributions(deps)
}

fn run(command: &mut Command, name: &str) -> anyhow::Result<Output> {
    command
        .output()
        .with_context(|| format!("could not run {name} ({:?})", command.get_program()))
}

/// Turns pip's "no matching distribution" into which package and why.
fn explain_pip_failure(stderr: &str) -> String {
    let missing: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.split("No matching distribution found for ").nth(1))
        .map(str::trim)
        .collect();
    if missing.is_empty() {
        return format!(
            "pip could not install the requirements:\n{}",
            stderr.trim_end()
        );
    }
    let names: Vec<String> = missing
        .iter()
        .map(|requirement| {
            let end = requirement
                .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.'))
                .unwrap_or(requirement.len());
            format!("`{}`", &requirement[..end])
        })
        .collect();
    format!(
        "{} {} no pure-Python wheel (py3-none-any) for Python {GUEST_PYTHON}: packages with \
         native extensions (C, C++, Rust or Fortran code, such as numpy and pandas) cannot \
         run inside a WASI component yet. If its native part is optional (a C speedup with \
         a pure-Python fallback), `--build-from-source NAME` builds it without. Otherwise \
         use a pure-Python alternative or do that step outside the task.\npip said:\n{}",
        names.join(", "),
        if names.len() == 1 { "has" } else { "have" },
        stderr.trim_end()
    )
}

fn native_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("so" | "pyd" | "dylib" | "dll")
            ) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `name version` of every distribution in `deps`, from its `.dist-info`.
fn distributions(deps: &Path) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(deps) else {
        return Ok(found);
    };
    for entry in entries {
        let name: OsString = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".dist-info")
            && let Some((package, version)) = stem.rsplit_once('-')
        {
            found.push(format!("{package} {version}"));
        }
    }
    found.sort();
    Ok(found)
}

fn write_files(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_failures_name_the_package() {
        let stderr = "ERROR: Could not find a version that satisfies the requirement \
                      numpy==2.1.0 (from versions: none)\n\
                      ERROR: No matching distribution found for numpy==2.1.0\n";
        let message = explain_pip_failure(stderr);
        assert!(
            message.starts_with("`numpy` has no pure-Python wheel"),
            "{message}"
        );
        assert!(message.contains("native extensions"), "{message}");
    }

    #[test]
    fn other_pip_failures_are_passed_through() {
        let message = explain_pip_failure("ERROR: Invalid requirement: '=='\n");
        assert!(message.contains("Invalid requirement"), "{message}");
    }
}
