//! The load generator against a minimal in-process KServe v2 REST server that answers at once:
//! exact request counts, the open-loop schedule, timeouts and error kinds, with nothing else
//! on the machine to blame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aegis_bench::{BenchConfig, Load, ModelRef, Protocol};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

const METADATA: &str =
    r#"{"name":"m","versions":["1"],"inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]}]}"#;

/// Serves on a free port from its own thread; counts the infer requests it answered.
fn null_server() -> (u16, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let infers = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&infers);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let counter = Arc::clone(&counter);
                            async move {
                                let path = req.uri().path().to_string();
                                let body = req.into_body().collect().await?.to_bytes();
                                let (status, text) = if !path.ends_with("/infer") {
                                    (StatusCode::OK, METADATA.to_string())
                                } else if path.starts_with("/v2/models/missing/") {
                                    (
                                        StatusCode::NOT_FOUND,
                                        r#"{"error":"no model missing"}"#.into(),
                                    )
                                } else {
                                    if path.starts_with("/v2/models/slow/") {
                                        tokio::time::sleep(Duration::from_millis(300)).await;
                                    }
                                    counter.fetch_add(1, Ordering::Relaxed);
                                    let v: serde_json::Value =
                                        serde_json::from_slice(&body).unwrap_or_default();
                                    match v["inputs"][0]["data"].as_array().map(Vec::len) {
                                        Some(n) if n % 3 == 0 && n > 0 => {
                                            (StatusCode::OK, r#"{"outputs":[]}"#.into())
                                        }
                                        _ => (StatusCode::BAD_REQUEST, r#"{"error":"bad"}"#.into()),
                                    }
                                };
                                let mut resp = Response::new(Full::new(Bytes::from(text)));
                                *resp.status_mut() = status;
                                Ok::<_, hyper::Error>(resp)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    (port, infers)
}

fn config(port: u16, model: &str, load: Load) -> BenchConfig {
    BenchConfig {
        target: format!("127.0.0.1:{port}"),
        protocol: Protocol::V2Rest,
        model: ModelRef {
            name: model.into(),
            version: None,
            signature: None,
        },
        batch: 2,
        input: None,
        load,
        duration: None,
        requests: None,
        warmup: Duration::ZERO,
        connections: None,
        threads: 1,
        timeout: Duration::from_secs(10),
    }
}

#[test]
fn closed_loop_sends_exactly_the_requests_asked() {
    let (port, infers) = null_server();
    let mut c = config(port, "m", Load::Closed { concurrency: 4 });
    c.requests = Some(500);
    let r = aegis_bench::run(&c).expect("run");
    assert_eq!(
        (r.requests, r.ok, r.errors),
        (500, 500, 0),
        "{}",
        r.to_json()
    );
    assert_eq!(infers.load(Ordering::Relaxed), 500);
    assert_eq!((r.run.connections, r.run.batch), (4, 2));
    assert_eq!(r.rows_per_s, r.throughput_rps * 2.0);
    let l = r.latency_ms.expect("latency");
    assert!(0.0 < l.p50 && l.p50 <= l.p99 && l.p99 <= l.max);
    eprintln!("closed loop against a null server: {r}");

    // More workers than connections, on a multi-threaded client runtime.
    let mut c = config(port, "m", Load::Closed { concurrency: 8 });
    c.requests = Some(300);
    c.connections = Some(2);
    c.threads = 2;
    let r = aegis_bench::run(&c).expect("run");
    assert_eq!((r.requests, r.ok), (300, 300), "{}", r.to_json());
    assert_eq!((r.run.connections, r.run.threads), (2, 2));
    assert_eq!(infers.load(Ordering::Relaxed), 800);
}

#[test]
fn open_loop_keeps_its_schedule() {
    let (port, infers) = null_server();
    let mut c = config(port, "m", Load::Open { rate: 400.0 });
    c.duration = Some(Duration::from_millis(500));
    // Away from schedule points, so that float rounding cannot move a request across.
    c.warmup = Duration::from_millis(101);
    let r = aegis_bench::run(&c).expect("run");
    // Scheduled at k / 400 s: k = 0..=40 in the warm-up (sent, not counted), k = 41..=240 in
    // the measured half second.
    assert_eq!((r.requests, r.errors), (200, 0), "{}", r.to_json());
    assert_eq!(infers.load(Ordering::Relaxed), 241);
    assert!((0.45..1.5).contains(&r.duration_s), "{}", r.to_json());
    assert_eq!(r.run.rate, Some(400.0));
}

#[test]
fn timeouts_and_statuses_are_counted_by_kind() {
    let (port, _) = null_server();
    let mut c = config(port, "slow", Load::Closed { concurrency: 2 });
    c.requests = Some(4);
    c.timeout = Duration::from_millis(50);
    let r = aegis_bench::run(&c).expect("run");
    assert_eq!(r.errors_by_kind.get("timeout"), Some(&4), "{}", r.to_json());
    assert!(r.latency_ms.is_none());

    let dir = std::env::temp_dir().join(format!("aegis-bench-null-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let input = dir.join("in.json");
    std::fs::write(&input, r#"{"x": [[1, 2, 3]]}"#).expect("write");
    let mut c = config(port, "missing", Load::Closed { concurrency: 1 });
    c.requests = Some(7);
    c.input = Some(input);
    let r = aegis_bench::run(&c).expect("run");
    assert_eq!(
        r.errors_by_kind.get("http_404"),
        Some(&7),
        "{}",
        r.to_json()
    );
    assert_eq!(r.error_samples["http_404"], "no model missing");
    assert_eq!(r.run.batch, 1);
    let _ = std::fs::remove_dir_all(&dir);

    // Nothing listening: the run does not start.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut c = config(closed, "m", Load::Closed { concurrency: 1 });
    c.requests = Some(1);
    assert!(aegis_bench::run(&c).is_err());
}
