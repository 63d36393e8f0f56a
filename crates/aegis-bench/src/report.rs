//! Outcomes: per-worker recorders (a latency histogram and error counts, merged at the end) and
//! the summary printed for people or as JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Why a request did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// An HTTP status other than 200.
    Http(u16),
    /// A gRPC status other than OK, as the server sent it.
    Grpc(tonic::Code),
    /// Connecting, writing or reading failed.
    Transport,
    /// No complete response within `--timeout-ms`.
    Timeout,
}

impl fmt::Display for FailureKind {
    /// The stable key in `errors_by_kind`: `http_<status>`, `grpc_<code in snake case>`,
    /// `transport` or `timeout`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Http(s) => write!(f, "http_{s}"),
            FailureKind::Grpc(c) => f.write_str(match c {
                tonic::Code::Ok => "grpc_ok",
                tonic::Code::Cancelled => "grpc_cancelled",
                tonic::Code::Unknown => "grpc_unknown",
                tonic::Code::InvalidArgument => "grpc_invalid_argument",
                tonic::Code::DeadlineExceeded => "grpc_deadline_exceeded",
                tonic::Code::NotFound => "grpc_not_found",
                tonic::Code::AlreadyExists => "grpc_already_exists",
                tonic::Code::PermissionDenied => "grpc_permission_denied",
                tonic::Code::ResourceExhausted => "grpc_resource_exhausted",
                tonic::Code::FailedPrecondition => "grpc_failed_precondition",
                tonic::Code::Aborted => "grpc_aborted",
                tonic::Code::OutOfRange => "grpc_out_of_range",
                tonic::Code::Unimplemented => "grpc_unimplemented",
                tonic::Code::Internal => "grpc_internal",
                tonic::Code::Unavailable => "grpc_unavailable",
                tonic::Code::DataLoss => "grpc_data_loss",
                tonic::Code::Unauthenticated => "grpc_unauthenticated",
            }),
            FailureKind::Transport => f.write_str("transport"),
            FailureKind::Timeout => f.write_str("timeout"),
        }
    }
}

/// A failed request: its kind and what the server or the transport said.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// Latencies from 1 µs to an hour with 3 significant digits, in microseconds.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What one worker saw; merged into one at the end, so workers never share a lock.
#[derive(Debug, Clone)]
pub struct Recorder {
    latency_us: Histogram<u64>,
    errors: HashMap<FailureKind, u64>,
    samples: HashMap<FailureKind, String>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency_us: histogram(),
            errors: HashMap::new(),
            samples: HashMap::new(),
        }
    }
}

impl Recorder {
    pub fn success(&mut self, latency: Duration) {
        let us = (latency.as_nanos() / 1000).clamp(1, 3_600_000_000) as u64;
        self.latency_us.saturating_record(us);
    }

    pub fn failure(&mut self, failure: Failure) {
        *self.errors.entry(failure.kind).or_default() += 1;
        self.samples.entry(failure.kind).or_insert(failure.message);
    }

    pub fn record(&mut self, outcome: Result<(), Failure>, latency: Duration) {
        match outcome {
            Ok(()) => self.success(latency),
            Err(f) => self.failure(f),
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        let _ = self.latency_us.add(&other.latency_us);
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for (k, m) in other.samples {
            self.samples.entry(k).or_insert(m);
        }
    }

    pub fn successes(&self) -> u64 {
        self.latency_us.len()
    }

    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// How the load was offered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `--concurrency` workers, each sending its next request when the last one ends.
    Closed,
    /// Requests sent on a fixed schedule of `--rate` per second.
    Open,
}

/// Latency percentiles of the successful requests, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

/// The result of a run; serialized as is by `--json` (field names are stable).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run's parameters, as the first fields of the JSON object.
    #[serde(flatten)]
    pub run: RunInfo,
    /// Requests completed in the measured window (after the warm-up): `ok + errors`.
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// Error counts by kind: `http_<status>`, `grpc_<code>`, `transport`, `timeout`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first message seen for each error kind.
    pub error_samples: BTreeMap<String, String>,
    /// Seconds from the end of the warm-up to the last measured response.
    pub duration_s: f64,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// Completed requests (successful or not) per second.
    pub requests_per_s: f64,
    /// Successful rows per second (`throughput_rps * batch`).
    pub rows_per_s: f64,
    /// Of successful requests; `null` when none succeeded.
    pub latency_ms: Option<Latency>,
    /// CPU seconds the client itself used over the measured window (Linux, 10 ms resolution;
    /// `null` elsewhere): with `client_cpu_us_per_request`, how far the client is from being the
    /// bottleneck.
    pub client_cpu_s: Option<f64>,
    /// `client_cpu_s` per completed request, in microseconds.
    pub client_cpu_us_per_request: Option<f64>,
}

/// Run parameters, echoed in the report.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub protocol: String,
    pub target: String,
    pub model: String,
    pub version: Option<u64>,
    pub signature: Option<String>,
    pub mode: Mode,
    /// Closed loop: concurrent workers. Open loop: `null`.
    pub concurrency: Option<usize>,
    /// Open loop: the requests per second asked for. Closed loop: `null`.
    pub rate: Option<f64>,
    pub connections: usize,
    pub threads: usize,
    /// Rows (batch size) of each request.
    pub batch: usize,
    /// Bytes of the encoded request body (protobuf message for gRPC).
    pub request_bytes: usize,
}

impl Report {
    pub fn new(info: RunInfo, rec: &Recorder, duration: Duration, cpu: Option<Duration>) -> Report {
        let secs = duration.as_secs_f64();
        let per_s = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
        let ok = rec.successes();
        let errors = rec.errors();
        let h = &rec.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency = (ok > 0).then(|| Latency {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        });
        let rows_per_s = per_s((ok * info.batch as u64) as f64);
        Report {
            run: info,
            requests: ok + errors,
            ok,
            errors,
            errors_by_kind: rec
                .errors
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            error_samples: rec
                .samples
                .iter()
                .map(|(k, m)| (k.to_string(), m.clone()))
                .collect(),
            duration_s: secs,
            throughput_rps: per_s(ok as f64),
            requests_per_s: per_s((ok + errors) as f64),
            rows_per_s,
            latency_ms: latency,
            client_cpu_s: cpu.map(|c| c.as_secs_f64()),
            client_cpu_us_per_request: cpu
                .filter(|_| ok + errors > 0)
                .map(|c| c.as_secs_f64() * 1e6 / (ok + errors) as f64),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let run = &self.run;
        let load = match run.mode {
            Mode::Closed => format!("closed loop, concurrency {}", run.concurrency.unwrap_or(0)),
            Mode::Open => format!("open loop, {} req/s", run.rate.unwrap_or(0.0)),
        };
        let version = run
            .version
            .map(|v| format!(" version {v}"))
            .unwrap_or_default();
        writeln!(
            f,
            "{} {}  model {}{}  {load}, {} connections, {} client threads",
            run.protocol, run.target, run.model, version, run.connections, run.threads
        )?;
        writeln!(
            f,
            "  batch {}, request {} bytes",
            run.batch, run.request_bytes
        )?;
        writeln!(
            f,
            "  requests    {} ({} ok, {} errors) in {:.3} s",
            self.requests, self.ok, self.errors, self.duration_s
        )?;
        writeln!(
            f,
            "  throughput  {:.1} req/s, {:.1} rows/s",
            self.throughput_rps, self.rows_per_s
        )?;
        match &self.latency_ms {
            Some(l) => writeln!(
                f,
                "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
                l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
            )?,
            None => writeln!(f, "  latency ms  (no successful request)")?,
        }
        if let (Some(cpu), Some(per)) = (self.client_cpu_s, self.client_cpu_us_per_request) {
            writeln!(
                f,
                "  client cpu  {cpu:.2} s, {per:.1} us/request (this tool's own cost)"
            )?;
        }
        for (kind, n) in &self.errors_by_kind {
            let sample = self
                .error_samples
                .get(kind)
                .map(String::as_str)
                .unwrap_or("");
            writeln!(f, "  error       {kind}: {n}  ({})", truncate(sample, 160))?;
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            protocol: "rest".into(),
            target: "http://127.0.0.1:1".into(),
            model: "m".into(),
            version: None,
            signature: None,
            mode: Mode::Closed,
            concurrency: Some(2),
            rate: None,
            connections: 2,
            threads: 1,
            batch: 4,
            request_bytes: 10,
        }
    }

    #[test]
    fn percentiles_and_rates() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for i in 1..=500u64 {
            a.success(Duration::from_micros(i * 1000));
            b.success(Duration::from_micros((500 + i) * 1000));
        }
        b.failure(Failure::new(FailureKind::Http(503), "busy"));
        b.failure(Failure::new(FailureKind::Http(503), "busy again"));
        b.failure(Failure::new(
            FailureKind::Grpc(tonic::Code::NotFound),
            "nope",
        ));
        b.failure(Failure::new(FailureKind::Timeout, "slow"));
        a.merge(b);
        let r = Report::new(
            info(),
            &a,
            Duration::from_secs(2),
            Some(Duration::from_millis(100)),
        );
        assert_eq!((r.requests, r.ok, r.errors), (1004, 1000, 4));
        let l = r.latency_ms.expect("latency");
        let close = |x: f64, want: f64| (x - want).abs() <= want * 0.002;
        assert!(close(l.p50, 500.0), "{l:?}");
        assert!(close(l.p90, 900.0), "{l:?}");
        assert!(close(l.p99, 990.0), "{l:?}");
        assert!(close(l.p99_9, 999.0), "{l:?}");
        assert!(close(l.max, 1000.0) && close(l.min, 1.0), "{l:?}");
        assert!(close(l.mean, 500.5), "{l:?}");
        assert_eq!(r.throughput_rps, 500.0);
        assert_eq!(r.rows_per_s, 2000.0);
        assert_eq!(r.requests_per_s, 502.0);
        assert_eq!(r.client_cpu_s, Some(0.1));
        assert!(r
            .client_cpu_us_per_request
            .is_some_and(|c| (c - 1e5 / 1004.0).abs() < 1e-6));
        assert_eq!(r.errors_by_kind["http_503"], 2);
        assert_eq!(r.errors_by_kind["grpc_not_found"], 1);
        assert_eq!(r.errors_by_kind["timeout"], 1);
        assert_eq!(r.error_samples["http_503"], "busy");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("json");
        assert_eq!(json["mode"], "closed");
        assert_eq!(json["requests"], 1004);
        assert!(json["latency_ms"]["p99_9"].is_number());
        let text = r.to_string();
        assert!(
            text.contains("p99.9") && text.contains("http_503: 2"),
            "{text}"
        );
    }

    #[test]
    fn no_success_means_no_latency() {
        let mut a = Recorder::default();
        a.failure(Failure::new(FailureKind::Transport, "refused"));
        let r = Report::new(info(), &a, Duration::from_millis(10), None);
        assert!(r.latency_ms.is_none());
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("json");
        assert!(json["latency_ms"].is_null());
        assert_eq!(json["errors_by_kind"]["transport"], 1);
    }
}
