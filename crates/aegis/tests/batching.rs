//! Dynamic batching end to end: with `--enable_batching` and TF Serving's batching parameters
//! file, concurrent requests (single- and multi-instance) share runtime calls and each still gets
//! exactly TensorFlow's outputs for its own rows, on every fixture and runtime; requests larger
//! than an execution batch are split and reassembled; a full queue, an expired deadline and a
//! client that has gone are handled as TF Serving handles them.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::golden::{cases, check_tensor, Case, GoldenTensor};
use common::{fixture_model, golden, Server};
use serde_json::Value;

/// Every fixture model with the platform that serves it.
const ALL_MODELS: [(&str, &str); 8] = [
    ("half_plus_two", "tensorflow"),
    ("multi_io", "tensorflow"),
    ("dtypes", "tensorflow"),
    ("mlp", "tensorflow"),
    ("mlp_tflite", "tflite"),
    ("mlp_tflite_f16", "tflite"),
    ("mlp_tflite_int8", "tflite"),
    ("mlp_onnx", "onnx"),
];

/// A scratch directory for one test's config files.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aegis-batching-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// Writes a models.config serving `models` and a batching parameters file; returns the flags.
fn batching_flags(dir: &std::path::Path, models: &[(&str, &str)], params: &str) -> Vec<String> {
    let mut text = String::from("model_config_list {\n");
    for (model, platform) in models {
        text.push_str(&format!(
            "  config {{ name: '{model}' base_path: '{}' model_platform: '{platform}' }}\n",
            fixture_model(model).display()
        ));
    }
    text.push_str("}\n");
    let config = dir.join("models.config");
    std::fs::write(&config, text).expect("write config");
    let file = dir.join("batching.config");
    std::fs::write(&file, params).expect("write params");
    vec![
        format!("--model_config_file={}", config.display()),
        "--enable_batching".to_string(),
        format!("--batching_parameters_file={}", file.display()),
    ]
}

/// Every request form of a case (columnar, and rows when the case has them) against its golden.
fn check_case_forms(server: &Server, model: &str, case: &Case) {
    let path = format!("/v1/models/{model}:predict");
    let resp = server.post(&path, case.columnar_request(false));
    assert_eq!(resp.status, 200, "{model}/{}: {}", case.name, resp.text());
    case.check_columnar(&resp.json());
    if case.row_compatible() {
        let resp = server.post(&path, case.row_request(false, true));
        assert_eq!(resp.status, 200, "{model}/{}: {}", case.name, resp.text());
        case.check_rows(&resp.json());
    }
}

/// With batching on (batches padded to 4, 8 or 16 rows), every golden case of every fixture, on
/// every runtime, sent by several clients at once, gets exactly the outputs TensorFlow (LiteRT,
/// ONNX Runtime) computed without batching. Cases whose shapes cannot share a batch (rank 1 vs 2,
/// other non-batch dims, other dtypes or signatures) run in batches of their own.
#[test]
fn every_fixture_answers_its_goldens_with_batching_under_concurrent_clients() {
    let dir = scratch("all");
    let flags = batching_flags(
        &dir,
        &ALL_MODELS,
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 1000 }\n\
         max_enqueued_batches { value: 1000 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n\
         allowed_batch_sizes: 16\n",
    );
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Arc::new(Server::start_ready(&args));
    let mut threads = Vec::new();
    for (model, _) in ALL_MODELS {
        let all = cases(&golden(model));
        for t in 0..3 {
            let server = Arc::clone(&server);
            let mut all = all.clone();
            let n = all.len();
            all.rotate_left(t * 5 % n);
            threads.push(std::thread::spawn(move || {
                for case in &all {
                    check_case_forms(&server, model, case);
                }
            }));
        }
    }
    for t in threads {
        t.join().expect("client");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rows `picks` (indices into the golden case's rows) of a single-input, single-output case as a
/// row-form request, and the outputs expected for them.
fn pick_rows(case: &Case, picks: &[usize]) -> (String, GoldenTensor) {
    let (_, x) = &case.inputs[0];
    let instances: Vec<Value> = picks.iter().map(|&i| x.row(i, false)).collect();
    let body = common::golden::to_request_text(&serde_json::json!({ "instances": instances }));
    let (_, y) = &case.outputs[0];
    let width: usize = y.shape[1..].iter().product();
    let mut values = Vec::with_capacity(picks.len() * width);
    for &i in picks {
        values.extend_from_slice(&y.values[i * width..(i + 1) * width]);
    }
    let mut shape = y.shape.clone();
    shape[0] = picks.len();
    (
        body,
        GoldenTensor {
            dtype: y.dtype.clone(),
            shape,
            values,
        },
    )
}

/// `enable_large_batch_splitting`: with runs of at most 4 rows (padded to 2 or 4), requests of
/// up to 64 rows are split across runs and answered with every row in order, on every runtime,
/// while other clients' requests share the same runs.
#[test]
fn large_requests_are_split_across_runs_on_every_runtime() {
    let dir = scratch("split");
    let flags = batching_flags(
        &dir,
        &common::MLP_FORMATS,
        "max_batch_size { value: 64 }\nenable_large_batch_splitting { value: true }\n\
         max_execution_batch_size { value: 4 }\nallowed_batch_sizes: 2\nallowed_batch_sizes: 4\n\
         max_enqueued_batches { value: 1000 }\n",
    );
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Arc::new(Server::start_ready(&args));
    let mut threads = Vec::new();
    for (model, _) in common::MLP_FORMATS {
        let batch4 = cases(&golden(model))
            .into_iter()
            .find(|c| c.name == "batch4")
            .expect("batch4");
        for t in 0..3usize {
            let server = Arc::clone(&server);
            let batch4 = batch4.clone();
            threads.push(std::thread::spawn(move || {
                for n in [11usize, 1, 6, 3] {
                    let picks: Vec<usize> = (0..n).map(|i| (i * 3 + t) % 4).collect();
                    let (body, want) = pick_rows(&batch4, &picks);
                    let resp = server.post(&format!("/v1/models/{model}:predict"), body);
                    assert_eq!(resp.status, 200, "{model}: {}", resp.text());
                    let got = resp.json()["predictions"].clone();
                    check_tensor(&format!("{model} x{n}"), "output_0", &want, &got);
                }
            }));
        }
    }
    for t in threads {
        t.join().expect("client");
    }
    // max_batch_size still bounds one request.
    let batch4 = cases(&golden("mlp"))
        .into_iter()
        .find(|c| c.name == "batch4")
        .expect("batch4");
    let (body, _) = pick_rows(&batch4, &[0; 65]);
    let resp = server.post("/v1/models/mlp:predict", body);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(
        resp.error(),
        "Task size 65 is larger than maximum input batch size 64"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn concurrent_requests_batch_and_each_gets_its_own_rows() {
    let dir = std::env::temp_dir().join(format!("aegis-batching-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let params = dir.join("batching.config");
    std::fs::write(
        &params,
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n\
         max_enqueued_batches { value: 100 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n\
         allowed_batch_sizes: 16\n",
    )
    .expect("write");
    let flag = format!("--batching_parameters_file={}", params.display());
    let server = std::sync::Arc::new(Server::start(
        "mlp",
        &fixture_model("mlp"),
        &["--enable_batching", &flag],
    ));
    let all = cases(&golden("mlp"));
    let serving: Vec<_> = all
        .into_iter()
        .filter(|c| c.signature == "serving_default")
        .collect();
    assert_eq!(serving.len(), 2); // batch 1 and batch 4
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let server = std::sync::Arc::clone(&server);
            let case = serving[i % 2].clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let resp = server.post("/v1/models/mlp:predict", case.columnar_request(false));
                    assert_eq!(resp.status, 200, "{}", resp.text());
                    case.check_columnar(&resp.json());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }

    // A single request larger than max_batch_size: TF Serving's error.
    let row = format!("[{}]", vec!["0.5"; 784].join(","));
    let body = format!("{{\"instances\": [{}]}}", vec![row; 17].join(","));
    let resp = server.post("/v1/models/mlp:predict", body);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(
        resp.error(),
        "Task size 17 is larger than maximum input batch size 16"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn batching_parameters_need_enable_batching_and_must_be_valid() {
    let dir = std::env::temp_dir().join(format!("aegis-batching-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let params = dir.join("batching.config");
    std::fs::write(
        &params,
        "max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n",
    )
    .expect("write");
    let base = format!("--model_base_path={}", fixture_model("mlp").display());
    let flag = format!("--batching_parameters_file={}", params.display());
    for (args, expect) in [
        (vec![flag.as_str()], "needs --enable_batching"),
        (
            vec!["--enable_batching", flag.as_str()],
            "Last entry in allowed_batch_sizes must match max_batch_size",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aegis"))
            .args([
                "serve",
                "--port=0",
                "--rest_api_port=0",
                "--model_name=mlp",
                &base,
            ])
            .args(&args)
            .output()
            .expect("run");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--enable_per_model_batching_parameters`: a version batches with the `batching_params.pbtxt`
/// in its directory (here max_batch_size 4, so 5 instances are refused with TF Serving's text);
/// a model without one is not batched.
#[test]
fn per_model_batching_parameters_come_from_the_version_directory() {
    let dir = std::env::temp_dir().join(format!("aegis-batching-per-model-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let batched = dir.join("batched/1");
    let plain = dir.join("plain/1");
    for v in [&batched, &plain] {
        std::fs::create_dir_all(v.join("variables")).expect("mkdir");
        let src = fixture_model("mlp").join("1");
        for f in [
            "saved_model.pb",
            "variables/variables.index",
            "variables/variables.data-00000-of-00001",
        ] {
            std::fs::copy(src.join(f), v.join(f)).expect("copy");
        }
    }
    std::fs::write(
        batched.join("batching_params.pbtxt"),
        "max_batch_size { value: 4 }\n",
    )
    .expect("write");
    let config = dir.join("models.config");
    std::fs::write(
        &config,
        format!(
            "model_config_list {{ config {{ name: 'batched' base_path: '{}' }} config {{ name: 'plain' base_path: '{}' }} }}",
            dir.join("batched").display(),
            dir.join("plain").display()
        ),
    )
    .expect("write");
    let cfg = format!("--model_config_file={}", config.display());
    let server = Server::start_ready(&[
        &cfg,
        "--enable_per_model_batching_parameters",
        "--aegis_version_settle_seconds=0",
    ]);
    let row = format!("[{}]", vec!["0.5"; 784].join(","));
    let five = format!("{{\"instances\": [{}]}}", vec![row.clone(); 5].join(","));
    let resp = server.post("/v1/models/batched:predict", &five);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(
        resp.error(),
        "Task size 5 is larger than maximum input batch size 4"
    );
    assert_eq!(server.post("/v1/models/plain:predict", &five).status, 200);
    let four = format!("{{\"instances\": [{}]}}", vec![row; 4].join(","));
    assert_eq!(server.post("/v1/models/batched:predict", &four).status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

type Predictor =
    aegis_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient<
        tonic::transport::Channel,
    >;

/// A Predict of `rows` copies of the CNN golden `batch1` image, sent as `tensor_content`.
fn cnn_rows(rows: usize, signature: &str) -> aegis_proto::tensorflow::serving::PredictRequest {
    use aegis_proto::tensorflow::serving::{ModelSpec, PredictRequest};
    use aegis_proto::tensorflow::{tensor_shape_proto::Dim, TensorProto, TensorShapeProto};
    let case = cases(&golden("cnn"))
        .into_iter()
        .find(|c| c.name == "batch1")
        .expect("batch1");
    let image: Vec<u8> = case.inputs[0]
        .1
        .values
        .iter()
        .flat_map(|v| (v.as_f64().expect("float") as f32).to_le_bytes())
        .collect();
    let dim = |size: usize| Dim {
        size: size as i64,
        name: String::new(),
    };
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: "cnn".into(),
            signature_name: signature.into(),
            ..Default::default()
        }),
        inputs: [(
            "image".to_string(),
            TensorProto {
                dtype: 1,
                tensor_shape: Some(TensorShapeProto {
                    dim: vec![dim(rows), dim(32), dim(32), dim(3)],
                    unknown_rank: false,
                }),
                tensor_content: image.repeat(rows),
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

/// Sends `rows` images to the CNN; `Ok(n)` with the rows answered, each checked against the
/// golden (both signatures are the same function).
async fn predict_rows(
    client: &Predictor,
    rows: usize,
    timeout: Option<Duration>,
    signature: &str,
) -> Result<usize, tonic::Status> {
    let mut request = tonic::Request::new(cnn_rows(rows, signature));
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    let resp = client.clone().predict(request).await?.into_inner();
    let want = &cases(&golden("cnn"))
        .into_iter()
        .find(|c| c.name == "batch1")
        .expect("batch1")
        .outputs[0]
        .1;
    let y = &resp.outputs["output_0"];
    let got: Vec<f32> = if y.float_val.is_empty() {
        y.tensor_content
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        y.float_val.clone()
    };
    assert_eq!(got.len(), rows * 10);
    for (i, (g, w)) in got.iter().zip(want.values.iter().cycle()).enumerate() {
        let w = w.as_f64().expect("float");
        assert!(
            (f64::from(*g) - w).abs() <= 1e-6 + 1e-5 * w.abs(),
            "[{i}]: {g} vs {w}"
        );
    }
    Ok(rows)
}

/// A new connection (so that requests sent together on several arrive together).
async fn predictor(port: u16) -> Predictor {
    Predictor::new(common::grpc_channel(port).await)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// Slow work without a slow request: every batch of the CNN (~140 us of one core per image) is
/// padded to 1024 images (allowed_batch_sizes), so even a single image takes ~0.15 s to run while
/// a full-size request is only 12 MB, and one worker runs them. Full-size requests sent while a
/// run is under way: one is queued and the others are refused at once with TF Serving's
/// UNAVAILABLE. Behind slow batches, a gRPC deadline and `--rest_api_timeout_in_ms` that expire
/// while queued answer DEADLINE_EXCEEDED, and those requests are dropped, never run.
///
/// The margins are what keep this steady on a loaded machine: a run lasts several times longer
/// than it takes the full-size requests to arrive, and the backlog the deadlines wait behind is
/// about four times the longer deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_queue_deadlines_and_cancellation_behind_slow_batches() {
    const SIZE: usize = 1024;
    let dir = scratch("queue");
    let mut flags = batching_flags(
        &dir,
        &[("cnn", "tensorflow")],
        &format!(
            "max_batch_size {{ value: {SIZE} }}\nallowed_batch_sizes: {SIZE}\n\
             max_enqueued_batches {{ value: 1 }}\nnum_batch_threads {{ value: 1 }}\n"
        ),
    );
    flags.push("--rest_api_timeout_in_ms=100".to_string());
    // One TensorFlow thread per run, whatever the cores (with one worker, TF's default would
    // split each run over all of them and shorten the backlog).
    flags.push("--tensorflow_intra_op_parallelism=1".to_string());
    flags.push("--tensorflow_inter_op_parallelism=-1".to_string());
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_with("", &args, &[("AEGIS_LOG", "info,aegis_batch=debug")]);
    let client = predictor(server.grpc_port).await;
    // Warm up (the first TensorFlow run is slower); a single image padded to SIZE is still right.
    assert_eq!(
        predict_rows(&client, 1, None, "").await.expect("warm-up"),
        1
    );

    // Full-size requests, each on its own connection, sent together while a padded single
    // image runs: the queue holds one batch's worth of rows, so one waits and the rest are
    // refused. (Should the flood reach the server before the worker has taken the single image,
    // that image's row fills the queue too and all five are refused: still the full queue.)
    let mut connections = Vec::new();
    for _ in 0..5 {
        connections.push(predictor(server.grpc_port).await);
    }
    let first = {
        let c = client.clone();
        tokio::spawn(async move { predict_rows(&c, 1, None, "").await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let full: Vec<_> = connections
        .into_iter()
        .map(|c| tokio::spawn(async move { predict_rows(&c, SIZE, None, "").await }))
        .collect();
    let mut refused = 0;
    for f in full {
        match f.await.expect("join") {
            Ok(n) => assert_eq!(n, SIZE),
            Err(err) => {
                assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
                assert_eq!(
                    err.message(),
                    "The batch scheduling queue to which this task was submitted is full"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(first.await.expect("join").expect("first"), 1);
    // The exact bound is checked in aegis-batch; here, that the server refuses over real sockets.
    assert!((1..=5).contains(&refused), "{refused} refused");

    // One image running (padded to SIZE); queued behind it single images of the `serve` and
    // `serving_default` signatures, which cannot share a batch: a backlog of three slow runs.
    let slow = |signature: &'static str| {
        let c = client.clone();
        tokio::spawn(async move { predict_rows(&c, 1, None, signature).await })
    };
    let running = slow("serving_default");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let queued = [slow("serve"), slow("serving_default")];
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Queued behind them (sent together, so both are queued while the backlog is at its
    // longest), a gRPC deadline and the REST timeout expire.
    let pixel = "[0.25,0.25,0.25]";
    let line = format!("[{}]", vec![pixel; 32].join(","));
    let image = format!("[{}]", vec![line.as_str(); 32].join(","));
    let rest = tokio::task::spawn_blocking({
        let port = server.port;
        move || {
            common::request(
                port,
                "POST",
                "/v1/models/cnn:predict",
                &[("Content-Type", "application/json")],
                format!("{{\"instances\": [{image}]}}").as_bytes(),
            )
        }
    });
    let err = predict_rows(&client, 1, Some(Duration::from_millis(50)), "")
        .await
        .unwrap_err();
    // tonic's client enforces the deadline it sends as well, so either side may report it first
    // (the server's answer, DEADLINE_EXCEEDED, is checked in grpc_api.rs); what matters here is
    // that the server drops the request unrun (checked from its log below).
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    let rest = rest.await.expect("rest");
    assert_eq!(rest.status, 504, "{}", rest.text());
    assert_eq!(running.await.expect("join").expect("running"), 1);
    for q in queued {
        assert_eq!(q.await.expect("join").expect("queued"), 1);
    }
    // The worker dropped both expired requests instead of running them.
    assert_eq!(predict_rows(&client, 2, None, "").await.expect("after"), 2);
    let log = server.log();
    let dropped: usize = log
        .lines()
        .filter(|l| l.contains("cancelled requests"))
        .filter_map(|l| l.split("dropped=").nth(1))
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .sum();
    // Both, unless (on a loaded machine) the REST request ran out of time before it was queued.
    assert!((1..=2).contains(&dropped), "dropped {dropped}; log:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
