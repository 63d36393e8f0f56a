//! Every metric Aegis exports, defined here and nowhere else, and the Prometheus endpoint that
//! serves them (`--monitoring_config_file`, TF Serving's `MonitoringConfig`).
//!
//! Two families:
//! * TF Serving's, under its names (`:tensorflow:serving:...`, `:tensorflow:cc:saved_model:...`),
//!   labels and units (microseconds), so that existing dashboards keep working. Request-level
//!   ones count the TF Serving APIs (REST and gRPC) only, as TF Serving has no other.
//! * Aegis's own, `aegis_*`, in seconds, for every protocol.
//!
//! Labels stay bounded: `model` / `version` / `signature` are set only once the request resolved
//! them to something that is served (an unknown model name is recorded as `""`), `protocol`,
//! `api` and `outcome` come from fixed lists, and a version's `aegis_*` series are dropped when
//! it is released (a request still finishing then can leave one count behind).
//!
//! A request is recorded once, by [`observe`], which each protocol adapter wraps around its
//! handling; handlers only note what they resolved ([`note_version`], [`note_signature`],
//! [`note_error`]) through a task-local, a no-op outside an observed request. Queue, run and batch
//! size come from the executors ([`aegis_batch::ExecutorObserver`]), load times from the model
//! manager ([`aegis_models::LoadObserver`]); version states and the process's memory are read
//! when the endpoint is scraped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aegis_core::{Error, ErrorKind};
use aegis_models::{LoadObserver, ModelManager, ServedVersion};
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// TF Serving's default metrics path.
pub const DEFAULT_PATH: &str = "/monitoring/prometheus/metrics";

/// The wire protocol a request came in on (label `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    TfsRest,
    TfsGrpc,
    V2Rest,
    V2Grpc,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::TfsRest => "tfs_rest",
            Protocol::TfsGrpc => "tfs_grpc",
            Protocol::V2Rest => "v2_rest",
            Protocol::V2Grpc => "v2_grpc",
        }
    }

    /// TF Serving's `entrypoint` label; `None` for the KServe v2 protocol.
    fn tf_entrypoint(self) -> Option<&'static str> {
        match self {
            Protocol::TfsRest => Some("REST"),
            Protocol::TfsGrpc => Some("GRPC"),
            Protocol::V2Rest | Protocol::V2Grpc => None,
        }
    }
}

/// `prometheus_config` of TF Serving's text-format `MonitoringConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoringConfig {
    pub enable: bool,
    /// Where the REST listener serves the metrics (exact match).
    pub path: String,
}

impl MonitoringConfig {
    /// Parses `prometheus_config { enable: true path: "/metrics" }` (protobuf text format; `:`
    /// before a message, `,` / `;` separators and `#` comments allowed). An empty or missing path
    /// is [`DEFAULT_PATH`]; unknown fields are errors, as in TF Serving.
    pub fn parse(text: &str) -> Result<MonitoringConfig, String> {
        let tokens = tokenize(text)?;
        let mut pos = 0;
        let fields = parse_fields(&tokens, &mut pos, 0)?;
        let mut config = MonitoringConfig {
            enable: false,
            path: String::new(),
        };
        for (name, value) in fields {
            match (name.as_str(), value) {
                ("prometheus_config", Value::Message(inner)) => {
                    for (name, value) in inner {
                        match (name.as_str(), value) {
                            ("enable", Value::Scalar(v)) => {
                                config.enable = match v.as_str() {
                                    "true" | "True" | "t" | "1" => true,
                                    "false" | "False" | "f" | "0" => false,
                                    _ => return Err(format!("enable: not a bool: {v}")),
                                }
                            }
                            ("path", Value::Str(p)) => config.path = p,
                            (name, _) => {
                                return Err(format!(
                                    "unknown or malformed field {name} in prometheus_config"
                                ))
                            }
                        }
                    }
                }
                (name, _) => {
                    return Err(format!(
                        "unknown or malformed field {name} in MonitoringConfig"
                    ))
                }
            }
        }
        if config.path.is_empty() {
            config.path = DEFAULT_PATH.to_string();
        }
        if !config.path.starts_with('/') {
            return Err(format!("path must start with '/': {}", config.path));
        }
        Ok(config)
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(char),
}

#[derive(Debug)]
enum Value {
    Scalar(String),
    Str(String),
    Message(Vec<(String, Value)>),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            while chars.next_if(|&c| c != '\n').is_some() {}
        } else if matches!(c, '{' | '}' | ':' | ',' | ';') {
            out.push(Token::Punct(c));
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated string".into()),
                    Some(q) if q == c => break,
                    Some('\\') => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(e) => s.push(e),
                        None => return Err("unterminated string".into()),
                    },
                    Some(ch) => s.push(ch),
                }
            }
            out.push(Token::Str(s));
        } else if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' {
            let mut s = String::new();
            while let Some(ch) =
                chars.next_if(|&ch| ch.is_alphanumeric() || ch == '_' || ch == '-' || ch == '.')
            {
                s.push(ch);
            }
            out.push(Token::Ident(s));
        } else {
            return Err(format!("unexpected character '{c}'"));
        }
    }
    Ok(out)
}

fn parse_fields(
    tokens: &[Token],
    pos: &mut usize,
    depth: usize,
) -> Result<Vec<(String, Value)>, String> {
    let mut fields = Vec::new();
    loop {
        let name = match tokens.get(*pos) {
            None if depth == 0 => return Ok(fields),
            Some(Token::Punct('}')) if depth > 0 => {
                *pos += 1;
                return Ok(fields);
            }
            Some(Token::Ident(name)) => name.clone(),
            other => return Err(format!("expected a field name, found {other:?}")),
        };
        *pos += 1;
        let colon = tokens.get(*pos) == Some(&Token::Punct(':'));
        if colon {
            *pos += 1;
        }
        let value = match tokens.get(*pos) {
            Some(Token::Punct('{')) => {
                *pos += 1;
                Value::Message(parse_fields(tokens, pos, depth + 1)?)
            }
            Some(Token::Str(s)) if colon => {
                *pos += 1;
                Value::Str(s.clone())
            }
            Some(Token::Ident(s)) if colon => {
                *pos += 1;
                Value::Scalar(s.clone())
            }
            other => return Err(format!("expected a value for {name}, found {other:?}")),
        };
        if matches!(tokens.get(*pos), Some(Token::Punct(',' | ';'))) {
            *pos += 1;
        }
        fields.push((name, value));
    }
}

/// Every metric, registered in one registry.
struct Metrics {
    registry: Registry,
    tf_request_count: IntCounterVec,
    tf_request_latency: HistogramVec,
    tf_runtime_latency: HistogramVec,
    tf_queuing_latency: HistogramVec,
    tf_processed_batch_size: Histogram,
    tf_load_attempt_count: IntCounterVec,
    tf_load_latency: IntCounterVec,
    request_duration: HistogramVec,
    in_flight: IntGaugeVec,
    queue_duration: HistogramVec,
    run_duration: HistogramVec,
    batch_size: HistogramVec,
    load_duration: HistogramVec,
    version_state: IntGaugeVec,
    resident_memory: IntGauge,
    connections: IntGaugeVec,
}

/// Seconds buckets of Aegis's latency histograms: 50 µs to 30 s.
const SECONDS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Seconds buckets of model load times: 10 ms to 10 min.
const LOAD_SECONDS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

fn buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    exponential_buckets(start, factor, count).unwrap_or_default()
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        // TF Serving's latency buckets: 10 µs x 1.8^i, 33 of them; queueing 100 µs x 1.2^i, 52.
        let tf_us = || buckets(10.0, 1.8, 33);
        let tf_batch = Histogram::with_opts(
            HistogramOpts::new(
                ":tensorflow:serving:batching_session:processed_batch_size",
                "Rows in each executed batch (padding included).",
            )
            .buckets(buckets(1.0, 2.0, 15)),
        )?;
        registry.register(Box::new(tf_batch.clone()))?;
        let resident_memory = IntGauge::new(
            "aegis_process_resident_memory_bytes",
            "Resident memory of the server process, in bytes.",
        )?;
        registry.register(Box::new(resident_memory.clone()))?;
        Ok(Metrics {
            tf_request_count: counter(
                ":tensorflow:serving:request_count",
                "TF Serving API requests by model and status code.",
                &["model_name", "status"],
            )?,
            tf_request_latency: histogram(
                ":tensorflow:serving:request_latency",
                "End-to-end latency of successful TF Serving API requests, in microseconds.",
                &["model_name", "API", "entrypoint"],
                tf_us(),
            )?,
            tf_runtime_latency: histogram(
                ":tensorflow:serving:runtime_latency",
                "Time of each session run, in microseconds.",
                &["model_name", "API", "runtime"],
                tf_us(),
            )?,
            tf_queuing_latency: histogram(
                ":tensorflow:serving:batching_session:queuing_latency",
                "Time requests wait for a worker, in microseconds.",
                &["thread_pool_name"],
                buckets(100.0, 1.2, 52),
            )?,
            tf_processed_batch_size: tf_batch,
            tf_load_attempt_count: counter(
                ":tensorflow:cc:saved_model:load_attempt_count",
                "Model version load attempts by version directory and status (success, fail).",
                &["model_path", "status"],
            )?,
            tf_load_latency: counter(
                ":tensorflow:cc:saved_model:load_latency",
                "Total time spent loading each version directory, in microseconds.",
                &["model_path"],
            )?,
            request_duration: histogram(
                "aegis_request_duration_seconds",
                "Requests from arrival to answer, by protocol, API, resolved model, version and \
                 signature, and outcome (ok or the error kind).",
                &[
                    "protocol",
                    "api",
                    "model",
                    "version",
                    "signature",
                    "outcome",
                ],
                SECONDS.to_vec(),
            )?,
            in_flight: gauge(
                "aegis_requests_in_flight",
                "Requests being handled now, by protocol.",
                &["protocol"],
            )?,
            queue_duration: histogram(
                "aegis_queue_duration_seconds",
                "Time requests wait in a version's queue before their run starts.",
                &["model", "version"],
                SECONDS.to_vec(),
            )?,
            run_duration: histogram(
                "aegis_run_duration_seconds",
                "Time of each runtime session run (batch merge and split included).",
                &["model", "version"],
                SECONDS.to_vec(),
            )?,
            batch_size: histogram(
                "aegis_batch_size",
                "Rows in each session run (padding included).",
                &["model", "version"],
                buckets(1.0, 2.0, 12),
            )?,
            load_duration: histogram(
                "aegis_model_load_duration_seconds",
                "Time to load a model version (warmup included), by outcome (ok, error).",
                &["model", "outcome"],
                LOAD_SECONDS.to_vec(),
            )?,
            version_state: gauge(
                "aegis_model_version_state",
                "1 for the current state of each known model version (START, LOADING, \
                 AVAILABLE, UNLOADING, END).",
                &["model", "version", "state"],
            )?,
            resident_memory,
            connections: gauge(
                "aegis_open_connections",
                "Open client connections, by listener (rest, grpc).",
                &["listener"],
            )?,
            registry,
        })
    }
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        // The names and labels are constants checked by the unit tests: failing here is a bug.
        Metrics::new().expect("metric definitions are valid")
    })
}

/// Renders every metric in Prometheus's text format, refreshing the ones read at scrape time
/// (version states, resident memory).
pub(crate) fn render(manager: &ModelManager) -> (String, Vec<u8>) {
    let m = metrics();
    m.version_state.reset();
    for model in manager.models() {
        for v in &model.versions {
            m.version_state
                .with_label_values(&[model.name.as_str(), &v.version.to_string(), v.state.name()])
                .set(1);
        }
    }
    if let Some(rss) = resident_memory_bytes() {
        m.resident_memory.set(rss);
    }
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&m.registry.gather(), &mut body) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    (encoder.format_type().to_string(), body)
}

/// `VmRSS` of `/proc/self/status`; `None` where there is no procfs.
fn resident_memory_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Counts one open connection of `listener` (`rest`, `grpc`) until dropped.
pub(crate) struct ConnectionGuard(IntGauge);

impl ConnectionGuard {
    pub(crate) fn open(listener: &str) -> ConnectionGuard {
        let g = metrics().connections.with_label_values(&[listener]);
        g.inc();
        ConnectionGuard(g)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a handler resolved while serving the observed request.
#[derive(Debug, Default)]
struct Target {
    model: Option<(String, i64)>,
    signature: Option<String>,
    error: Option<ErrorKind>,
}

tokio::task_local! {
    static TARGET: RefCell<Target>;
}

/// Notes the version serving the current request (labels `model`, `version`).
pub(crate) fn note_version(served: &ServedVersion) {
    let _ = TARGET.try_with(|t| t.borrow_mut().model = Some((served.name.clone(), served.version)));
}

/// Notes the signature the current request runs, once it is known to exist (label `signature`).
pub(crate) fn note_signature(name: &str) {
    let _ = TARGET.try_with(|t| t.borrow_mut().signature = Some(name.to_string()));
}

/// Notes the signature a Classify / Regress request names (empty: `serving_default`) when
/// `served` has it; the model layer looks it up again when it runs, with its own error.
pub(crate) fn note_signature_of(served: &ServedVersion, name: &str) {
    let name = if name.is_empty() {
        aegis_core::DEFAULT_SIGNATURE
    } else {
        name
    };
    if served.signature(name).is_some() {
        note_signature(name);
    }
}

/// Notes the error kind behind a failed request's answer (REST answers carry only a status).
pub(crate) fn note_error(error: &Error) {
    let _ = TARGET.try_with(|t| t.borrow_mut().error = Some(error.kind));
}

/// Runs one request's handling and records it once: duration, count and outcome in Aegis's and
/// (for the TF Serving APIs) TF Serving's metrics, the in-flight gauge, and one debug log line.
/// `outcome` tells the error kind of a failed answer; a kind noted by [`note_error`] wins. A
/// request dropped before it finishes (the client went away) is recorded as `cancelled`.
pub(crate) async fn observe<F: Future>(
    protocol: Protocol,
    api: &'static str,
    work: F,
    outcome: impl FnOnce(&F::Output) -> Option<ErrorKind>,
) -> F::Output {
    let mut record = Record::start(protocol, api);
    let (out, target) = TARGET
        .scope(RefCell::new(Target::default()), async {
            let out = work.await;
            (out, TARGET.with(|t| t.take()))
        })
        .await;
    let kind = outcome(&out).map(|k| target.error.unwrap_or(k));
    record.finish(target, kind);
    out
}

/// One request being observed; recorded on [`Record::finish`] or, if dropped first, as
/// cancelled.
struct Record {
    protocol: Protocol,
    api: &'static str,
    started: Instant,
    in_flight: IntGauge,
    finished: bool,
}

impl Record {
    fn start(protocol: Protocol, api: &'static str) -> Record {
        let in_flight = metrics().in_flight.with_label_values(&[protocol.name()]);
        in_flight.inc();
        Record {
            protocol,
            api,
            started: Instant::now(),
            in_flight,
            finished: false,
        }
    }

    fn finish(&mut self, target: Target, kind: Option<ErrorKind>) {
        self.finished = true;
        self.in_flight.dec();
        let took = self.started.elapsed();
        let m = metrics();
        let (model, version) = match &target.model {
            Some((m, v)) => (m.as_str(), v.to_string()),
            None => ("", String::new()),
        };
        let signature = target.signature.as_deref().unwrap_or("");
        let outcome = kind.map_or("ok", outcome_label);
        m.request_duration
            .with_label_values(&[
                self.protocol.name(),
                self.api,
                model,
                &version,
                signature,
                outcome,
            ])
            .observe(took.as_secs_f64());
        if let Some(entrypoint) = self.protocol.tf_entrypoint() {
            let status = kind.map_or("OK", ErrorKind::name);
            m.tf_request_count.with_label_values(&[model, status]).inc();
            if kind.is_none() {
                m.tf_request_latency
                    .with_label_values(&[model, self.api, entrypoint])
                    .observe(micros(took));
            }
        }
        tracing::debug!(
            protocol = self.protocol.name(),
            api = self.api,
            model,
            version = %version,
            outcome,
            us = took.as_micros() as u64,
            "request"
        );
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(Target::default(), Some(ErrorKind::Cancelled));
        }
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The `outcome` label of an error kind: its name in lower case.
fn outcome_label(kind: ErrorKind) -> &'static str {
    use ErrorKind::*;
    match kind {
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// The error kind behind an HTTP status that no handler explained (see [`note_error`]).
pub(crate) fn kind_of_status(status: u16) -> Option<ErrorKind> {
    use ErrorKind::*;
    Some(match status {
        100..=399 => return None,
        400 | 411 | 415 => InvalidArgument,
        401 => Unauthenticated,
        403 => PermissionDenied,
        404 | 405 => NotFound,
        409 => Aborted,
        413 | 429 => ResourceExhausted,
        499 => Cancelled,
        501 => Unimplemented,
        503 => Unavailable,
        504 => DeadlineExceeded,
        _ => Internal,
    })
}

/// The executor hooks of one model version, with their label sets resolved once.
struct VersionHooks {
    queue: Histogram,
    run: Histogram,
    batch: Histogram,
    tf_queue: Histogram,
    tf_runtime: Histogram,
}

impl aegis_batch::ExecutorObserver for VersionHooks {
    fn queued(&self, waited: Duration) {
        self.queue.observe(waited.as_secs_f64());
        self.tf_queue.observe(micros(waited));
    }

    fn ran(&self, took: Duration, batch_size: usize) {
        self.run.observe(took.as_secs_f64());
        self.tf_runtime.observe(micros(took));
        self.batch.observe(batch_size as f64);
        metrics().tf_processed_batch_size.observe(batch_size as f64);
    }
}

/// The model manager's hooks: executor metrics per version and load metrics.
#[derive(Debug, Default)]
pub struct ModelMetrics;

impl ModelMetrics {
    /// The hooks to put in [`aegis_models::ManagerOptions::observer`].
    pub fn observer() -> Arc<dyn LoadObserver> {
        Arc::new(ModelMetrics)
    }
}

impl LoadObserver for ModelMetrics {
    fn executor(&self, model: &str, version: i64, platform: &str) -> aegis_batch::Observer {
        let m = metrics();
        let version = version.to_string();
        let labels = [model, version.as_str()];
        // TF Serving's `API` label is the request's method, which a shared batch does not
        // have: it is left empty.
        let hooks = VersionHooks {
            queue: m.queue_duration.with_label_values(&labels),
            run: m.run_duration.with_label_values(&labels),
            batch: m.batch_size.with_label_values(&labels),
            tf_queue: m.tf_queuing_latency.with_label_values(&[model]),
            tf_runtime: m
                .tf_runtime_latency
                .with_label_values(&[model, "", platform]),
        };
        aegis_batch::Observer(Some(Arc::new(hooks)))
    }

    fn loaded(
        &self,
        model: &str,
        _version: i64,
        path: &Path,
        took: Duration,
        error: Option<&Error>,
    ) {
        let m = metrics();
        let path = path.display().to_string();
        let (status, outcome) = match error {
            None => ("success", "ok"),
            Some(_) => ("fail", "error"),
        };
        m.tf_load_attempt_count
            .with_label_values(&[path.as_str(), status])
            .inc();
        m.tf_load_latency
            .with_label_values(&[path.as_str()])
            .inc_by(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        m.load_duration
            .with_label_values(&[model, outcome])
            .observe(took.as_secs_f64());
    }

    /// Drops Aegis's series of a released version. TF Serving's own families are labelled by
    /// model (and load path) only and stay, as they do in TF Serving.
    fn unloaded(&self, model: &str, version: i64) {
        let m = metrics();
        let version = version.to_string();
        let labels = HashMap::from([("model", model), ("version", version.as_str())]);
        for per_version in [&m.queue_duration, &m.run_duration, &m.batch_size] {
            let _ = per_version.remove(&labels);
        }
        // Request series carry more labels, whose values are found among the collected series.
        for family in prometheus::core::Collector::collect(&m.request_duration) {
            for series in family.get_metric() {
                let pairs: HashMap<&str, &str> = series
                    .get_label()
                    .iter()
                    .map(|p| (p.name(), p.value()))
                    .collect();
                if labels.iter().all(|(k, v)| pairs.get(k) == Some(v)) {
                    let _ = m.request_duration.remove(&pairs);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn definitions_register() {
        Metrics::new().unwrap();
    }

    #[test]
    fn monitoring_config_text() {
        let c = MonitoringConfig::parse(
            "prometheus_config {\n  enable: true,\n  path: \"/metrics\" # here\n}\n",
        )
        .unwrap();
        assert_eq!(
            c,
            MonitoringConfig {
                enable: true,
                path: "/metrics".into()
            }
        );
        let c = MonitoringConfig::parse("prometheus_config: { enable: true }").unwrap();
        assert_eq!(c.path, DEFAULT_PATH);
        let c = MonitoringConfig::parse("").unwrap();
        assert!(!c.enable);
        for bad in [
            "prometheus_config { enable: maybe }",
            "prometheus_config { enable: true",
            "prometheus_config { port: 1 }",
            "other_config { }",
            "prometheus_config { path: \"metrics\" }",
        ] {
            assert!(MonitoringConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_request_is_recorded_once_with_what_it_noted() {
        let before = metrics()
            .request_duration
            .with_label_values(&["v2_rest", "test", "", "", "sig", "not_found"])
            .get_sample_count();
        let out = observe(
            Protocol::V2Rest,
            "test",
            async {
                note_signature("sig");
                note_error(&Error::not_found("x"));
                7
            },
            |_| Some(ErrorKind::Internal),
        )
        .await;
        assert_eq!(out, 7);
        let after = metrics()
            .request_duration
            .with_label_values(&["v2_rest", "test", "", "", "sig", "not_found"])
            .get_sample_count();
        assert_eq!(after, before + 1);
    }
}
