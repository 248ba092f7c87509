//! Traces and log lines: the `[telemetry]` table of `caisson.toml`, the
//! process's `tracing` subscriber (text or JSON log lines, and spans
//! exported over OTLP/HTTP when an endpoint is configured), and the trace
//! context a run carries from the process that queued it to the worker
//! that runs it.
//!
//! One trace per run. Its root is the `submit` span, made where the run is
//! queued (the API, a schedule, a workflow step); its W3C `traceparent` is
//! stored with the run (`runs.trace_parent`, migration 0008), so the worker
//! that claims it, in this process or another, continues the same trace:
//!
//! ```text
//! submit                      (where the run was queued)
//! ├── queue                   (runnable → claimed)
//! ├── claim                   (the worker's claim query)
//! └── run                     (one per attempt)
//!     ├── load                (fetch, compile or cache hit)
//!     ├── instantiate
//!     ├── execute
//!     │   └── objects.store.get, sql.connection.query, ...  (each host call)
//!     └── finish              (the outcome recorded)
//! ```
//!
//! A workflow run is one trace too: its root `workflow` span has ids
//! derived from the workflow run's id ([`workflow_context`]), so every
//! step's `submit`, made by whichever process moves the workflow on, is
//! its child without anything more being stored.
//!
//! Spans carry ids, names, labels, statement kinds, byte counts and error
//! cases, never a token, a password, input, output, a statement's text or
//! a parameter (see `caisson_host_api::observe`).

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SdkTracer, SdkTracerProvider,
    ShouldSample,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The `[telemetry]` table.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Where to send spans, over OTLP/HTTP with protobuf bodies: a
    /// collector's base URL (`http://collector:4318`, to which
    /// `/v1/traces` is added) or its full traces URL. Unset: no traces.
    pub otlp_endpoint: Option<String>,
    /// The share of runs traced, from 0 to 1: a run's trace is kept or
    /// dropped whole, decided once from its trace id.
    pub sampling: f64,
    /// The `service.name` the spans are exported under.
    pub service_name: String,
    /// How long one export may take before it is given up.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            sampling: 1.0,
            service_name: "caisson".into(),
            export_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            // `validate` refuses a credential in the URL; this runs first.
            .field(
                "otlp_endpoint",
                &self
                    .otlp_endpoint
                    .as_deref()
                    .map(|e| match url::Url::parse(e) {
                        Ok(url) if url.username().is_empty() && url.password().is_none() => {
                            url.to_string()
                        }
                        _ => "<redacted>".to_owned(),
                    }),
            )
            .field("sampling", &self.sampling)
            .field("service_name", &self.service_name)
            .field("export_timeout", &self.export_timeout)
            .finish()
    }
}

impl TelemetryConfig {
    /// Refuses values that could never work, naming the table and key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.sampling) {
            anyhow::bail!(
                "`[telemetry] sampling` must be between 0 and 1, not {}",
                self.sampling
            );
        }
        if self.service_name.trim().is_empty() {
            anyhow::bail!("`[telemetry] service_name` must not be empty");
        }
        if self.export_timeout.is_zero() {
            anyhow::bail!("`[telemetry] export_timeout` must be longer than 0s");
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            self.traces_url(endpoint)?;
        }
        Ok(())
    }

    /// The URL spans are posted to.
    fn traces_url(&self, endpoint: &str) -> anyhow::Result<String> {
        let url = url::Url::parse(endpoint).map_err(|e| {
            anyhow::anyhow!("`[telemetry] otlp_endpoint`: {e}; expected e.g. http://collector:4318")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            anyhow::bail!(
                "`[telemetry] otlp_endpoint` must be an http:// or https:// URL with a host"
            );
        }
        // A credential in the URL would travel into log lines and
        // error messages; collectors take tokens in headers.
        if !url.username().is_empty() || url.password().is_some() {
            anyhow::bail!("`[telemetry] otlp_endpoint` must not carry a user name or password");
        }
        Ok(if url.path() == "/" {
            format!("{}v1/traces", url.as_str())
        } else {
            url.to_string()
        })
    }
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, with the spans it happened in.
    #[default]
    Text,
    /// One JSON object per line, its spans' fields (`run_id`, `tenant`,
    /// `trace_id`) under `spans`.
    Json,
}

/// What [`init`] set up; [`Telemetry::shutdown`] sends the spans not yet
/// exported.
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("caisson: could not export the last spans: {e}");
        }
    }
}

/// This process's tracer and sampler, once traces are on.
struct Traces {
    tracer: SdkTracer,
    ratio: f64,
}

static TRACES: OnceLock<Traces> = OnceLock::new();

/// Whether spans are exported.
pub fn enabled() -> bool {
    TRACES.get().is_some()
}

/// The default log filter, when `CAISSON_LOG` sets none.
const DEFAULT_FILTER: &str = "warn,sqlx::postgres::notice=error";

/// Installs the process's `tracing` subscriber: log lines in `format` on
/// standard error, filtered by `CAISSON_LOG`; and, when `config` names an
/// endpoint, Caisson's spans exported over OTLP/HTTP. Call once, from the
/// binary.
pub fn init(config: &TelemetryConfig, format: LogFormat) -> anyhow::Result<Telemetry> {
    config.validate()?;
    // `target=level` directives, as `RUST_LOG` takes them. (`Targets`, a
    // plain function of a callsite, not `EnvFilter`: combined with
    // another per-layer filter, an `EnvFilter` left spans disabled.)
    let targets: Targets = match std::env::var("CAISSON_LOG") {
        Ok(text) => text
            .parse()
            .map_err(|e| anyhow::anyhow!("CAISSON_LOG={text:?}: {e}"))?,
        Err(_) => DEFAULT_FILTER.parse().expect("a valid default filter"),
    };
    // Caisson's own spans are always recorded, whatever the level of the
    // events shown: a warning inside a run then carries the run's span
    // (its id, tenant and trace id) on its line.
    //
    // One filter for the whole subscriber, not one per layer: per-layer
    // filters keep a per-thread note of what each layer enabled, which
    // `tracing::enabled!` checks (sqlx makes them on the runtime's
    // threads) leave behind, and the next span on that thread was then
    // dropped by the trace layer.
    //
    // Host calls are the hot path: without traces their spans are left to
    // `CAISSON_LOG` (a log line inside one still names the run).
    let traces_on = config.otlp_endpoint.is_some();
    let filter = by_callsite(move |meta| {
        (caisson_span(meta) && (traces_on || meta.name() != "host_call"))
            || targets.would_enable(meta.target(), meta.level())
    });
    let log_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };

    let (provider, trace_layer) = match &config.otlp_endpoint {
        Some(endpoint) => {
            // The exporter's reqwest, like object_store's, uses the
            // process's rustls provider, and panics without one.
            caisson_host_api::objects::install_crypto_provider();
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(config.traces_url(endpoint)?)
                .with_timeout(config.export_timeout)
                .build()
                .map_err(|e| anyhow::anyhow!("`[telemetry] otlp_endpoint`: {e}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    config.sampling,
                ))))
                .with_id_generator(Ids)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(config.service_name.clone())
                        .build(),
                )
                .build();
            let tracer = provider.tracer("caisson");
            let _ = TRACES.set(Traces {
                tracer: tracer.clone(),
                ratio: config.sampling,
            });
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_level(false);
            (Some(provider), Some(CaissonSpans(layer)))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(log_layer)
        .with(trace_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("could not set up logging: {e}"))?;
    Ok(Telemetry { provider })
}

/// The trace layer, given Caisson's spans only ([`caisson_span`]) and no
/// events: nothing a log message says becomes part of a trace.
struct CaissonSpans<L>(L);

impl<S, L> tracing_subscriber::Layer<S> for CaissonSpans<L>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: tracing_subscriber::Layer<S>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        // The other callbacks find no trace data on a span left out here,
        // and pass it by.
        if caisson_span(attrs.metadata()) {
            self.0.on_new_span(attrs, id, ctx);
        }
    }

    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_record(span, values, ctx);
    }

    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(
        &self,
        old: &tracing::span::Id,
        new: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_id_change(old, new, ctx);
    }

    // `OpenTelemetrySpanExt` finds the trace layer through this.
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else {
            // SAFETY: forwarded to the inner layer, which answers for its
            // own type ids.
            unsafe { self.0.downcast_raw(id) }
        }
    }
}

/// A filter that decides by callsite alone, once per callsite (events
/// nothing shows cost a cached no, not a call each time).
fn by_callsite<S: tracing::Subscriber>(
    enabled: impl Fn(&tracing::Metadata<'_>) -> bool + Clone + Send + Sync + 'static,
) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static {
    let at_callsite = enabled.clone();
    tracing_subscriber::filter::dynamic_filter_fn(move |meta, _| enabled(meta))
        .with_callsite_filter(move |meta| {
            if at_callsite(meta) {
                tracing::subscriber::Interest::always()
            } else {
                tracing::subscriber::Interest::never()
            }
        })
}

/// Caisson's spans at `info` and above: what is exported, and what log
/// lines show as their context. Events never become span events, so
/// nothing a log message says reaches a trace.
fn caisson_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("caisson") && *meta.level() <= Level::INFO
}

thread_local! {
    /// Ids the next span made on this thread must have: see [`Ids`].
    static FORCED_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except while [`with_ids`] makes a span with given ones (a
/// workflow's root, whose ids follow from the workflow run's id).
#[derive(Debug)]
struct Ids;

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        match FORCED_IDS.with(Cell::get) {
            Some((trace_id, _)) => trace_id,
            None => RandomIdGenerator::default().new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match FORCED_IDS.with(Cell::get) {
            Some((_, span_id)) => span_id,
            None => RandomIdGenerator::default().new_span_id(),
        }
    }
}

/// Runs `make` (which starts one root span) with its ids forced.
fn with_ids<T>(ids: (TraceId, SpanId), make: impl FnOnce() -> T) -> T {
    FORCED_IDS.with(|f| f.set(Some(ids)));
    let made = make();
    FORCED_IDS.with(|f| f.set(None));
    made
}

/// The trace and root span ids of workflow run `id`: any process can
/// compute them, so none has to store them.
fn workflow_ids(id: &str) -> (TraceId, SpanId) {
    let hash = Sha256::digest(format!("caisson workflow run {id}").as_bytes());
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    trace.copy_from_slice(&hash[..16]);
    span.copy_from_slice(&hash[16..24]);
    (TraceId::from_bytes(trace), SpanId::from_bytes(span))
}

/// The context of workflow run `id`'s root span, for its steps' runs.
/// Sampled as the root itself was: the ratio's decision for the trace id.
pub fn workflow_context(id: &str) -> Option<Context> {
    let traces = TRACES.get()?;
    let (trace_id, span_id) = workflow_ids(id);
    let decision = Sampler::TraceIdRatioBased(traces.ratio)
        .should_sample(None, trace_id, "workflow", &SpanKind::Internal, &[], &[])
        .decision;
    let flags = if decision == SamplingDecision::RecordAndSample {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let cx = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    Some(Context::new().with_remote_span_context(cx))
}

/// Workflow run `id`'s trace id, when traces are on and it is sampled.
pub fn workflow_trace_id(id: &str) -> Option<String> {
    let cx = workflow_context(id)?;
    let sc = cx.span().span_context().clone();
    sc.is_sampled().then(|| sc.trace_id().to_string())
}

/// Exports workflow run `id`'s root span, once, when the run is created.
pub fn workflow_started(id: &str, tenant: &str, workflow: &str) {
    let Some(traces) = TRACES.get() else {
        return;
    };
    let mut span = with_ids(workflow_ids(id), || {
        traces
            .tracer
            .span_builder("workflow")
            .with_attributes([
                KeyValue::new("workflow_run_id", id.to_owned()),
                KeyValue::new("tenant", tenant.to_owned()),
                KeyValue::new("workflow", workflow.to_owned()),
            ])
            .start_with_context(&traces.tracer, &Context::new())
    });
    opentelemetry::trace::Span::end(&mut span);
}

/// The `submit` span of a run being queued for `tenant`: the root of the
/// run's trace, or a child of its workflow's root. Its [`traceparent`]
/// is stored with the run; `run_id` is recorded once the run has one.
pub fn submit_span(tenant: &str, module: &str, workflow_run_id: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "submit",
        run_id = tracing::field::Empty,
        tenant = %tenant,
        module = %module,
        trace_id = tracing::field::Empty,
        created = tracing::field::Empty,
    );
    if let Some(cx) = workflow_run_id.and_then(workflow_context) {
        let _ = span.set_parent(cx);
    }
    if let Some(trace_id) = trace_id(&span) {
        span.record("trace_id", trace_id.as_str());
    }
    span
}

/// `span`'s trace id, in hex, when traces are on.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// `span`'s W3C `traceparent`, when traces are on.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// A stored `traceparent`, read back.
fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
    let cx = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    cx.is_valid().then_some(cx)
}

/// The trace id a run's API view shows: its stored trace's, when that
/// trace was sampled (an unsampled trace has nothing to look at).
pub fn sampled_trace_id(trace_parent: Option<&str>) -> Option<String> {
    let cx = parse_traceparent(trace_parent?)?;
    cx.is_sampled().then(|| cx.trace_id().to_string())
}

/// Makes `span` (a worker's `run` span) a child of the run's stored
/// `submit`, and returns the trace id, when traces are on and the run has
/// a trace.
pub fn continue_trace(span: &tracing::Span, trace_parent: Option<&str>) -> Option<String> {
    TRACES.get()?;
    let cx = parse_traceparent(trace_parent?)?;
    let trace_id = cx.trace_id().to_string();
    let _ = span.set_parent(Context::new().with_remote_span_context(cx));
    Some(trace_id)
}

/// Exports a span that already ended, from `start` to `end`, as a child of
/// the run's stored `submit`: the time a run spent queued, and its claim,
/// both known only once the worker has it.
fn past_span(
    name: &'static str,
    trace_parent: Option<&str>,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
) {
    let Some(traces) = TRACES.get() else {
        return;
    };
    let Some(parent) = trace_parent.and_then(parse_traceparent) else {
        return;
    };
    let parent = Context::new().with_remote_span_context(parent);
    let mut span = traces
        .tracer
        .span_builder(name)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(&traces.tracer, &parent);
    opentelemetry::trace::Span::end_with_timestamp(&mut span, end.max(start));
}

/// Exports a claimed run's `queue` span (from `runnable_ms`, when it
/// could first start, to the claim) and `claim` span (the worker's claim
/// query, from `claim_started` to now), in its trace.
pub fn queued_and_claimed(
    trace_parent: Option<&str>,
    run_id: &str,
    worker: &str,
    runnable_ms: i64,
    claim_started: SystemTime,
) {
    let claimed = SystemTime::now();
    let runnable = SystemTime::UNIX_EPOCH + Duration::from_millis(runnable_ms.max(0) as u64);
    let run = KeyValue::new("run_id", run_id.to_owned());
    past_span(
        "queue",
        trace_parent,
        runnable.min(claim_started),
        claim_started,
        vec![run.clone()],
    );
    past_span(
        "claim",
        trace_parent,
        claim_started,
        claimed,
        vec![run, KeyValue::new("worker", worker.to_owned())],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_mistakes_name_the_table_and_key() {
        let config = |text: &str| -> TelemetryConfig { toml::from_str(text).unwrap() };
        assert!(TelemetryConfig::default().validate().is_ok());
        for (text, key) in [
            ("sampling = 1.5", "`[telemetry] sampling`"),
            ("sampling = -0.1", "`[telemetry] sampling`"),
            ("service_name = \" \"", "`[telemetry] service_name`"),
            (
                "otlp_endpoint = \"collector:4318\"",
                "`[telemetry] otlp_endpoint`",
            ),
            (
                "otlp_endpoint = \"ftp://collector\"",
                "`[telemetry] otlp_endpoint`",
            ),
            (
                "otlp_endpoint = \"http://u:pw-secret@collector:4318\"",
                "`[telemetry] otlp_endpoint`",
            ),
            ("export_timeout = \"0s\"", "`[telemetry] export_timeout`"),
        ] {
            let error = config(text).validate().unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
            assert!(!error.contains("pw-secret"), "{error}");
        }
        let with = config("otlp_endpoint = \"http://127.0.0.1:4318\"\nsampling = 0.1");
        assert_eq!(
            with.traces_url(with.otlp_endpoint.as_deref().unwrap())
                .unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        let full = config("otlp_endpoint = \"https://c.example/otlp/v1/traces\"");
        assert_eq!(
            full.traces_url(full.otlp_endpoint.as_deref().unwrap())
                .unwrap(),
            "https://c.example/otlp/v1/traces"
        );
    }

    #[test]
    fn traceparents_round_trip_and_only_sampled_traces_show() {
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(sampled).unwrap();
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            sampled_trace_id(Some(sampled)).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let dropped = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(sampled_trace_id(Some(dropped)), None);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn workflow_ids_are_the_same_in_every_process_and_differ_by_run() {
        assert_eq!(workflow_ids("w1"), workflow_ids("w1"));
        assert_ne!(workflow_ids("w1").0, workflow_ids("w2").0);
        assert_ne!(workflow_ids("w1").0, TraceId::INVALID);
    }
}
