//! Command-line flags. `aegis serve` takes TF Serving's flag names, spelling (`--flag=value`, bare
//! booleans) and defaults, so a `tensorflow_model_server` command line works unchanged; flags of
//! Aegis's own are prefixed `aegis_` and may also come from `AEGIS_*` environment variables.

use std::net::{Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use aegis_models::ModelConfig;
use anyhow::{bail, Context};
use clap::builder::TypedValueParser;
use clap::{ArgAction, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aegis",
    version,
    about = "A model server for SavedModel, TFLite and ONNX; drop-in for TensorFlow Serving."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve models over TF Serving's gRPC and REST APIs.
    Serve(Box<ServeArgs>),
    /// Load-test a TF Serving-compatible or KServe v2 endpoint (Aegis or any other server).
    #[command(long_about = BENCH_ABOUT)]
    Bench(Box<BenchArgs>),
}

/// `--aegis_log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
#[command(rename_all = "snake_case", args_override_self = true)]
pub struct ServeArgs {
    /// Port of TF Serving's gRPC API (PredictionService, ModelService, health, reflection);
    /// 0 disables it.
    #[arg(long, default_value_t = 8500)]
    pub port: u16,

    /// REST API port; 0 disables the REST API.
    #[arg(long, default_value_t = 0)]
    pub rest_api_port: u16,

    /// Deadline of one REST request, in milliseconds.
    #[arg(long, default_value_t = 30000)]
    pub rest_api_timeout_in_ms: u64,

    /// Async I/O threads serving REST and gRPC (default: one per CPU). TF Serving's default of
    /// 4 x CPUs suits its blocking handlers; Aegis's handlers never block (inference runs on
    /// worker threads), and more I/O threads than cores only add wake-ups and migrations.
    #[arg(long)]
    pub rest_api_num_threads: Option<NonZeroUsize>,

    /// Predict outputs of fixed-size dtypes go in `tensor_content` instead of the typed fields
    /// (`float_val`, ...) in gRPC responses.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_serialization_as_tensor_content: bool,

    /// Add CORS headers to every REST response.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub rest_api_enable_cors_support: bool,

    /// Name of the model in single-model mode (env `MODEL_NAME`).
    #[arg(long, env = "MODEL_NAME", default_value = "default")]
    pub model_name: String,

    /// Directory of the model's numeric version directories, in single-model mode. Defaults to
    /// `$MODEL_BASE_PATH/$MODEL_NAME` when `MODEL_BASE_PATH` is set (TF Serving's Docker image).
    #[arg(long)]
    pub model_base_path: Option<PathBuf>,

    /// A text-format ModelServerConfig (`models.config`): many models, version policies and
    /// labels. Replaces --model_name / --model_base_path.
    #[arg(long)]
    pub model_config_file: Option<PathBuf>,

    /// Re-read --model_config_file every this many seconds and apply changes (0 = read once).
    #[arg(long, default_value_t = 0.0)]
    pub model_config_file_poll_wait_seconds: f64,

    /// Scan model base paths for new and removed versions every this many seconds (0 = once at
    /// start-up, negative = never).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub file_system_poll_wait_seconds: f64,

    /// Let a config's new version label name a version that is not loaded yet.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub allow_version_labels_for_unavailable_models: bool,

    /// Further load attempts of a failed version whose files did not change.
    #[arg(long, default_value_t = 5)]
    pub max_num_load_retries: u32,

    /// Microseconds between those attempts.
    #[arg(long, default_value_t = 60_000_000)]
    pub load_retry_interval_micros: u64,

    /// Replay `<version>/assets.extra/tf_serving_warmup_requests` before a version serves.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub enable_model_warmup: bool,

    /// How many times each warmup record is replayed (0 means 1).
    #[arg(long, default_value_t = 0)]
    pub num_request_iterations_for_warmup: usize,

    /// A version directory is loaded only once nothing in it has changed for this many seconds,
    /// so a copy in progress is never loaded half-written.
    #[arg(long, env = "AEGIS_VERSION_SETTLE_SECONDS", default_value_t = 1.0)]
    pub aegis_version_settle_seconds: f64,

    /// Comma-separated tag set of the MetaGraphDef to load from each SavedModel.
    #[arg(long, default_value = "serve")]
    pub saved_model_tags: String,

    /// Threads of TensorFlow's intra-op pool. When this and the next two flags are all 0, Aegis
    /// runs each op single-threaded in the worker that called it (see `ServeConfig`).
    #[arg(long, default_value_t = 0)]
    pub tensorflow_intra_op_parallelism: i32,

    /// Threads of TensorFlow's inter-op pool; negative runs ops in the calling thread.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub tensorflow_inter_op_parallelism: i32,

    /// Sets both TensorFlow pools when the two flags above are 0.
    #[arg(long, default_value_t = 0)]
    pub tensorflow_session_parallelism: i32,

    /// When a version directory holds both a SavedModel and `model.tflite`, serve the TFLite one.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub prefer_tflite_model: bool,

    /// XNNPACK threads of each LiteRT (TFLite) session (default: CPUs / workers per model).
    #[arg(long, env = "AEGIS_LITERT_THREADS")]
    pub aegis_litert_threads: Option<NonZeroUsize>,

    /// ONNX Runtime's intra-op threads (0 = its default).
    #[arg(long, env = "AEGIS_ONNX_INTRA_OP_THREADS", default_value_t = 0)]
    pub aegis_onnx_intra_op_threads: usize,

    /// ONNX Runtime's inter-op threads (0 = its default).
    #[arg(long, env = "AEGIS_ONNX_INTER_OP_THREADS", default_value_t = 0)]
    pub aegis_onnx_inter_op_threads: usize,

    /// ONNX Runtime's graph optimization level: disable, basic, extended or all.
    #[arg(long, env = "AEGIS_ONNX_OPTIMIZATION_LEVEL", default_value = "all")]
    pub aegis_onnx_optimization_level: aegis_runtime::onnx::OptimizationLevel,

    /// Worker threads per loaded model version (default: the batching parameters'
    /// num_batch_threads, else the number of CPUs, or half of it with --enable_batching).
    #[arg(long, env = "AEGIS_WORKERS_PER_MODEL")]
    pub aegis_workers_per_model: Option<NonZeroUsize>,

    /// Requests that may wait for a model version's workers before new ones get 429.
    #[arg(long, env = "AEGIS_QUEUE_CAPACITY", default_value_t = NonZeroUsize::new(1024).expect("nonzero"))]
    pub aegis_queue_capacity: NonZeroUsize,

    /// Largest accepted REST request body, in bytes; a `Content-Encoding: gzip` body must stay
    /// within it once inflated too (413 otherwise).
    #[arg(long, env = "AEGIS_MAX_REQUEST_BYTES", default_value_t = 256 << 20)]
    pub aegis_max_request_bytes: usize,

    /// Log output: `text` (human-readable) or `json` (one object per line, with the span
    /// fields, e.g. `request_id`). The level comes from `AEGIS_LOG` (tracing's env-filter
    /// syntax, default `info`); request payloads are never logged.
    #[arg(long, env = "AEGIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub aegis_log_format: LogFormat,

    /// Largest accepted gRPC request message, in bytes, on the wire and once decompressed
    /// (default: TF Serving's INT32_MAX).
    #[arg(long, env = "AEGIS_MAX_GRPC_MESSAGE_BYTES", default_value_t = i32::MAX as usize)]
    pub aegis_max_grpc_message_bytes: usize,

    /// Requests of one model (all its versions) queued or running at a time; one more gets 429
    /// / RESOURCE_EXHAUSTED at once. 0 = no limit besides --aegis_queue_capacity per version.
    #[arg(long, env = "AEGIS_MAX_INFLIGHT_PER_MODEL", default_value_t = 0)]
    pub aegis_max_inflight_per_model: usize,

    /// Seconds in-flight requests get to finish after SIGTERM / Ctrl-C, and the models to
    /// unload; the process then exits 0.
    #[arg(long, env = "AEGIS_DRAIN_SECONDS", default_value_t = 30)]
    pub aegis_drain_seconds: u64,

    /// Seconds the ports keep accepting after SIGTERM / Ctrl-C with readiness already false
    /// (503 / NOT_SERVING), so that load balancers stop routing here before they close.
    #[arg(long, env = "AEGIS_SHUTDOWN_DELAY_SECONDS", default_value_t = 0.0)]
    pub aegis_shutdown_delay_seconds: f64,

    /// A text-format TF Serving SSLConfig (`server_key`, `server_cert`, `custom_ca` as inline
    /// PEM, `client_verify` for mutual TLS). Unlike TF Serving, which secures only gRPC, Aegis
    /// serves TLS on both the gRPC port (ALPN h2) and the REST port (h2, http/1.1).
    #[arg(long)]
    pub ssl_config_file: Option<PathBuf>,

    // TF Serving flags accepted so that existing command lines keep working. Setting one that
    // Aegis does not act on yet logs a warning at start-up.
    /// Merge concurrent requests into one runtime call (TF Serving's dynamic batching).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_batching: bool,
    /// A text-format BatchingParameters (max_batch_size, batch_timeout_micros, ...); needs
    /// --enable_batching. Without it, batching adapts: a free worker takes what has queued.
    #[arg(long)]
    pub batching_parameters_file: Option<PathBuf>,

    /// Batch each version with the `batching_params.pbtxt` in its directory; versions without
    /// one are not batched.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub enable_per_model_batching_parameters: bool,
    /// Text-format MonitoringConfig, as TF Serving's: `prometheus_config { enable: true path:
    /// "/monitoring/prometheus/metrics" }` serves Prometheus metrics at that path (the default
    /// when empty) on the REST port. Without it the path answers 404.
    #[arg(long)]
    pub monitoring_config_file: Option<PathBuf>,
    #[arg(long, hide = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_profiler: Option<bool>,
    #[arg(long, hide = true)]
    pub grpc_channel_arguments: Option<String>,
    #[arg(long, hide = true)]
    pub grpc_max_threads: Option<i64>,
    /// The health service is always served; the flag is accepted for compatibility.
    #[arg(long, hide = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_grpc_healthcheck_service: Option<bool>,
}

/// Where the set of models comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// `--model_name` / `--model_base_path`.
    Single(ModelConfig),
    /// `--model_config_file`, re-read every `poll` when set.
    File {
        path: PathBuf,
        poll: Option<Duration>,
    },
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|e| anyhow::anyhow!("{flag}={value}: {e}"))
}

/// The validated settings `aegis serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub models: ModelSource,
    /// Dynamic batching for every model version; `None` runs one request per call.
    pub batching: Option<aegis_batch::BatchingConfig>,
    pub per_model_batching: bool,
    pub prefer_tflite: bool,
    pub litert_threads: Option<NonZeroUsize>,
    pub onnx: aegis_runtime::onnx::OnnxOptions,
    /// Period of the base-path scan; `None` = never again after start-up.
    pub fs_poll: Option<Duration>,
    pub settle: Duration,
    pub allow_labels_for_unavailable: bool,
    pub max_load_retries: u32,
    pub load_retry_interval: Duration,
    /// Replays of each warmup record; `None` disables warmup.
    pub warmup_iterations: Option<usize>,
    pub rest_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    pub tensor_content_outputs: bool,
    pub rest_timeout: Duration,
    pub http_threads: NonZeroUsize,
    pub cors: bool,
    pub tags: Vec<String>,
    /// TensorFlow's `intra_op_parallelism_threads` / `inter_op_parallelism_threads`.
    pub intra_op_threads: i32,
    pub inter_op_threads: i32,
    /// Worker threads (each with its own session) per model version.
    pub workers: NonZeroUsize,
    pub queue_capacity: NonZeroUsize,
    pub max_body_bytes: usize,
    pub max_grpc_message_bytes: usize,
    pub max_inflight_per_model: Option<NonZeroUsize>,
    pub drain: Duration,
    /// Where the REST port serves Prometheus metrics; `None`: not served.
    pub metrics_path: Option<String>,
    pub shutdown_delay: Duration,
    /// TLS for both ports, already checked.
    pub tls: Option<aegis_server::tls::ServerTls>,
}

impl ServeArgs {
    /// Checks the flags against each other and fills in TF Serving's derived defaults.
    pub fn validate(self) -> anyhow::Result<ServeConfig> {
        let models = match &self.model_config_file {
            Some(path) => {
                let path = std::fs::canonicalize(path)
                    .with_context(|| format!("--model_config_file={}", path.display()))?;
                let poll = self.model_config_file_poll_wait_seconds;
                ModelSource::File {
                    path,
                    poll: (poll > 0.0)
                        .then(|| seconds("--model_config_file_poll_wait_seconds", poll))
                        .transpose()?,
                }
            }
            None => {
                let base_path = match (&self.model_base_path, std::env::var_os("MODEL_BASE_PATH")) {
                    (Some(p), _) => p.clone(),
                    (None, Some(root)) => PathBuf::from(root).join(&self.model_name),
                    (None, None) => bail!(
                        "Both server_options.model_base_path and \
                             server_options.model_config_file are empty! Pass \
                             --model_base_path=/path/to/model (the directory holding numeric \
                             version directories) or --model_config_file"
                    ),
                };
                let base_path = std::fs::canonicalize(&base_path)
                    .with_context(|| format!("model base path {}", base_path.display()))?;
                ModelSource::Single(ModelConfig::new(self.model_name.clone(), base_path))
            }
        };
        let batching = match (&self.batching_parameters_file, self.enable_batching) {
            (Some(path), false) => bail!(
                "--batching_parameters_file={} needs --enable_batching",
                path.display()
            ),
            (Some(path), true) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--batching_parameters_file={}", path.display()))?;
                Some(
                    aegis_models::parse_batching_parameters_text(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))?,
                )
            }
            (None, true) => Some(aegis_batch::BatchingConfig::default()),
            (None, false) => None,
        };
        let fs_poll = match self.file_system_poll_wait_seconds {
            p if p < 0.0 => None,
            p => Some(seconds("--file_system_poll_wait_seconds", p)?),
        };
        if self.port == 0 && self.rest_api_port == 0 {
            bail!(
                "--port=0 and --rest_api_port=0: neither the gRPC nor the REST API would be served"
            );
        }
        if self.rest_api_port != 0 && self.rest_api_port == self.port {
            bail!(
                "--rest_api_port and --port must differ (both are {})",
                self.port
            );
        }
        let (intra, inter, session) = (
            self.tensorflow_intra_op_parallelism,
            self.tensorflow_inter_op_parallelism,
            self.tensorflow_session_parallelism,
        );
        if intra > 0 && inter > 0 && session > 0 {
            bail!(
                "Either configure --tensorflow_session_parallelism or \
                 (--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism), not both"
            );
        }
        let tags: Vec<String> = self
            .saved_model_tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        if tags.is_empty() {
            bail!("--saved_model_tags must name at least one tag");
        }
        let metrics_path = match &self.monitoring_config_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--monitoring_config_file={}", path.display()))?;
                let config =
                    aegis_server::metrics::MonitoringConfig::parse(&text).map_err(|e| {
                        anyhow::anyhow!(
                            "--monitoring_config_file={}: Error parsing text-format \
                         tensorflow.serving.MonitoringConfig: {e}",
                            path.display()
                        )
                    })?;
                if config.enable && self.rest_api_port == 0 {
                    tracing::warn!(
                        "prometheus_config is enabled but --rest_api_port is 0: metrics are not served"
                    );
                }
                config.enable.then_some(config.path)
            }
        };
        for (flag, set) in [
            ("--enable_profiler", self.enable_profiler.is_some()),
            (
                "--grpc_channel_arguments",
                self.grpc_channel_arguments.is_some(),
            ),
            ("--grpc_max_threads", self.grpc_max_threads.is_some()),
        ] {
            if set {
                tracing::warn!("{flag} is accepted for compatibility but has no effect yet");
            }
        }
        let tls = match &self.ssl_config_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--ssl_config_file={}", path.display()))?;
                let ssl = aegis_server::tls::SslConfig::parse_text(&text)
                    .and_then(|c| aegis_server::tls::ServerTls::new(&c))
                    .map_err(|e| anyhow::anyhow!("--ssl_config_file={}: {e}", path.display()))?;
                Some(ssl)
            }
        };
        let cpus = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        // Worker threads per model version: --aegis_workers_per_model, else the parameters file's
        // num_batch_threads (TF Serving takes thread settings from that file only), else one per
        // core without batching and one per two cores with it. A batching server spends most of
        // each request's CPU outside the runtime (HTTP, decoding), so the I/O threads need the
        // other cores, and fewer workers form bigger batches: on the 2-core reference machine one
        // worker served the MLP ~10-15% faster over REST than two, the CNN alike.
        let workers = self
            .aegis_workers_per_model
            .or_else(|| {
                batching
                    .as_ref()
                    .and_then(|b| b.num_batch_threads)
                    .and_then(NonZeroUsize::new)
            })
            .unwrap_or_else(|| match batching {
                Some(_) => NonZeroUsize::new(cpus.get() / 2).unwrap_or(NonZeroUsize::MIN),
                None => cpus,
            });
        // TF Serving leaves TensorFlow's pools at their defaults (a thread per core each), so
        // every op hops to a pool thread and back. Aegis already runs its own workers, each
        // owning a session: by default ops run in the worker itself (inter-op -1) on
        // `cores / workers` intra-op threads. On the 2-core reference machine this runs the CNN
        // fixture at batch 1 in 0.15 ms instead of 0.37 ms, and the MLP at batch 32 ~1.5x
        // faster. Any of the three flags set restores TF Serving's meaning.
        let tf_threads = if (intra, inter, session) == (0, 0, 0) {
            let per_worker = (cpus.get() / workers.get()).max(1);
            (i32::try_from(per_worker).unwrap_or(1), -1)
        } else {
            (
                if intra != 0 { intra } else { session },
                if inter != 0 { inter } else { session },
            )
        };
        Ok(ServeConfig {
            models,
            batching,
            per_model_batching: self.enable_per_model_batching_parameters,
            prefer_tflite: self.prefer_tflite_model,
            litert_threads: self.aegis_litert_threads,
            onnx: aegis_runtime::onnx::OnnxOptions {
                intra_op_threads: self.aegis_onnx_intra_op_threads,
                inter_op_threads: self.aegis_onnx_inter_op_threads,
                optimization_level: self.aegis_onnx_optimization_level,
                ..Default::default()
            },
            fs_poll,
            settle: seconds(
                "--aegis_version_settle_seconds",
                self.aegis_version_settle_seconds,
            )?,
            allow_labels_for_unavailable: self.allow_version_labels_for_unavailable_models,
            max_load_retries: self.max_num_load_retries,
            load_retry_interval: Duration::from_micros(self.load_retry_interval_micros),
            warmup_iterations: self
                .enable_model_warmup
                .then_some(self.num_request_iterations_for_warmup.max(1)),
            rest_addr: (self.rest_api_port != 0)
                .then(|| SocketAddr::from((Ipv6Addr::UNSPECIFIED, self.rest_api_port))),
            grpc_addr: (self.port != 0)
                .then(|| SocketAddr::from((Ipv6Addr::UNSPECIFIED, self.port))),
            tensor_content_outputs: self.enable_serialization_as_tensor_content,
            rest_timeout: Duration::from_millis(self.rest_api_timeout_in_ms),
            http_threads: self.rest_api_num_threads.unwrap_or(cpus),
            cors: self.rest_api_enable_cors_support,
            tags,
            intra_op_threads: tf_threads.0,
            inter_op_threads: tf_threads.1,
            workers,
            queue_capacity: self.aegis_queue_capacity,
            max_body_bytes: self.aegis_max_request_bytes,
            max_grpc_message_bytes: self.aegis_max_grpc_message_bytes,
            max_inflight_per_model: NonZeroUsize::new(self.aegis_max_inflight_per_model),
            drain: Duration::from_secs(self.aegis_drain_seconds),
            metrics_path,
            shutdown_delay: seconds(
                "--aegis_shutdown_delay_seconds",
                self.aegis_shutdown_delay_seconds,
            )?,
            tls,
        })
    }
}

const BENCH_ABOUT: &str = "\
Load-test a model server over TF Serving's REST or gRPC API or the KServe v2 protocol: Aegis or \
any other server, measured the same way.

Inputs come from --input, or are generated from the model's metadata (fetched over the same \
protocol): each input of the signature with dimension 0 set to --batch where it is free, other \
free dimensions 1, deterministic pseudo-random values. The request is encoded once and replayed.

Closed loop (default): --concurrency workers, one request in flight each. Open loop (--rate): \
requests on a fixed schedule, latency measured from each request's scheduled send time. The run \
ends after --duration seconds or --requests requests, whichever comes first (10 s when neither \
is given); --warmup seconds before it are not measured.

A request succeeds only on HTTP 200 / gRPC OK. Errors are counted by kind: http_<status>, \
grpc_<code> (e.g. grpc_not_found), transport, timeout.

--json prints one object with the fields: protocol, target, model, version, signature, mode \
(closed|open), concurrency, rate, connections, threads, batch, request_bytes, requests (= ok + \
errors), ok, errors, errors_by_kind, error_samples, duration_s, throughput_rps (successes/s), \
requests_per_s, rows_per_s, latency_ms {min, mean, p50, p90, p99, p99_9, max} (of successes; \
null when none), client_cpu_s, client_cpu_us_per_request (the tool's own CPU time over the \
measured window; Linux, 10 ms resolution).

Exit status: 0 when every measured request succeeded; 3 when the run completed but some \
requests failed (the report is printed all the same); 1 when the run could not start (target \
unreachable, metadata unavailable, bad input file); 2 for bad flags.";

/// `aegis bench` flags. Unlike `serve`'s they are Aegis's own, so they use kebab case.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Server to load: `http://host:port`, `host:port`, or `host` (port 8501 for REST, 8500
    /// for gRPC). TLS is not supported.
    #[arg(long)]
    pub target: String,

    /// Wire protocol: rest (TF Serving REST), grpc (TF Serving gRPC), v2-rest (KServe v2 JSON),
    /// v2-rest-binary (KServe v2 binary tensor extension), v2-grpc (KServe v2 gRPC).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(aegis_bench::Protocol::NAMES)
        .try_map(|s| s.parse::<aegis_bench::Protocol>()))]
    pub protocol: aegis_bench::Protocol,

    /// Model name.
    #[arg(long)]
    pub model: String,

    /// Model version (default: the server's choice, usually the latest).
    #[arg(long)]
    pub version: Option<u64>,

    /// Signature (default: serving_default). KServe v2 metadata describes the default signature
    /// only: with v2 and another signature, give --input.
    #[arg(long)]
    pub signature: Option<String>,

    /// Rows per request when generating inputs (dimension 0 where the model leaves it free).
    #[arg(long, default_value_t = NonZeroUsize::MIN)]
    pub batch: NonZeroUsize,

    /// Request inputs as JSON: {"<input name>": nested list, or {"shape": [...], "data": [flat
    /// or nested list], "dtype": optional}, ...}. Default: generated from the model's metadata.
    #[arg(long)]
    pub input: Option<PathBuf>,

    /// Closed loop: concurrent requests (one worker each).
    #[arg(long, default_value_t = NonZeroUsize::MIN, conflicts_with = "rate")]
    pub concurrency: NonZeroUsize,

    /// Open loop: requests per second on a fixed schedule; latency counts from each request's
    /// scheduled send time (no coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,

    /// Seconds to measure (after --warmup). Default 10 unless --requests is given.
    #[arg(long)]
    pub duration: Option<f64>,

    /// Requests to measure (after --warmup); with --duration, whichever ends first.
    #[arg(long)]
    pub requests: Option<u64>,

    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,

    /// Connections: HTTP/1.1 keep-alive connections (default: --concurrency; 64 in open loop), or
    /// HTTP/2 channels for gRPC (default: --concurrency, at most 4).
    #[arg(long)]
    pub connections: Option<NonZeroUsize>,

    /// Client runtime threads (1: everything on one thread, the lightest client).
    #[arg(long, default_value_t = NonZeroUsize::MIN)]
    pub threads: NonZeroUsize,

    /// Per-request timeout in milliseconds; a request without a full response by then counts
    /// as a `timeout` error.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,

    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// Checks the flags and turns them into the run's settings.
    pub fn validate(self) -> anyhow::Result<(aegis_bench::BenchConfig, bool)> {
        let load = match self.rate {
            Some(r) if r.is_finite() && r > 0.0 => aegis_bench::Load::Open { rate: r },
            Some(r) => bail!("--rate={r}: must be a positive number of requests per second"),
            None => aegis_bench::Load::Closed {
                concurrency: self.concurrency.get(),
            },
        };
        let duration = self
            .duration
            .map(|d| match d > 0.0 {
                true => seconds("--duration", d),
                false => bail!("--duration={d}: must be positive"),
            })
            .transpose()?;
        if self.requests == Some(0) {
            bail!("--requests=0: nothing to measure");
        }
        if self.timeout_ms == 0 {
            bail!("--timeout-ms=0: must be positive");
        }
        let config = aegis_bench::BenchConfig {
            target: self.target,
            protocol: self.protocol,
            model: aegis_bench::ModelRef {
                name: self.model,
                version: self.version,
                signature: self.signature,
            },
            batch: self.batch.get(),
            input: self.input,
            load,
            duration,
            requests: self.requests,
            warmup: seconds("--warmup", self.warmup)?,
            connections: self.connections.map(NonZeroUsize::get),
            threads: self.threads.get(),
            timeout: Duration::from_millis(self.timeout_ms),
        };
        Ok((config, self.json))
    }
}
