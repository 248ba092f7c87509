"""Installs a Python task's requirements for the guest, not for the host.

`caisson build-python` runs this with the toolchain's Python (3.11 or later,
with pip); it is not part of the SDK a task imports.

    guest_install.py environment
        Prints the marker environment of the guest, as JSON.
    guest_install.py install --requirements FILE --target DIR --work DIR
                             [--from-source NAME]...
        Installs FILE's requirements into DIR as pure-Python wheels.

Two things differ from a plain `pip install --target`:

* **Markers are evaluated for the guest.** pip's `--platform`,
  `--python-version` and `--implementation` pick wheel tags, but pip still
  evaluates environment markers (`platform_machine == "x86_64"`,
  `python_version < "3.13"`) against the Python running pip. So SQLAlchemy
  asked for `greenlet` because the *build* machine is x86_64. pip has no
  option for a foreign marker environment, so this script replaces
  `default_environment()` in pip's vendored `packaging.markers`, which every
  marker evaluation in pip goes through, with the guest's (uv's
  `--python-platform` knows no WASI target, and a resolver of our own would
  be far more code than this one function).

* **Pure fallbacks built from source, on request.** A requirement marked
  `# caisson: build-from-source` in requirements.txt, or named with
  `--from-source`, is built from its sdist into a wheel, with C compilation
  failing on purpose (`CC=/bin/false`), so packages whose C part is
  optional (MarkupSafe, PyYAML) fall back to pure Python. Building runs the
  package's own setup code on the build machine, so:
    - the sdist is fetched by this script from the index's JSON API and its
      sha256 checked; pip never prepares it (that would run its setup code
      outside the sandbox);
    - the build dependencies are installed as wheels only (no code runs);
    - the build itself runs under bubblewrap with no network, the system's
      programs and libraries read-only (no /etc, /var, /root or /home) and
      only its source and output directories writable;
    - the wheel is refused if it holds native code, then tagged
      py3-none-any, since its content is then pure Python.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

# What the guest reports (tests/all/python_packages.rs checks this against a
# running component): CPython 3.14 as componentize-py 0.25 embeds it, on WASI,
# 32-bit wasm.
GUEST_ENVIRONMENT = {
    "implementation_name": "cpython",
    "implementation_version": "3.14.0",
    "os_name": "posix",
    "platform_machine": "wasm32",
    "platform_python_implementation": "CPython",
    "platform_release": "0.0.0",
    "platform_system": "wasi",
    "platform_version": "0.0.0",
    "python_full_version": "3.14.0",
    "python_version": "3.14",
    "sys_platform": "wasi",
}

FROM_SOURCE_MARK = re.compile(r"#\s*caisson:\s*build-from-source\b")
DEFAULT_INDEX = "https://pypi.org/simple"
# File contents that mean native code, whatever the file is called.
NATIVE_MAGIC = (b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"\0asm")
NATIVE_SUFFIXES = (".so", ".pyd", ".dylib", ".dll", ".a", ".o", ".lib")


class Refused(Exception):
    """A clear error for the task author; printed without a traceback."""


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("environment")
    install = sub.add_parser("install")
    install.add_argument("--requirements", type=Path, required=True)
    install.add_argument("--target", type=Path, required=True)
    install.add_argument("--work", type=Path, required=True)
    install.add_argument("--from-source", action="append", default=[])
    args = parser.parse_args()
    if args.command == "environment":
        print(json.dumps(GUEST_ENVIRONMENT, sort_keys=True))
        return 0
    try:
        return install_requirements(args)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


def install_requirements(args: argparse.Namespace) -> int:
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name

    work = args.work.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    requirements = args.requirements.resolve()

    # Which requirements to build from source, and what requirements.txt asks
    # of each (a version range, or a local `name @ file://` source).
    wanted = {canonicalize_name(n): None for n in args.from_source}
    lines = []
    for number, line in enumerate(requirements.read_text().splitlines(), 1):
        marked = bool(FROM_SOURCE_MARK.search(line))
        text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("-") else line.strip()
        for option in ("-r ", "-c ", "--requirement ", "--constraint "):
            if text.startswith(option):
                # The rewritten file lives elsewhere: keep includes pointing
                # at the task's files.
                text = option + str(requirements.parent / text[len(option):].strip())
        if not text or text.startswith("-"):
            lines.append(text)
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement as e:
            raise Refused(f"{requirements.name} line {number}: {e}") from None
        name = canonicalize_name(requirement.name)
        if marked:
            wanted[name] = None
        if name in wanted:
            wanted[name] = requirement
            # Installed below from the wheel built here, never by pip from
            # its source (pip would run setup code outside the sandbox).
            continue
        lines.append(text)
    wheelhouse = work / "wheels"
    wheelhouse.mkdir()
    pins, constraints = [], []
    for name, requirement in sorted(wanted.items()):
        version = build_from_source(name, requirement, work / "src" / name, wheelhouse)
        # A name only given with --from-source may be a dependency of a
        # requirement (markupsafe of jinja2): a constraint, so it is
        # installed only if something needs it.
        (pins if requirement is not None else constraints).append(f"{name}=={version}")
    rewritten = work / "requirements.txt"
    rewritten.write_text("\n".join(lines + pins) + "\n")
    constraints_file = work / "constraints.txt"
    constraints_file.write_text("\n".join(constraints) + "\n")

    # From here on pip evaluates every marker as the guest would.
    import pip._vendor.packaging.markers as markers

    markers.default_environment = lambda: dict(GUEST_ENVIRONMENT)
    from pip._internal.cli.main import main as pip_main

    pip_args = [
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        # Bytecode for the host's Python is of no use to the guest's, and
        # would only make the component bigger.
        "--no-compile",
        # Wheels tagged py3-none-any only: the guest is CPython on WASI,
        # where no platform-specific wheel can load.
        "--only-binary=:all:",
        "--platform",
        "any",
        "--implementation",
        "py",
        "--abi",
        "none",
        "--python-version",
        GUEST_ENVIRONMENT["python_version"],
        "--target",
        str(args.target),
        "--find-links",
        str(wheelhouse),
        "-r",
        str(rewritten),
        "-c",
        str(constraints_file),
    ]
    return 0 if pip_main(pip_args) == 0 else 2


def build_from_source(name, requirement, root: Path, wheelhouse: Path) -> str:
    """Builds `name`'s sdist into a pure-Python wheel in `wheelhouse`;
    returns its version."""
    root.mkdir(parents=True)
    src, out = root / "src", root / "out"
    out.mkdir()
    url = requirement.url if requirement is not None else None
    if url:
        if not url.startswith("file://"):
            raise Refused(f"{name}: a source build takes a registry release or a local `file://` source, not {url}")
        local = Path(url[len("file://"):])
        if local.is_dir():
            shutil.copytree(local, src, symlinks=True)
        else:
            unpack(local, src)
    else:
        specifier = requirement.specifier if requirement is not None else None
        unpack(fetch_sdist(name, specifier, root), src)

    env = root / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, capture_output=True)
    build_requires = ["setuptools>=40.8.0", "wheel"]
    pyproject = src / "pyproject.toml"
    if pyproject.exists():
        system = tomllib.loads(pyproject.read_text()).get("build-system", {})
        build_requires = system.get("requires", build_requires) + ["wheel"]
    # Wheels only: installing a wheel runs none of its code, while building
    # a build dependency from source would, outside the sandbox.
    done = subprocess.run(
        [str(env / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", *build_requires],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise Refused(f"{name}: could not install its build dependencies {build_requires} as wheels:\n{done.stderr.strip()}")

    done = subprocess.run(sandbox(env, src, out) + [
        str(env / "bin/python"), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "--no-cache-dir", "--disable-pip-version-check", "-w", str(out), str(src),
    ], capture_output=True, text=True)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        why = ""
        if "Read-only file system" in output:
            why = " It tried to write outside its build directory."
        elif any(s in output for s in ("Temporary failure in name resolution", "Network is unreachable", "Name or service not known")):
            why = " It tried to reach the network."
        tail = "\n".join(output.splitlines()[-25:])
        raise Refused(
            f"building {name} from source failed.{why} Source builds run in a sandbox with no network "
            f"and a read-only file system except their build directory.\nThe build said:\n{tail}"
        )
    wheels = list(out.glob("*.whl"))
    if len(wheels) != 1:
        raise Refused(f"{name}: the source build made {len(wheels)} wheels, not one")
    return check_and_retag(name, wheels[0], wheelhouse)


def sandbox(env: Path, src: Path, out: Path) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise Refused(
            "building from source needs bubblewrap (`apt install bubblewrap`), which runs the "
            "package's setup code with no network and a read-only file system"
        )
    # Only the system's programs and libraries, read-only: not /etc, /var,
    # /root or /home, whose keys and tokens the setup code could otherwise
    # copy into the wheel, and so into the component.
    root = []
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            root += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            root += ["--ro-bind", path, path]
    root += ["--ro-bind", "/usr", "/usr", "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
             "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    base = Path(sys.base_prefix).resolve()
    if not base.is_relative_to("/usr"):
        # A Python installed elsewhere (/opt, pyenv, uv): the build
        # environment runs on it.
        root += ["--ro-bind", str(base), str(base)]
    return [
        bwrap, *root, "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        "--ro-bind", str(env), str(env), "--bind", str(src), str(src), "--bind", str(out), str(out),
        # bwrap's own root holds the mount points; read-only too, so a write
        # anywhere else fails (EROFS) instead of vanishing with the sandbox.
        "--remount-ro", "/",
        "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
        "--setenv", "PATH", f"{env}/bin:/usr/bin:/bin", "--setenv", "HOME", str(src),
        "--setenv", "TMPDIR", "/tmp", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        # C compilation fails on purpose, so optional extensions fall back to
        # pure Python (and a package with no fallback fails to build).
        "--setenv", "CC", "/bin/false", "--setenv", "CXX", "/bin/false",
        "--setenv", "LDSHARED", "/bin/false", "--setenv", "MSGPACK_PUREPYTHON", "1",
        "--chdir", str(src),
    ]


def fetch_sdist(name: str, specifier, root: Path) -> Path:
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion, Version

    index = os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX).rstrip("/")
    request = urllib.request.Request(
        f"{index}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise Refused(f"{name}: no such project on {index}") from None
        raise Refused(f"{name}: could not read its releases from {index} ({e})") from None
    except Exception as e:
        raise Refused(f"{name}: could not read its releases from {index} ({e})") from None
    candidates = []
    for file in files:
        filename = file["filename"]
        stem = next((filename[: -len(ext)] for ext in (".tar.gz", ".zip") if filename.endswith(ext)), None)
        if stem is None or file.get("yanked") or "-" not in stem:
            continue
        project, _, version = stem.rpartition("-")
        try:
            version = Version(version)
        except InvalidVersion:
            continue
        if canonicalize_name(project) != name:
            continue
        if specifier is not None and not specifier.contains(version, prereleases=bool(specifier.prereleases)):
            continue
        if specifier is None and version.is_prerelease:
            continue
        candidates.append((version, file))
    if not candidates:
        raise Refused(f"{name}: no source release (sdist) matches {specifier or 'any version'} on {index}")
    version, file = max(candidates, key=lambda c: c[0])
    path = root / file["filename"]
    with urllib.request.urlopen(file["url"], timeout=120) as response:
        data = response.read()
    expected = file.get("hashes", {}).get("sha256")
    if expected is None or hashlib.sha256(data).hexdigest() != expected:
        raise Refused(f"{name}: {file['filename']} does not match the index's sha256")
    path.write_bytes(data)
    return path


def unpack(archive: Path, dest: Path) -> None:
    """Unpacks an sdist's single top directory into `dest`, refusing links
    and paths that leave it."""
    staging = dest.with_name(dest.name + ".unpack")
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise Refused(f"{archive.name}: unsafe path {member}")
            z.extractall(staging)
    else:
        with tarfile.open(archive) as t:
            t.extractall(staging, filter="data")
    tops = list(staging.iterdir())
    shutil.move(str(tops[0] if len(tops) == 1 and tops[0].is_dir() else staging), dest)


def check_and_retag(name: str, wheel: Path, wheelhouse: Path) -> str:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            head = z.open(info).read(4) if not info.is_dir() else b""
            if info.filename.endswith(NATIVE_SUFFIXES) or any(head.startswith(m) for m in NATIVE_MAGIC):
                raise Refused(
                    f"{name}: the source build holds native code ({info.filename}), which cannot run "
                    "in the guest: this package has no pure-Python fallback"
                )
        entries = {info.filename: z.read(info) for info in z.infolist()}
    distribution, version = wheel.name.split("-")[:2]
    info_dir = f"{distribution}-{version}.dist-info"
    # The content is pure Python (checked above), whatever tag setuptools
    # gave a package that declares an optional extension.
    meta = entries[f"{info_dir}/WHEEL"].decode()
    meta = re.sub(r"(?m)^Tag: .*\n?", "", meta)
    meta = re.sub(r"(?m)^Root-Is-Purelib: .*$", "Root-Is-Purelib: true", meta).rstrip("\n")
    entries[f"{info_dir}/WHEEL"] = (meta + "\nTag: py3-none-any\n").encode()
    rows = []
    for row in csv.reader(io.StringIO(entries[f"{info_dir}/RECORD"].decode())):
        if row and row[0] == f"{info_dir}/WHEEL":
            digest = base64.urlsafe_b64encode(hashlib.sha256(entries[row[0]]).digest()).rstrip(b"=")
            row = [row[0], f"sha256={digest.decode()}", str(len(entries[row[0]]))]
        rows.append(row)
    record = io.StringIO()
    csv.writer(record, lineterminator="\n").writerows(rows)
    entries[f"{info_dir}/RECORD"] = record.getvalue().encode()
    target = wheelhouse / f"{distribution}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for filename, data in entries.items():
            z.writestr(filename, data)
    return version


if __name__ == "__main__":
    sys.exit(main())
