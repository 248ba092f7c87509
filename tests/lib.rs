//! Shared helpers for Caisson's integration tests.
//!
//! Services come from the environment (`scripts/services env` prints it):
//! `CAISSON_TEST_POSTGRES_URL`, `CAISSON_TEST_MYSQL_URL`, `CAISSON_TEST_S3_*`, `CAISSON_TEST_HDFS_*` and `CAISSON_TEST_PROMETHEUS_*`. A test that needs a
//! service that is not configured is skipped with a message, unless
//! `CAISSON_REQUIRE_SERVICES=1`, when it fails instead: CI sets that, so a
//! missing service can never pass silently.
//!
//! Guest components come from `target/guests` (`scripts/build-guests`), or
//! from `CAISSON_GUEST_DIR`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use caisson_host_api::objects::{StoreConfig, parse_key};
use caisson_runtime::{Config, Runtime};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The bytes of the guest component `name` (e.g. `hello`, `word-count`).
pub fn guest(name: &str) -> Vec<u8> {
    let path = guest_path(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "guest component {} is missing ({e}); build the guests with scripts/build-guests",
            path.display()
        )
    })
}

pub fn guest_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("CAISSON_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/guests"));
    dir.join(format!("{name}.wasm"))
}

/// The `caisson` binary built by cargo for this test run.
pub fn caisson_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CAISSON_BIN") {
        return bin.into();
    }
    // Test binaries live in target/<profile>/deps; the CLI one level up.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("caisson");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p caisson-cli` (scripts/test does)",
        bin.display()
    );
    bin
}

fn require_services() -> bool {
    std::env::var("CAISSON_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Returns `None` (and says so) when `var` is unset and services are not
/// required; panics when they are.
fn service_var(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if require_services() => panic!("{var} is not set but CAISSON_REQUIRE_SERVICES=1"),
        _ => {
            eprintln!("skipping: {var} is not set (run `eval \"$(scripts/services env)\"`)");
            None
        }
    }
}

/// The test PostgreSQL's URL: host-api's, which its own tests use too.
pub fn postgres_url() -> Option<String> {
    caisson_host_api::test_support::postgres_url("this test")
}

/// The test MariaDB's URL (`mysql://...`).
pub fn mysql_url() -> Option<String> {
    service_var("CAISSON_TEST_MYSQL_URL")
}

/// Submits a run through the API at `url`: the API's answer (`id`, and
/// what else the submit says).
pub async fn submit_run(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let response = http
        .post(format!("{url}/v1/runs"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let run: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 201, "not submitted: {run}");
    run
}

/// The view of run `id` once it has ended (queued and running are not
/// ends), through the API's `?wait=`: 300 s at most.
pub async fn finished_run(http: &reqwest::Client, url: &str, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let run: serde_json::Value = http
            .get(format!("{url}/v1/runs/{id}?wait=10s"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !matches!(run["state"].as_str(), Some("queued" | "running")) {
            return run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {id} stuck: {run}"
        );
    }
}

/// Waits until no run in the coordination database `db` is queued or
/// running; fails the test if some still are after `within`.
pub async fn wait_until_idle(db: &sqlx::PgPool, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE state IN ('queued', 'running')")
                .fetch_one(db)
                .await
                .unwrap();
        if open == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} runs still open after {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Connection details of the test S3 server.
#[derive(Debug, Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

pub fn s3_env() -> Option<S3Env> {
    let endpoint = service_var("CAISSON_TEST_S3_ENDPOINT")?;
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    Some(S3Env {
        endpoint,
        bucket: var("CAISSON_TEST_S3_BUCKET", "caisson-test"),
        access_key_id: var("CAISSON_TEST_S3_ACCESS_KEY_ID", "caisson-access"),
        secret_access_key: var("CAISSON_TEST_S3_SECRET_ACCESS_KEY", "caisson-secret-key"),
        region: var("CAISSON_TEST_S3_REGION", "us-east-1"),
    })
}

impl S3Env {
    /// The `[objects.LABEL]` table for a `caisson.toml` written by a test.
    pub fn toml_table(&self, label: &str, prefix: &str) -> String {
        format!(
            r#"
[objects.{label}]
type = "s3"
bucket = "{}"
prefix = "{prefix}"
endpoint = "{}"
region = "{}"
access_key_id = "{}"
secret_access_key = "{}"
path_style = true
allow_http = true
"#,
            self.bucket, self.endpoint, self.region, self.access_key_id, self.secret_access_key
        )
    }

    /// A client for the whole bucket, for tests to seed and check data.
    pub fn client(&self) -> Arc<dyn ObjectStore> {
        caisson_host_api::objects::install_crypto_provider();
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_bucket_name(&self.bucket)
                .with_access_key_id(&self.access_key_id)
                .with_secret_access_key(&self.secret_access_key)
                .with_region(&self.region)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .build()
                .unwrap(),
        )
    }
}

/// A remote object store the tests run the same tasks against: S3 or HDFS.
pub trait RemoteStore {
    /// What the test names say: `s3`, `hdfs`.
    fn name(&self) -> &'static str;
    /// The `[objects.LABEL]` table for a `caisson.toml` written by a test.
    fn toml_table(&self, label: &str, prefix: &str) -> String;
    /// A client for the whole bucket or file system, to seed and check data.
    fn client(&self) -> Arc<dyn ObjectStore>;
    /// A store config rooted at `prefix`, as an operator would write it.
    fn store_config(&self, prefix: &str) -> StoreConfig {
        let table: toml::Table = toml::from_str(&self.toml_table("data", prefix)).unwrap();
        table["objects"]["data"].clone().try_into().unwrap()
    }
}

impl RemoteStore for S3Env {
    fn name(&self) -> &'static str {
        "s3"
    }
    fn toml_table(&self, label: &str, prefix: &str) -> String {
        S3Env::toml_table(self, label, prefix)
    }
    fn client(&self) -> Arc<dyn ObjectStore> {
        S3Env::client(self)
    }
}

impl RemoteStore for HdfsEnv {
    fn name(&self) -> &'static str {
        "hdfs"
    }
    fn toml_table(&self, label: &str, prefix: &str) -> String {
        format!(
            "\n[objects.{label}]\ntype = \"hdfs\"\nurl = \"{}\"\nprefix = \"{prefix}\"\nuser = \"{HDFS_USER}\"\n",
            self.url
        )
    }
    /// It sees what the tasks' stores hide, such as files being written.
    fn client(&self) -> Arc<dyn ObjectStore> {
        let client = hdfs_native::ClientBuilder::new()
            .with_url(&self.url)
            .with_user(HDFS_USER)
            .build()
            .unwrap();
        Arc::new(hdfs_native_object_store::HdfsObjectStore::new(client))
    }
}

/// Connection details of the test HDFS: the shared MiniDFS that
/// `scripts/services start hdfs` runs (3 DataNodes, replication 2).
#[derive(Debug, Clone)]
pub struct HdfsEnv {
    /// The NameNode, `hdfs://127.0.0.1:PORT`.
    pub url: String,
    /// MiniDFS's control port, `127.0.0.1:PORT` (see `scripts/minidfs`).
    pub control: String,
}

/// The user the tests' HDFS stores write as. MiniDFS keeps permissions on;
/// its root is world-writable, like `/tmp`.
pub const HDFS_USER: &str = "caisson";

pub fn hdfs_env() -> Option<HdfsEnv> {
    let url = service_var("CAISSON_TEST_HDFS_URL")?;
    let control =
        std::env::var("CAISSON_TEST_HDFS_CONTROL").unwrap_or_else(|_| "127.0.0.1:9821".into());
    Some(HdfsEnv { url, control })
}

impl HdfsEnv {
    /// Sends one command to MiniDFS's control port (`stop-datanode 1`,
    /// `start-namenode`, `locations /path`, ...) and returns what follows
    /// its `ok`. Panics on `err`.
    pub async fn control(&self, command: &str) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let stream = tokio::net::TcpStream::connect(&self.control)
            .await
            .unwrap_or_else(|e| panic!("MiniDFS control port {}: {e}", self.control));
        let (read, mut write) = stream.into_split();
        write
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        BufReader::new(read).read_line(&mut reply).await.unwrap();
        match reply.trim_end().strip_prefix("ok") {
            Some(rest) => rest.trim().to_string(),
            None => panic!("MiniDFS `{command}`: {reply}"),
        }
    }
}

/// The test Prometheus: the one `scripts/services start prometheus` runs,
/// which scrapes every target listed in a `*.json` file in `targets`
/// (file-based service discovery, re-read as files change).
#[derive(Debug, Clone)]
pub struct PrometheusEnv {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub targets: PathBuf,
}

pub fn prometheus_env() -> Option<PrometheusEnv> {
    let url = service_var("CAISSON_TEST_PROMETHEUS_URL")?;
    let targets = service_var("CAISSON_TEST_PROMETHEUS_TARGETS")?;
    Some(PrometheusEnv {
        url,
        targets: targets.into(),
    })
}

/// A program on `PATH` (`promtool`), or `None` and why: missing tools
/// fail the test when `CAISSON_REQUIRE_SERVICES=1`.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        return unavailable(format!("{name} is not on PATH"));
    }
    found
}

/// Every key under `prefix` as `client` lists it, relative to the prefix
/// and sorted: what a test compares with what a task says it wrote.
pub async fn keys_under(client: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let listed: Vec<_> = client.list(Some(&key(prefix))).try_collect().await.unwrap();
    let mut keys: Vec<String> = listed
        .iter()
        .map(|m| m.location.as_ref()[prefix.len() + 1..].to_string())
        .collect();
    keys.sort();
    keys
}

/// A prefix no other test uses.
pub fn unique_prefix(name: &str) -> String {
    format!("tests/{name}-{}", uuid::Uuid::new_v4().simple())
}

/// An object path, for test code (guest keys go through the same parser).
pub fn key(k: &str) -> object_store::path::Path {
    parse_key(k).unwrap()
}

/// Directories shared by the runtimes of one test binary: the compiled
/// component cache is worth sharing (compiling is the slow part).
pub fn test_dirs() -> &'static (PathBuf, tempfile::TempDir) {
    static DIRS: OnceLock<(PathBuf, tempfile::TempDir)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let cache = root().join("target/test-component-cache");
        std::fs::create_dir_all(&cache).unwrap();
        (cache, tempfile::tempdir().unwrap())
    })
}

/// A `caisson.toml` for a test server, built the same way by every test:
/// `[server]` with the database and the module store, `[engine]` with the
/// shared compile cache and scratch directory ([`test_dirs`]) and
/// `max_instances = 8`, then whatever tables a test adds. A setting given
/// again replaces the earlier one, so defaults can be overridden.
///
/// ```no_run
/// # let dir = std::path::Path::new("/tmp");
/// let toml = caisson_tests::ServerToml::new("sqlite://db.sqlite?mode=rwc")
///     .local_modules(&dir.join("modules"))
///     .server("poll", "\"50ms\"")
///     .render();
/// ```
#[derive(Debug, Clone)]
pub struct ServerToml {
    server: Vec<(String, String)>,
    engine: Vec<(String, String)>,
    /// Raw `[server]` lines (settings a test passes as text).
    server_lines: String,
    /// Raw TOML after `[engine]`: limits, stores, tenants.
    tables: String,
}

fn set(settings: &mut Vec<(String, String)>, key: &str, value: String) {
    match settings.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => settings.push((key.to_string(), value)),
    }
}

impl ServerToml {
    /// Listens on 127.0.0.1:0 and uses `database` (a URL).
    pub fn new(database: impl std::fmt::Display) -> Self {
        Self::engine_only()
            .server("listen", "\"127.0.0.1:0\"")
            .server("database", format!("\"{database}\""))
    }

    /// No `[server]` table, only `[engine]` and what a test adds: the
    /// configuration of `caisson run`, which starts no server.
    pub fn engine_only() -> Self {
        let (cache, scratch) = test_dirs();
        ServerToml {
            server: Vec::new(),
            engine: Vec::new(),
            server_lines: String::new(),
            tables: String::new(),
        }
        .engine("cache_dir", format!("\"{}\"", cache.display()))
        .engine("scratch_dir", format!("\"{}\"", scratch.path().display()))
        .engine("max_instances", "8")
    }

    /// SQLite in `dir` (`dir/db.sqlite`), created on first use.
    pub fn sqlite_in(dir: &std::path::Path) -> Self {
        Self::new(format!("sqlite://{}/db.sqlite?mode=rwc", dir.display()))
    }

    /// The module store: a local directory.
    pub fn local_modules(self, root: &std::path::Path) -> Self {
        self.server(
            "modules",
            format!("{{ type = \"local\", root = \"{}\" }}", root.display()),
        )
    }

    /// Sets `[server] key = value` (`value` is TOML).
    pub fn server(mut self, key: &str, value: impl Into<String>) -> Self {
        set(&mut self.server, key, value.into());
        self
    }

    /// Leaves `[server]` without a `listen` line (an in-process server).
    pub fn no_listen(mut self) -> Self {
        self.server.retain(|(k, _)| k != "listen");
        self
    }

    /// Adds raw lines to `[server]`.
    pub fn server_lines(mut self, lines: &str) -> Self {
        self.server_lines.push_str(lines);
        self.server_lines.push('\n');
        self
    }

    /// Sets `[engine] key = value` (`value` is TOML).
    pub fn engine(mut self, key: &str, value: impl Into<String>) -> Self {
        set(&mut self.engine, key, value.into());
        self
    }

    /// Adds raw TOML tables after `[engine]`.
    pub fn tables(mut self, toml: &str) -> Self {
        self.tables.push_str(toml);
        self.tables.push('\n');
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.server.is_empty() || !self.server_lines.is_empty() {
            out.push_str("[server]\n");
            for (k, v) in &self.server {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out.push_str(&self.server_lines);
            out.push('\n');
        }
        out.push_str("[engine]\n");
        for (k, v) in &self.engine {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out.push('\n');
        out.push_str(&self.tables);
        out
    }

    /// Writes `dir/caisson.toml`.
    pub fn write(&self, dir: &std::path::Path) {
        std::fs::write(dir.join("caisson.toml"), self.render()).unwrap();
    }
}

/// A configuration with test-friendly engine settings and nothing granted.
pub fn base_config() -> Config {
    let (cache, scratch) = test_dirs();
    let mut config = Config::default();
    config.engine.cache_dir = cache.clone();
    config.engine.scratch_dir = scratch.path().to_path_buf();
    // Keep the pool's address-space reservation modest: the tests run many
    // runtimes side by side.
    config.engine.max_instances = 16;
    config.engine.max_memory = 1 << 30;
    config
}

/// A runtime for `config`.
pub fn runtime(config: Config) -> Runtime {
    Runtime::new(config).expect("building the runtime")
}

// ------------------------------------------------------------------------
// Private services for fault injection. The shared services must never be
// stopped (other tests use them), so a test that restarts PostgreSQL or
// kills the S3 server starts its own, on a free port and a temp directory.

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `None` (and why, on stderr) when a private service cannot be started
/// here; a panic instead when `CAISSON_REQUIRE_SERVICES=1`.
fn unavailable<T>(why: String) -> Option<T> {
    if require_services() {
        panic!("{why} but CAISSON_REQUIRE_SERVICES=1");
    }
    eprintln!("skipping: {why}");
    None
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL 15 server of one test's own, stopped and deleted on drop.
/// Trust authentication on 127.0.0.1 only: it lives as long as the test.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Runs `initdb` and starts the server, as the `postgres` user (which
    /// needs root, like `scripts/services`).
    pub fn start() -> Option<Self> {
        if !std::path::Path::new(PG_BIN).join("initdb").exists() {
            return unavailable(format!("{PG_BIN}/initdb is missing"));
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return unavailable("a private PostgreSQL needs root (runuser -u postgres)".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("caisson-pg-")
            .tempdir()
            .unwrap();
        let pg = PrivatePostgres {
            port: free_port(),
            dir,
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(pg.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = pg.data();
        let status = std::process::Command::new("install")
            .args(["-d", "-o", "postgres", "-g", "postgres", "-m", "700"])
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success(), "could not create {}", data.display());
        pg.as_postgres(&[
            "initdb",
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth=trust",
        ]);
        pg.resume();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, args: &[&str]) {
        let output = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(std::path::Path::new(PG_BIN).join(args[0]))
            .args(&args[1..])
            .current_dir("/")
            .output()
            .expect("running runuser");
        assert!(
            output.status.success(),
            "{} failed: {}{}",
            args[0],
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let data = self.data();
        let log = self.dir.path().join("pg.log");
        std::fs::write(&log, "").unwrap();
        let _ = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&log)
            .status();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            data.display()
        );
        self.as_postgres(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-o",
            &options,
            "start",
        ]);
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn pause(&self) {
        self.as_postgres(&[
            "pg_ctl",
            "-D",
            self.data().to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(std::path::Path::new(PG_BIN).join("pg_ctl"))
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .current_dir("/")
            .output();
    }
}

/// The test S3 server (`s3s-fs` with TCP_NODELAY, scripts/s3-server), as
/// `scripts/services start s3` builds it.
pub fn s3_server_bin() -> PathBuf {
    root().join("target/tools/s3-server/release/caisson-test-s3")
}

/// An `s3s-fs` S3 server of one test's own, on its own port and root,
/// with the bucket of [`S3Env`]'s defaults. Killed on drop.
pub struct PrivateS3 {
    root: tempfile::TempDir,
    port: u16,
    child: std::sync::Mutex<Option<std::process::Child>>,
}

impl PrivateS3 {
    pub fn start() -> Option<Self> {
        let bin = s3_server_bin();
        if !bin.exists() {
            return unavailable(format!(
                "{} is missing (scripts/services start installs it)",
                bin.display()
            ));
        }
        let root = tempfile::Builder::new()
            .prefix("caisson-s3-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(root.path().join("caisson-test")).unwrap();
        let s3 = PrivateS3 {
            root,
            port: free_port(),
            child: std::sync::Mutex::new(None),
        };
        s3.resume();
        Some(s3)
    }

    pub fn env(&self) -> S3Env {
        S3Env {
            endpoint: format!("http://127.0.0.1:{}", self.port),
            bucket: "caisson-test".into(),
            access_key_id: "caisson-access".into(),
            secret_access_key: "caisson-secret-key".into(),
            region: "us-east-1".into(),
        }
    }

    /// Starts the server (again, on the same port and root) and waits
    /// until it answers.
    pub fn resume(&self) {
        let mut child = self.child.lock().unwrap();
        assert!(child.is_none(), "s3s-fs is already running");
        let spawned = std::process::Command::new(s3_server_bin())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", "caisson-access"])
            .args(["--secret-key", "caisson-secret-key"])
            .arg(self.root.path())
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawning s3s-fs");
        *child = Some(spawned);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "s3s-fs did not listen on port {} in 30s",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kills the server at once (SIGKILL): connections break mid-transfer.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A MiniDFS of one test's own (NameNode, 3 DataNodes, replication 2,
/// 1 MiB blocks so that a small file spans several), for tests that stop
/// nodes. Built by `scripts/services start hdfs`; killed on drop.
pub struct PrivateHdfs {
    _dir: tempfile::TempDir,
    child: std::process::Child,
    pub env: HdfsEnv,
}

impl PrivateHdfs {
    /// Starts it and waits until it is ready (10-30 s): call it from
    /// `spawn_blocking`.
    ///
    /// Its ports are picked free, then bound by Java: another process may
    /// take one in between. A start that fails so is tried again on other
    /// ports, twice at most.
    pub fn start() -> Option<Self> {
        let out = root().join("target/minidfs");
        let Ok(classpath) = std::fs::read_to_string(out.join("classpath.txt")) else {
            return unavailable(format!(
                "{} is missing (scripts/services start hdfs builds MiniDFS)",
                out.join("classpath.txt").display()
            ));
        };
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::start_on_free_ports(&out, &classpath) {
                Ok(hdfs) => return Some(hdfs),
                Err(log) if tries < 3 && log.contains("Address already in use") => {
                    eprintln!("MiniDFS lost a port it was given; starting it again");
                }
                Err(log) => panic!("MiniDFS did not start: {log}"),
            }
        }
    }

    /// One start, ready; or MiniDFS's log if it exited first.
    fn start_on_free_ports(out: &std::path::Path, classpath: &str) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("caisson-hdfs-")
            .tempdir()
            .unwrap();
        let (port, control) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("minidfs.log")).unwrap();
        let child = std::process::Command::new("java")
            .args(["-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("-cp")
            .arg(format!(
                "{}:{}",
                out.join("classes").display(),
                classpath.trim()
            ))
            .arg("caisson.MiniDfs")
            .arg("--dir")
            .arg(dir.path())
            .args(["--port", &port.to_string()])
            .args(["--control-port", &control.to_string()])
            .args([
                "--datanodes",
                "3",
                "--replication",
                "2",
                "--block-size",
                "1048576",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning java for MiniDFS");
        let mut hdfs = PrivateHdfs {
            env: HdfsEnv {
                url: format!("hdfs://127.0.0.1:{port}"),
                control: format!("127.0.0.1:{control}"),
            },
            _dir: dir,
            child,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while !hdfs._dir.path().join("ready").exists() {
            let log = || std::fs::read_to_string(hdfs._dir.path().join("minidfs.log")).unwrap();
            if let Some(status) = hdfs.child.try_wait().unwrap() {
                return Err(format!("exited with {status}: {}", log()));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "MiniDFS was not ready in 300 s: {}",
                log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(hdfs)
    }
}

impl Drop for PrivateHdfs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small tmpfs mounted on a fresh temp directory (root only), to fill a
/// disk without filling the machine's. Unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` bytes.
    pub fn mount(bytes: u64) -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix("caisson-tmpfs-")
            .tempdir()
            .unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0755")])
            .arg("tmpfs")
            .arg(dir.path())
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Tmpfs { dir }),
            Ok(output) => unavailable(format!(
                "cannot mount a tmpfs (not root?): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(e) => unavailable(format!("cannot run mount: {e}")),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a worker thread may still hold a file open there.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}

/// A `caisson serve` process whose stdout and stderr are captured (for
/// tests that read the server's own log), killed when dropped.
pub struct Served {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    output: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Served {
    /// Starts `caisson serve --config CONFIG` in `dir` with `envs` added,
    /// and waits until it listens. The config should listen on
    /// `127.0.0.1:0`.
    pub fn start(config: &std::path::Path, dir: &std::path::Path, envs: &[(&str, &str)]) -> Served {
        let config = config.to_str().expect("a UTF-8 config path");
        Served::start_args(&["serve", "--config", config], dir, envs)
    }

    /// Starts `caisson ARGS` (a `serve` command line, or a `worker` one
    /// with `--metrics-listen`) in `dir` with `envs` added, and waits until
    /// it listens; `url` is then its API's, or its metrics server's.
    // The child is waited for in `Drop`.
    #[allow(clippy::zombie_processes)]
    pub fn start_args(args: &[&str], dir: &std::path::Path, envs: &[(&str, &str)]) -> Served {
        use std::io::Read;
        use std::process::{Command, Stdio};
        let mut child = Command::new(caisson_bin())
            .args(args)
            .current_dir(dir)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning caisson serve");
        let output = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut line = Vec::new();
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                out.lock().unwrap().extend_from_slice(&buf[..n]);
                for &b in &buf[..n] {
                    if b == b'\n' {
                        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
        });
        let out = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(line) => {
                    let url = (line.strip_prefix("caisson: listening on ")).or_else(|| {
                        (line.strip_prefix("caisson: worker started; metrics at "))
                            .and_then(|url| url.trim().strip_suffix("/metrics"))
                    });
                    if let Some(url) = url {
                        return Served {
                            child,
                            url: url.trim().to_string(),
                            output,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "caisson serve did not start:\n{}",
                        String::from_utf8_lossy(&output.lock().unwrap())
                    );
                }
            }
        }
    }

    /// Everything the process has written to stdout and stderr so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
