//! The `aegis` binary: parses the command line, starts telemetry, loads the models and runs the
//! server. Everything else lives in the library crates.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;
use std::sync::Arc;

use aegis_batch::ExecutorConfig;
use aegis_models::{ManagerOptions, ModelManager};
use aegis_runtime::tensorflow::{TensorflowOptions, TensorflowRuntime};
use aegis_runtime::RuntimeRegistry;
use aegis_server::ServerConfig;
use clap::Parser;

use aegis_server::warmup::TfServingWarmup;
use cli::{Cli, Command, ModelSource, ServeConfig};
use std::time::Duration;

/// mimalloc for the Rust side (the runtimes keep their own allocators): under bursts, glibc's
/// arenas kept their high-water mark, and a 10-minute soak's RSS grew in steps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(match &cli.command {
        Command::Serve(args) => args.aegis_log_format,
        Command::Bench(_) => cli::LogFormat::Text,
    });
    let result = match cli.command {
        Command::Serve(args) => args.validate().and_then(run_serve),
        Command::Bench(args) => return run_bench(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aegis: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `aegis bench`: exit 0 when every measured request succeeded, 3 when some failed (the report
/// is printed all the same), 1 when the run could not start.
fn run_bench(args: cli::BenchArgs) -> ExitCode {
    let result = args.validate().and_then(|(config, json)| {
        let report = aegis_bench::run(&config)?;
        if json {
            println!("{}", report.to_json());
        } else {
            print!("{report}");
        }
        Ok(report.errors)
    });
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(e) => {
            eprintln!("aegis bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, as text or one JSON object per line (`--aegis_log_format`), at the level
/// `AEGIS_LOG` sets (default `info`). Every line logged while serving a request carries the
/// request's span and so its `request_id`.
fn init_tracing(format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AEGIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        cli::LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn run_serve(config: ServeConfig) -> anyhow::Result<()> {
    // Stage 1: runtimes. Their libraries load on first use; a missing one fails only its
    // platform's models, with the reason in their status. TensorFlow reads its log level from
    // the environment, which is set here while the process has a single thread.
    if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "2");
    }
    let registry = runtimes(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_threads.get())
        .thread_name("aegis-io")
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(config, registry));
    // Every model is unloaded by now; a blocking task still running (a load that was cut short)
    // must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(250));
    result
}

async fn serve(config: ServeConfig, registry: RuntimeRegistry) -> anyhow::Result<()> {
    let executor = ExecutorConfig {
        workers: config.workers,
        queue_capacity: config.queue_capacity,
        batching: config.batching.clone(),
        ..ExecutorConfig::default()
    };
    let options = ManagerOptions {
        executor,
        allow_labels_for_unavailable: config.allow_labels_for_unavailable,
        settle: config.settle,
        max_load_retries: config.max_load_retries,
        load_retry_interval: config.load_retry_interval,
        per_model_batching: config.per_model_batching,
        observer: Some(aegis_server::metrics::ModelMetrics::observer()),
        max_inflight_per_model: config.max_inflight_per_model,
        warmup: config.warmup_iterations.map(|iterations| {
            Arc::new(TfServingWarmup { iterations }) as Arc<dyn aegis_models::Warmup>
        }),
    };
    let manager = Arc::new(ModelManager::new(registry, options));

    // Stage 2: listeners. They open before the models load, so that orchestrators can probe
    // liveness and readiness (`/v2/health/ready` turns true once every model is available).
    let server = ServerConfig {
        rest_addr: config.rest_addr,
        grpc_addr: config.grpc_addr,
        grpc: aegis_server::grpc::GrpcOptions {
            tensor_content_outputs: config.tensor_content_outputs,
            max_message_bytes: config.max_grpc_message_bytes,
            ..Default::default()
        },
        rest_timeout: config.rest_timeout,
        max_body_bytes: config.max_body_bytes,
        cors: config.cors,
        drain_timeout: config.drain,
        metrics_path: config.metrics_path.clone(),
        shutdown_delay: config.shutdown_delay,
        tls: config.tls.clone(),
    };
    let (abort_tx, abort_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => {},
            _ = abort_rx => {},
        }
    };
    let mut listeners = tokio::spawn(aegis_server::serve(Arc::clone(&manager), server, stop));

    // Stage 3: models. Start-up fails, as TF Serving's does, when a model cannot become available.
    let poll = config
        .fs_poll
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(50));
    let loaded = tokio::select! {
        loaded = load_models(&manager, &config.models, poll) => loaded,
        ended = &mut listeners => {
            // A listener failed (port in use) or a signal arrived while loading.
            return ended.map_err(anyhow::Error::from)?.map_err(anyhow::Error::from);
        }
    };
    if let Err(e) = loaded {
        let _ = abort_tx.send(());
        let _ = listeners.await;
        return Err(e);
    }
    manager.mark_started().await;
    tracing::info!("all models available");

    // Stage 4: keep following the file system and the config file until shutdown.
    let background = follow_changes(Arc::clone(&manager), &config);
    listeners.await??;
    background.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Applies the initial model set and waits until every model has an available version.
async fn load_models(
    manager: &ModelManager,
    source: &ModelSource,
    poll: Duration,
) -> anyhow::Result<()> {
    match source {
        ModelSource::Single(model) => manager.add_model(model, poll).await.map_err(|e| {
            anyhow::anyhow!(
                "model {} failed to load from {}: {}",
                model.name,
                model.base_path.display(),
                e.message
            )
        }),
        ModelSource::File { path, .. } => {
            let configs = read_config_file(path)?;
            let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
            manager
                .apply_config(configs)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))?;
            manager
                .wait_available(&names, poll)
                .await
                .map_err(|e| anyhow::anyhow!("Failed to start server. Error: {}", e.message))
        }
    }
}

fn read_config_file(path: &std::path::Path) -> anyhow::Result<Vec<aegis_models::ModelConfig>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    aegis_models::parse_model_config_text(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))
}

/// Polls the base paths (`--file_system_poll_wait_seconds`) and the config file
/// (`--model_config_file_poll_wait_seconds`). A config that fails to parse or apply is logged and
/// the previous one stays in force.
fn follow_changes(manager: Arc<ModelManager>, config: &ServeConfig) -> tokio::task::JoinHandle<()> {
    let fs_poll = config.fs_poll.filter(|p| !p.is_zero());
    let file = match &config.models {
        ModelSource::File {
            path,
            poll: Some(poll),
        } => Some((path.clone(), *poll)),
        _ => None,
    };
    tokio::spawn(async move {
        let mut last_text = file
            .as_ref()
            .and_then(|(path, _)| std::fs::read_to_string(path).ok());
        let mut fs_tick = fs_poll.map(tokio::time::interval);
        let mut file_tick = file.as_ref().map(|(_, p)| tokio::time::interval(*p));
        loop {
            tokio::select! {
                _ = tick(&mut fs_tick) => manager.poll().await,
                _ = tick(&mut file_tick) => {
                    let Some((path, _)) = &file else { continue };
                    let text = match std::fs::read_to_string(path) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "cannot read model config");
                            continue;
                        }
                    };
                    if last_text.as_deref() == Some(text.as_str()) {
                        continue;
                    }
                    match aegis_models::parse_model_config_text(&text) {
                        Ok(configs) => match manager.apply_config(configs).await {
                            Ok(()) => tracing::info!(path = %path.display(), "model config reloaded"),
                            Err(e) => tracing::error!(path = %path.display(), error = %e.message, "model config not applied"),
                        },
                        Err(e) => tracing::error!(path = %path.display(), error = %e.message, "model config not applied"),
                    }
                    last_text = Some(text);
                }
            }
        }
    })
}

/// Waits for the next tick of an optional interval; never, when there is none.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The runtimes, each loaded on first use by a model of its platform.
fn runtimes(config: &ServeConfig) -> RuntimeRegistry {
    use aegis_runtime::litert::{LiteRtOptions, LiteRtRuntime};
    use aegis_runtime::onnx::OnnxRuntime;
    use aegis_runtime::{LazyRuntime, Runtime};

    fn arc<R: Runtime + 'static>(r: R) -> Arc<dyn Runtime> {
        Arc::new(r)
    }
    let tf_options = TensorflowOptions {
        tags: config.tags.clone(),
        intra_op_threads: config.intra_op_threads,
        inter_op_threads: config.inter_op_threads,
    };
    let tf = LazyRuntime::new("tensorflow", move || {
        TensorflowRuntime::new(tf_options.clone()).map(arc)
    });
    // Each worker owns a LiteRT session with its own XNNPACK threads: by default split the cores
    // between the workers rather than multiply them.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = config.workers.get();
    let litert_options = LiteRtOptions {
        num_threads: config
            .litert_threads
            .map_or((cpus / workers).max(1), |n| n.get()),
    };
    let tflite = LazyRuntime::new("tflite", move || {
        LiteRtRuntime::new(litert_options.clone()).map(arc)
    });
    let onnx_options = config.onnx.clone();
    let onnx = LazyRuntime::new("onnx", move || {
        OnnxRuntime::new(onnx_options.clone()).map(arc)
    });
    let mut registry = RuntimeRegistry::new();
    // Order decides a directory holding several formats (TF Serving's --prefer_tflite_model).
    let ordered = if config.prefer_tflite {
        [tflite, tf, onnx]
    } else {
        [tf, tflite, onnx]
    };
    for r in ordered {
        registry.register(Arc::new(r));
    }
    registry
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
