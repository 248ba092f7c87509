//! The `caisson` client commands: talk to a server's REST API.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use caisson_server::api::guard::CLIENT_HEADER;
use caisson_server::api::runs::{LogPage, RunPage, RunView};
use caisson_server::model::SubmitRun;
use caisson_server::store::{LogLine, ModuleRecord};
use clap::Subcommand;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;

use crate::escape::{escape_controls, escape_log_message};

/// Where the server is, and who we are.
#[derive(clap::Args, Clone)]
pub struct Conn {
    /// The server's URL.
    #[arg(
        long,
        env = "CAISSON_SERVER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    server: String,
    /// A bearer token.
    #[arg(long, env = "CAISSON_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ModuleCommand {
    /// Upload a component.
    Push {
        file: PathBuf,
        /// The module's name (default: the file name without `.wasm`).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List modules, or the versions of one.
    List {
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a module, or one version.
    Delete {
        name: String,
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum RunRemote {
    /// Submit a run, or with `--batch FILE.jsonl` many.
    Submit {
        /// The module's name.
        #[arg(required_unless_present = "batch")]
        module: Option<String>,
        /// Submit every line of FILE (`-` for standard input): one JSON
        /// object per line, each the body `POST /v1/runs` takes. Sent
        /// 1,000 lines to a request, each request all or nothing; prints
        /// one run id per line, in order.
        #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["module", "wait"])]
        batch: Option<std::path::PathBuf>,
        #[arg(long)]
        version: Option<String>,
        /// The input: literal text, `@FILE`, or `@-` for standard input.
        #[arg(long, short, default_value = "")]
        input: String,
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long = "grant", short = 'g', value_name = "KIND=LABEL")]
        grants: Vec<String>,
        /// e.g. `30s`.
        #[arg(long)]
        timeout: Option<String>,
        /// e.g. `64MiB`.
        #[arg(long, value_parser = crate::args::parse_bytes)]
        memory: Option<u64>,
        #[arg(long, default_value_t = 0)]
        retries: u32,
        #[arg(long, default_value = "1s")]
        backoff: String,
        /// Retry timeouts too.
        #[arg(long)]
        retry_timeouts: bool,
        #[arg(long, default_value_t = 0)]
        priority: i32,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait for the run to finish and print its output.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a run.
    Get {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List runs, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        module: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a run's log; `-f` follows it until the run ends.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a run.
    Cancel {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

impl Conn {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        // A server without tokens takes state-changing requests only with
        // this header (or a JSON body): web pages cannot send it unasked.
        let mut request = reqwest::Client::new()
            .request(method, self.url(path))
            .header(
                CLIENT_HEADER,
                concat!("caisson/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .send()
            .await
            .with_context(|| format!("could not reach the server at {}", self.server))?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("{status}: {message}");
        }
        if body.is_empty() {
            return Ok(serde_json::from_str("null")?);
        }
        serde_json::from_slice(&body).context("unexpected answer from the server")
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_modules(modules: &[ModuleRecord]) {
    println!(
        "{:<24} {:<20} {:<14} {:>10}",
        "NAME", "VERSION", "DIGEST", "SIZE"
    );
    for m in modules {
        println!(
            "{:<24} {:<20} {:<14} {:>10}",
            m.name,
            m.version,
            &m.digest[..12.min(m.digest.len())],
            m.size
        );
    }
}

fn print_run(run: &RunView) {
    println!("run       {}", run.id);
    println!(
        "module    {} {} ({})",
        run.module,
        run.version,
        &run.digest[..12.min(run.digest.len())]
    );
    println!(
        "state     {:?} after {} attempt(s)",
        run.state, run.attempts
    );
    println!("created   {}", run.created_at);
    if let Some(finished) = run.finished_at {
        println!("finished  {finished}");
    }
    // The error and the output are the task's own text.
    if let Some(error) = &run.error {
        println!("error     {}", escape_controls(error));
    }
    if let Some(output) = &run.output {
        println!("output    {}", escape_controls(output));
    }
}

fn print_line(line: &LogLine) {
    let time = chrono::DateTime::from_timestamp_millis(line.time).unwrap_or_default();
    println!(
        "{} {:>5} {:<8} {}",
        time.format("%H:%M:%S%.3f"),
        line.level,
        line.source.as_str(),
        escape_log_message(&line.message)
    );
}

pub async fn module(command: ModuleCommand) -> anyhow::Result<()> {
    match command {
        ModuleCommand::Push {
            file,
            name,
            version,
            conn,
        } => {
            let name = match name {
                Some(name) => name,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .context("cannot derive a module name from the file name; pass --name")?
                    .to_ascii_lowercase()
                    .replace('_', "-"),
            };
            let bytes = tokio::fs::read(&file)
                .await
                .with_context(|| format!("could not read {}", file.display()))?;
            let bar = ProgressBar::new(bytes.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")?
                    .progress_chars("=> "),
            );
            bar.set_message(format!("uploading {name}"));
            if conn.json || !std::io::stderr().is_terminal() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let progress = bar.clone();
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
                .chunks(64 * 1024)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            let stream = futures::stream::iter(chunks).inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    progress.inc(chunk.len() as u64);
                }
            });
            let mut query = vec![("name", name.clone())];
            if let Some(version) = version {
                query.push(("version", version));
            }
            let request = conn
                .request(reqwest::Method::POST, "/v1/modules")
                .query(&query)
                .header("content-type", "application/wasm")
                .body(reqwest::Body::wrap_stream(stream));
            let record: ModuleRecord = conn.send(request).await?;
            bar.finish_and_clear();
            if conn.json {
                print_json(&record)
            } else {
                println!(
                    "{} {} ({} bytes, sha256 {})",
                    record.name, record.version, record.size, record.digest
                );
                Ok(())
            }
        }
        ModuleCommand::List { name, conn } => {
            let path = match &name {
                Some(name) => format!("/v1/modules/{name}"),
                None => "/v1/modules".into(),
            };
            let modules: Vec<ModuleRecord> =
                conn.send(conn.request(reqwest::Method::GET, &path)).await?;
            if conn.json {
                print_json(&modules)
            } else {
                print_modules(&modules);
                Ok(())
            }
        }
        ModuleCommand::Delete {
            name,
            version,
            conn,
        } => {
            let mut request = conn.request(reqwest::Method::DELETE, &format!("/v1/modules/{name}"));
            if let Some(version) = version {
                request = request.query(&[("version", version)]);
            }
            let _: serde_json::Value = conn.send(request).await?;
            if !conn.json {
                println!("deleted {name}");
            }
            Ok(())
        }
    }
}

pub async fn run_remote(command: RunRemote) -> anyhow::Result<()> {
    match command {
        RunRemote::Submit {
            batch: Some(path),
            conn,
            ..
        } => submit_batch(&path, &conn).await,
        RunRemote::Submit {
            module,
            version,
            input,
            params,
            grants,
            timeout,
            memory,
            retries,
            backoff,
            retry_timeouts,
            priority,
            idempotency_key,
            wait,
            conn,
            batch: None,
        } => {
            let input = crate::args::read_input(&input)?;
            let (input, input_base64) = match String::from_utf8(input) {
                Ok(text) => (Some(serde_json::Value::String(text)), None),
                Err(e) => {
                    use base64::Engine as _;
                    (
                        None,
                        Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
                    )
                }
            };
            let grants = crate::args::parse_grants(&grants)?;
            let submit = SubmitRun {
                // Clap asks for MODULE unless `--batch` is given, which
                // the arm above takes.
                module: module.unwrap_or_default(),
                version,
                digest: None,
                input,
                input_base64,
                params: crate::args::parse_params(&params)?,
                grants,
                timeout,
                memory,
                fuel: None,
                retries: caisson_server::model::RetryPolicy {
                    max: retries,
                    backoff,
                    on_timeout: retry_timeouts,
                },
                priority,
                idempotency_key,
            };
            let run: RunView = conn
                .send(
                    conn.request(reqwest::Method::POST, "/v1/runs")
                        .json(&submit),
                )
                .await?;
            if !wait {
                if conn.json {
                    return print_json(&run);
                }
                println!("{}", run.id);
                return Ok(());
            }
            let spinner = ProgressBar::new_spinner();
            spinner.set_message(format!("waiting for run {}", run.id));
            if conn.json || !std::io::stderr().is_terminal() {
                spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            spinner.enable_steady_tick(Duration::from_millis(100));
            let finished = loop {
                let current: RunView = conn
                    .send(conn.request(reqwest::Method::GET, &format!("/v1/runs/{}", run.id)))
                    .await?;
                if current.state.is_final() {
                    break current;
                }
                spinner.set_message(format!("run {} is {:?}", run.id, current.state));
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            spinner.finish_and_clear();
            if conn.json {
                print_json(&finished)?;
            } else if let Some(output) = &finished.output {
                println!("{}", escape_controls(output));
            }
            if finished.state != caisson_server::model::RunState::Succeeded {
                bail!(
                    "run {} {:?}: {}",
                    finished.id,
                    finished.state,
                    finished.error.as_deref().unwrap_or("no error recorded")
                );
            }
            Ok(())
        }
        RunRemote::Get { id, conn } => {
            let run: RunView = conn
                .send(conn.request(reqwest::Method::GET, &format!("/v1/runs/{id}")))
                .await?;
            if conn.json {
                print_json(&run)
            } else {
                print_run(&run);
                Ok(())
            }
        }
        RunRemote::List {
            state,
            module,
            limit,
            conn,
        } => {
            let mut query: BTreeMap<&str, String> = BTreeMap::new();
            query.insert("limit", limit.to_string());
            if let Some(state) = state {
                query.insert("state", state);
            }
            if let Some(module) = module {
                query.insert("module", module);
            }
            let page: RunPage = conn
                .send(conn.request(reqwest::Method::GET, "/v1/runs").query(&query))
                .await?;
            if conn.json {
                return print_json(&page);
            }
            println!(
                "{:<36} {:<20} {:<10} {:>8}  CREATED",
                "ID", "MODULE", "STATE", "ATTEMPTS"
            );
            for run in &page.runs {
                println!(
                    "{:<36} {:<20} {:<10} {:>8}  {}",
                    run.id,
                    run.module,
                    run.state.as_str(),
                    run.attempts,
                    run.created_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
            Ok(())
        }
        RunRemote::Logs { id, follow, conn } => {
            if !follow {
                let page: LogPage = conn
                    .send(conn.request(reqwest::Method::GET, &format!("/v1/runs/{id}/logs")))
                    .await?;
                for line in &page.lines {
                    if conn.json {
                        println!("{}", serde_json::to_string(line)?);
                    } else {
                        print_line(line);
                    }
                }
                return Ok(());
            }
            let response = conn
                .request(reqwest::Method::GET, &format!("/v1/runs/{id}/logs"))
                .query(&[("follow", "true")])
                .send()
                .await
                .with_context(|| format!("could not reach the server at {}", conn.server))?;
            if !response.status().is_success() {
                bail!(
                    "{}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
            }
            // A minimal Server-Sent Events reader: `event:` and `data:` lines,
            // events separated by a blank line.
            let mut stream = response.bytes_stream();
            let mut buffer = String::new();
            let mut event = String::new();
            while let Some(chunk) = stream.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk?));
                while let Some(newline) = buffer.find('\n') {
                    let line = buffer[..newline].trim_end_matches('\r').to_string();
                    buffer.drain(..=newline);
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_string();
                    } else if let Some(data) = line.strip_prefix("data:") {
                        let data = data.trim();
                        match event.as_str() {
                            "log" => {
                                let line: LogLine = serde_json::from_str(data)?;
                                if conn.json {
                                    println!("{data}");
                                } else {
                                    print_line(&line);
                                }
                            }
                            "end" => {
                                if !conn.json {
                                    eprintln!("run ended: {}", escape_controls(data));
                                }
                                return Ok(());
                            }
                            "error" => {
                                let message = serde_json::from_str::<serde_json::Value>(data)
                                    .ok()
                                    .and_then(|v| {
                                        v["error"]["message"].as_str().map(str::to_string)
                                    })
                                    .unwrap_or_else(|| data.to_string());
                                bail!("the log stream ended: {message}");
                            }
                            _ => {}
                        }
                    }
                }
            }
            Ok(())
        }
        RunRemote::Cancel { id, conn } => {
            let run: RunView = conn
                .send(conn.request(reqwest::Method::POST, &format!("/v1/runs/{id}/cancel")))
                .await?;
            if conn.json {
                print_json(&run)
            } else {
                println!("{} is {:?}", run.id, run.state);
                Ok(())
            }
        }
    }
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Create a cron schedule that submits a run of MODULE.
    Create {
        name: String,
        /// e.g. `0 2 * * *` or `@daily`.
        #[arg(long)]
        cron: String,
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// The module each firing runs.
        #[arg(long)]
        module: String,
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long = "grant", short = 'g', value_name = "KIND=LABEL")]
        grants: Vec<String>,
        /// After downtime: `skip` or `all`.
        #[arg(long, default_value = "skip")]
        catch_up: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List schedules.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    Pause {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    Resume {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Start a run for every fire time in (FROM, TO] (RFC 3339).
    Backfill {
        name: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum WorkflowCommand {
    /// Create a workflow from a JSON file `{"name": ..., "steps": [...]}`.
    Create {
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// List workflows.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Start a run of a workflow.
    Run {
        name: String,
        /// Wait until it ends; exit non-zero unless it succeeded.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a workflow run and its steps.
    Status {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a workflow run: nothing more starts, its runs (a map step's
    /// splits among them) are cancelled.
    Cancel {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `POST /v1/schedules/{name}/{action}`.
async fn schedule_action(
    conn: &Conn,
    name: &str,
    action: &str,
) -> anyhow::Result<serde_json::Value> {
    conn.send(conn.request(
        reqwest::Method::POST,
        &format!("/v1/schedules/{name}/{action}"),
    ))
    .await
}

pub async fn schedule(command: ScheduleCommand) -> anyhow::Result<()> {
    let show = |conn: &Conn, records: &[serde_json::Value]| -> anyhow::Result<()> {
        if conn.json {
            return print_json(&records);
        }
        println!(
            "{:<24} {:<18} {:<16} {:<7} NEXT",
            "NAME", "CRON", "ZONE", "PAUSED"
        );
        for s in records {
            let next = s["next_fire_at"]
                .as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map_or("-".to_string(), |t| t.to_rfc3339());
            println!(
                "{:<24} {:<18} {:<16} {:<7} {next}",
                s["name"].as_str().unwrap_or_default(),
                s["cron"].as_str().unwrap_or_default(),
                s["timezone"].as_str().unwrap_or_default(),
                s["paused"]
            );
        }
        Ok(())
    };
    match command {
        ScheduleCommand::Create {
            name,
            cron,
            timezone,
            module,
            params,
            grants,
            catch_up,
            conn,
        } => {
            let grants = crate::args::parse_grants(&grants)?;
            let body = serde_json::json!({
                "name": name,
                "cron": cron,
                "timezone": timezone,
                "catch_up": catch_up,
                "run": {
                    "module": module,
                    "params": crate::args::parse_params(&params)?,
                    "grants": grants,
                },
            });
            let record: serde_json::Value = conn
                .send(
                    conn.request(reqwest::Method::POST, "/v1/schedules")
                        .json(&body),
                )
                .await?;
            show(&conn, &[record])
        }
        ScheduleCommand::List { conn } => {
            let records: Vec<serde_json::Value> = conn
                .send(conn.request(reqwest::Method::GET, "/v1/schedules"))
                .await?;
            show(&conn, &records)
        }
        ScheduleCommand::Pause { name, conn } => {
            let record = schedule_action(&conn, &name, "pause").await?;
            show(&conn, &[record])
        }
        ScheduleCommand::Resume { name, conn } => {
            let record = schedule_action(&conn, &name, "resume").await?;
            show(&conn, &[record])
        }
        ScheduleCommand::Delete { name, conn } => {
            let _: serde_json::Value = conn
                .send(conn.request(reqwest::Method::DELETE, &format!("/v1/schedules/{name}")))
                .await?;
            Ok(())
        }
        ScheduleCommand::Backfill {
            name,
            from,
            to,
            conn,
        } => {
            let result: serde_json::Value = conn
                .send(
                    conn.request(
                        reqwest::Method::POST,
                        &format!("/v1/schedules/{name}/backfill"),
                    )
                    .json(&serde_json::json!({"from": from, "to": to})),
                )
                .await?;
            if conn.json {
                return print_json(&result);
            }
            for id in result["runs"].as_array().into_iter().flatten() {
                println!("{}", id.as_str().unwrap_or_default());
            }
            Ok(())
        }
    }
}

pub async fn workflow(command: WorkflowCommand) -> anyhow::Result<()> {
    use caisson_server::api::flows::WorkflowRunView;
    let show_run = |conn: &Conn, run: &WorkflowRunView| -> anyhow::Result<()> {
        if conn.json {
            return print_json(run);
        }
        println!("workflow run {} of {}: {}", run.id, run.workflow, run.state);
        for step in &run.steps {
            // A map step has no run of its own: its splits' count instead.
            let runs = match &step.splits {
                Some(splits) => {
                    let done = splits.iter().filter(|s| s.state == "succeeded").count();
                    format!("{done}/{} splits succeeded", splits.len())
                }
                None => step.run_id.clone().unwrap_or_else(|| "-".into()),
            };
            println!("  {:<24} {:<10} {runs}", step.name, step.state);
            if let Some(error) = &step.error {
                println!("    {}", escape_controls(error));
            }
        }
        Ok(())
    };
    match command {
        WorkflowCommand::Create { file, conn } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("could not read {}", file.display()))?;
            let body: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let created: serde_json::Value = conn
                .send(
                    conn.request(reqwest::Method::POST, "/v1/workflows")
                        .json(&body),
                )
                .await?;
            if conn.json {
                print_json(&created)
            } else {
                println!("created workflow {}", created["name"]);
                Ok(())
            }
        }
        WorkflowCommand::List { conn } => {
            let list: Vec<serde_json::Value> = conn
                .send(conn.request(reqwest::Method::GET, "/v1/workflows"))
                .await?;
            if conn.json {
                return print_json(&list);
            }
            for w in &list {
                let steps = w["definition"]["steps"].as_array().map_or(0, Vec::len);
                println!(
                    "{:<24} {steps} steps",
                    w["name"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        WorkflowCommand::Run { name, wait, conn } => {
            let mut run: WorkflowRunView = conn
                .send(conn.request(reqwest::Method::POST, &format!("/v1/workflows/{name}/runs")))
                .await?;
            while wait && run.state == "running" {
                tokio::time::sleep(Duration::from_millis(250)).await;
                run = conn
                    .send(conn.request(
                        reqwest::Method::GET,
                        &format!("/v1/workflow-runs/{}", run.id),
                    ))
                    .await?;
            }
            show_run(&conn, &run)?;
            if wait && run.state != "succeeded" {
                bail!("workflow run {} {}", run.id, run.state);
            }
            Ok(())
        }
        WorkflowCommand::Status { id, conn } => {
            let run: WorkflowRunView = conn
                .send(conn.request(reqwest::Method::GET, &format!("/v1/workflow-runs/{id}")))
                .await?;
            show_run(&conn, &run)
        }
        WorkflowCommand::Cancel { id, conn } => {
            let run: WorkflowRunView = conn
                .send(conn.request(
                    reqwest::Method::POST,
                    &format!("/v1/workflow-runs/{id}/cancel"),
                ))
                .await?;
            show_run(&conn, &run)
        }
        WorkflowCommand::Delete { name, conn } => {
            let _: serde_json::Value = conn
                .send(conn.request(reqwest::Method::DELETE, &format!("/v1/workflows/{name}")))
                .await?;
            Ok(())
        }
    }
}

/// `caisson run submit --batch FILE`: reads every line first, so a line that
/// is not a run submission is reported before anything is queued.
async fn submit_batch(path: &std::path::Path, conn: &Conn) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use caisson_server::api::runs::{BatchSubmitted, MAX_BATCH_RUNS};
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let mut runs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let run: SubmitRun = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not a run submission", path.display(), n + 1))?;
        runs.push((n + 1, run));
    }
    if runs.is_empty() {
        bail!("{}: no runs to submit", path.display());
    }
    let mut submitted = Vec::with_capacity(runs.len());
    for chunk in runs.chunks(MAX_BATCH_RUNS) {
        let (first, last) = (chunk[0].0, chunk[chunk.len() - 1].0);
        let body =
            serde_json::json!({ "runs": chunk.iter().map(|(_, run)| run).collect::<Vec<_>>() });
        let answer: BatchSubmitted = conn
            .send(
                conn.request(reqwest::Method::POST, "/v1/runs/batch")
                    .json(&body),
            )
            .await
            .with_context(|| {
                format!(
                    "{} lines {first} to {last} were refused, none of them queued \
                     (runs[i] is the i-th run line of these){}",
                    path.display(),
                    if submitted.is_empty() {
                        String::new()
                    } else {
                        format!("; the {} runs before them were queued", submitted.len())
                    }
                )
            })?;
        submitted.extend(answer.runs);
    }
    if conn.json {
        return print_json(&BatchSubmitted { runs: submitted });
    }
    for run in &submitted {
        println!("{}", run.id);
    }
    Ok(())
}
