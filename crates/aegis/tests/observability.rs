//! Observability end to end: the Prometheus endpoint (`--monitoring_config_file`), the metrics
//! each protocol records per outcome, request ids (`x-request-id`) on responses and in the JSON
//! log lines of their request.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use aegis_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use aegis_proto::inference::{
    model_infer_request::InferInputTensor, InferTensorContents, ModelInferRequest,
};
use aegis_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use aegis_proto::tensorflow::serving::{ModelSpec, PredictRequest};
use aegis_proto::tensorflow::{tensor_shape_proto::Dim, TensorProto, TensorShapeProto};
use common::{fixture_model, request, Server};
use serde_json::Value;
use tonic::transport::Channel;

const MODEL: &str = "half_plus_two";
const DEFAULT_PATH: &str = "/monitoring/prometheus/metrics";

fn write(tag: &str, name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aegis-obs-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// Serves half_plus_two with `extra` flags, JSON logs and debug level for the server crate.
fn start(extra: &[String]) -> Server {
    let mut args = vec![
        format!("--model_name={MODEL}"),
        format!("--model_base_path={}", fixture_model(MODEL).display()),
        "--aegis_log_format=json".to_string(),
    ];
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(MODEL, &args, &[("AEGIS_LOG", "info,aegis_server=debug")])
}

fn start_monitored(tag: &str, config: &str) -> Server {
    let path = write(tag, "monitoring.config", config);
    start(&[format!("--monitoring_config_file={}", path.display())])
}

/// One scrape: every sample by `name{label="value",...}` with the labels sorted by name.
fn scrape(server: &Server, path: &str) -> HashMap<String, f64> {
    let r = server.get(path);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{:?}",
        r.headers
    );
    let mut samples = HashMap::new();
    for line in r
        .text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut labels: Vec<&str> = split_labels(labels);
        labels.sort_unstable();
        samples.insert(
            format!("{name}{{{}}}", labels.join(",")),
            value.parse::<f64>().expect("sample value"),
        );
    }
    samples
}

/// Splits `a="x",b="y"` at the commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    labels.sort_unstable();
    format!("{name}{{{}}}", labels.join(","))
}

fn value(samples: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples.get(&key(name, labels)).copied().unwrap_or(0.0)
}

/// The labels of `aegis_request_duration_seconds` for a request that resolved the model (or
/// not: unknown models and requests failing before the lookup record empty model labels).
fn request_labels<'a>(
    protocol: &'a str,
    api: &'a str,
    resolved: bool,
    outcome: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let (model, version, signature) = if resolved {
        (MODEL, "123", "serving_default")
    } else {
        ("", "", "")
    };
    vec![
        ("protocol", protocol),
        ("api", api),
        ("model", model),
        ("version", version),
        ("signature", signature),
        ("outcome", outcome),
    ]
}

fn tf_predict(model: &str) -> PredictRequest {
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: model.into(),
            ..Default::default()
        }),
        inputs: [(
            "x".to_string(),
            TensorProto {
                dtype: 1,
                tensor_shape: Some(TensorShapeProto {
                    dim: [2, 1]
                        .iter()
                        .map(|&size| Dim {
                            size,
                            name: String::new(),
                        })
                        .collect(),
                    unknown_rank: false,
                }),
                float_val: vec![1.0, 2.0],
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

fn v2_infer(model: &str) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![2, 1],
            parameters: Default::default(),
            contents: Some(InferTensorContents {
                fp32_contents: vec![1.0, 2.0],
                ..Default::default()
            }),
        }],
        ..Default::default()
    }
}

async fn channel(server: &Server) -> Channel {
    common::grpc_channel(server.grpc_port).await
}

fn with_id<T>(message: T, id: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(id) = id {
        r.metadata_mut()
            .insert("x-request-id", id.parse().expect("metadata"));
    }
    r
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The JSON log lines whose span carries `request_id`.
fn log_lines_of(server: &Server, request_id: &str) -> Vec<Value> {
    server
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["span"]["request_id"] == request_id)
        .collect()
}

/// Waits (briefly) for the server to have logged a line of `request_id`: the line is written
/// as the answer goes out, possibly just after the client has it.
fn logged(server: &Server, request_id: &str) -> Vec<Value> {
    for _ in 0..100 {
        let lines = log_lines_of(server, request_id);
        if !lines.is_empty() {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no log line with request_id {request_id}:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn every_protocol_is_counted_per_outcome() {
    let server = start_monitored("counts", "prometheus_config {\n  enable: true\n}\n");
    let before = scrape(&server, DEFAULT_PATH);

    // TF Serving REST: two successes, an unknown model, a malformed body.
    let body = br#"{"instances": [[1.0], [2.0]]}"#;
    for _ in 0..2 {
        let r = server.post(&format!("/v1/models/{MODEL}:predict"), body);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(server.post("/v1/models/nope:predict", body).status, 404);
    assert_eq!(
        server
            .post(&format!("/v1/models/{MODEL}:predict"), b"{")
            .status,
        400
    );
    // TF Serving REST examples APIs: the signature they name is a label once it is known to
    // exist (a regress on `regress_x_to_y`), never for one that is not (a classify on `nope`).
    let examples =
        |sig: &str| format!(r#"{{"signature_name": "{sig}", "examples": [{{"x": 2.0}}]}}"#);
    let r = server.post(
        &format!("/v1/models/{MODEL}:regress"),
        examples("regress_x_to_y").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.post(
        &format!("/v1/models/{MODEL}:classify"),
        examples("nope").as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // KServe v2 REST: a success, an unknown model.
    let v2_body =
        br#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [1.0, 2.0]}]}"#;
    let r = server.post(&format!("/v2/models/{MODEL}/infer"), v2_body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.post("/v2/models/nope/infer", v2_body).status, 404);

    let channel = channel(&server).await;
    // TF Serving gRPC: a success, an unknown model.
    let mut tf = PredictionServiceClient::new(channel.clone());
    tf.predict(tf_predict(MODEL)).await.expect("Predict");
    let e = tf
        .predict(tf_predict("nope"))
        .await
        .expect_err("unknown model");
    assert_eq!(e.code(), tonic::Code::NotFound);
    // KServe v2 gRPC: a success, an unknown model.
    let mut v2 = GrpcInferenceServiceClient::new(channel);
    v2.model_infer(v2_infer(MODEL)).await.expect("ModelInfer");
    let e = v2.model_infer(v2_infer("nope")).await.expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound);

    let after = scrape(&server, DEFAULT_PATH);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let count = "aegis_request_duration_seconds_count";
    for (labels, expected) in [
        (request_labels("tfs_rest", "predict", true, "ok"), 2.0),
        (
            request_labels("tfs_rest", "predict", false, "not_found"),
            1.0,
        ),
        (
            request_labels("tfs_rest", "predict", false, "invalid_argument"),
            1.0,
        ),
        (request_labels("v2_rest", "infer", true, "ok"), 1.0),
        (request_labels("v2_rest", "infer", false, "not_found"), 1.0),
        (request_labels("tfs_grpc", "Predict", true, "ok"), 1.0),
        (
            request_labels("tfs_grpc", "Predict", false, "not_found"),
            1.0,
        ),
        (request_labels("v2_grpc", "ModelInfer", true, "ok"), 1.0),
        (
            request_labels("v2_grpc", "ModelInfer", false, "not_found"),
            1.0,
        ),
    ] {
        assert_eq!(delta(count, &labels), expected, "{}", key(count, &labels));
    }
    for (api, signature, outcome) in [
        ("regress", "regress_x_to_y", "ok"),
        ("classify", "", "invalid_argument"),
    ] {
        let labels = [
            ("protocol", "tfs_rest"),
            ("api", api),
            ("model", MODEL),
            ("version", "123"),
            ("signature", signature),
            ("outcome", outcome),
        ];
        assert_eq!(delta(count, &labels), 1.0, "{}", key(count, &labels));
    }

    // TF Serving's own: every TF API request counted by status, latency of successes only.
    let tf_count = ":tensorflow:serving:request_count";
    assert_eq!(
        delta(tf_count, &[("model_name", MODEL), ("status", "OK")]),
        4.0
    );
    assert_eq!(
        delta(
            tf_count,
            &[("model_name", MODEL), ("status", "INVALID_ARGUMENT")]
        ),
        1.0
    );
    assert_eq!(
        delta(tf_count, &[("model_name", ""), ("status", "NOT_FOUND")]),
        2.0
    );
    assert_eq!(
        delta(
            tf_count,
            &[("model_name", ""), ("status", "INVALID_ARGUMENT")]
        ),
        1.0
    );
    let tf_latency = ":tensorflow:serving:request_latency_count";
    for (api, entrypoint, n) in [
        ("predict", "REST", 2.0),
        ("regress", "REST", 1.0),
        ("Predict", "GRPC", 1.0),
    ] {
        assert_eq!(
            delta(
                tf_latency,
                &[
                    ("model_name", MODEL),
                    ("API", api),
                    ("entrypoint", entrypoint)
                ]
            ),
            n,
            "{api}"
        );
    }

    // The executor side: five successful inferences of two rows each and the regress of one
    // example, one run each.
    let version = [("model", MODEL), ("version", "123")];
    assert_eq!(delta("aegis_queue_duration_seconds_count", &version), 6.0);
    assert_eq!(delta("aegis_run_duration_seconds_count", &version), 6.0);
    assert_eq!(delta("aegis_batch_size_count", &version), 6.0);
    assert_eq!(delta("aegis_batch_size_sum", &version), 11.0);
    assert_eq!(
        delta(
            ":tensorflow:serving:runtime_latency_count",
            &[
                ("model_name", MODEL),
                ("API", ""),
                ("runtime", "tensorflow")
            ]
        ),
        6.0
    );

    // Loads and states, gauges.
    let model_path = fixture_model(MODEL).join("00000123");
    let model_path = model_path.display().to_string();
    assert_eq!(
        value(
            &after,
            ":tensorflow:cc:saved_model:load_attempt_count",
            &[("model_path", &model_path), ("status", "success")]
        ),
        1.0,
        "{after:#?}"
    );
    assert!(
        value(
            &after,
            ":tensorflow:cc:saved_model:load_latency",
            &[("model_path", &model_path)]
        ) > 0.0
    );
    assert_eq!(
        value(
            &after,
            "aegis_model_load_duration_seconds_count",
            &[("model", MODEL), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "aegis_model_version_state",
            &[("model", MODEL), ("version", "123"), ("state", "AVAILABLE")]
        ),
        1.0
    );
    for protocol in ["tfs_rest", "v2_rest", "tfs_grpc", "v2_grpc"] {
        assert_eq!(
            value(
                &after,
                "aegis_requests_in_flight",
                &[("protocol", protocol)]
            ),
            0.0,
            "{protocol}"
        );
    }
    assert!(value(&after, "aegis_process_resident_memory_bytes", &[]) > 1e6);
    // The scrape's own connection, and the gRPC channel.
    assert!(value(&after, "aegis_open_connections", &[("listener", "rest")]) >= 1.0);
    assert!(value(&after, "aegis_open_connections", &[("listener", "grpc")]) >= 1.0);
}

#[tokio::test]
async fn request_ids_come_back_and_tag_the_log_lines() {
    let server = start(&[]);

    // REST: the client's id comes back and is on the request's log line.
    let r = request(
        server.port,
        "POST",
        &format!("/v1/models/{MODEL}:predict"),
        &[("x-request-id", "rest-id-1")],
        br#"{"instances": [[1.0]]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-request-id"), Some("rest-id-1"));
    let lines = logged(&server, "rest-id-1");
    let line = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(line["fields"]["protocol"], "tfs_rest");
    assert_eq!(line["fields"]["outcome"], "ok");
    assert_eq!(line["level"], "DEBUG");
    // No payloads in the logs.
    assert!(!server.log().contains("instances"), "{}", server.log());

    // Generated when absent (and on errors, and outside the API too).
    for (method, path) in [
        ("POST", "/v1/models/nope:predict"),
        ("GET", "/v2/health/live"),
        ("GET", "/nowhere"),
    ] {
        let r = request(server.port, method, path, &[], b"{}");
        let id = r.header("x-request-id").unwrap_or_default();
        assert!(is_generated(id), "{path}: {:?}", r.headers);
    }
    // An unusable id (too long) is replaced.
    let long = "x".repeat(200);
    let r = request(
        server.port,
        "GET",
        "/v2/health/live",
        &[("x-request-id", &long)],
        b"",
    );
    assert!(is_generated(r.header("x-request-id").unwrap_or_default()));

    // gRPC: in the response metadata, on success and on error, and in the log.
    let channel = channel(&server).await;
    let mut tf = PredictionServiceClient::new(channel.clone());
    let resp = tf
        .predict(with_id(tf_predict(MODEL), Some("grpc-id-1")))
        .await
        .expect("Predict");
    assert_eq!(
        resp.metadata().get("x-request-id").map(|v| v.to_str().ok()),
        Some(Some("grpc-id-1"))
    );
    let line = logged(&server, "grpc-id-1");
    assert!(
        line.iter().any(|l| l["fields"]["protocol"] == "tfs_grpc"),
        "{line:?}"
    );
    let e = tf
        .predict(with_id(tf_predict("nope"), Some("grpc-id-2")))
        .await
        .expect_err("unknown model");
    assert_eq!(
        e.metadata().get("x-request-id").map(|v| v.to_str().ok()),
        Some(Some("grpc-id-2"))
    );
    let line = logged(&server, "grpc-id-2");
    assert!(
        line.iter().any(|l| l["fields"]["outcome"] == "not_found"),
        "{line:?}"
    );

    let mut v2 = GrpcInferenceServiceClient::new(channel);
    let resp = v2
        .model_infer(with_id(v2_infer(MODEL), None))
        .await
        .expect("ModelInfer");
    let id = resp
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(is_generated(&id), "{:?}", resp.metadata());
    logged(&server, &id);
}

#[test]
fn metrics_are_served_only_where_configured() {
    // No --monitoring_config_file: 404, as TF Serving.
    let server = start(&[]);
    let r = server.get(DEFAULT_PATH);
    assert_eq!(r.status, 404, "{}", r.text());
    drop(server);

    // A custom path; the default one is then not served.
    let server = start_monitored(
        "path",
        "# custom\nprometheus_config: { enable: true, path: \"/custom/metrics\" }\n",
    );
    let samples = scrape(&server, "/custom/metrics");
    assert!(samples
        .keys()
        .any(|k| k.starts_with("aegis_model_version_state")));
    assert_eq!(server.get(DEFAULT_PATH).status, 404);
    drop(server);

    // Disabled: not served.
    let server = start_monitored("off", "prometheus_config { enable: false }\n");
    assert_eq!(server.get(DEFAULT_PATH).status, 404);
}

#[test]
fn a_bad_monitoring_config_stops_start_up() {
    let path = write(
        "bad",
        "monitoring.config",
        "prometheus_config { port: 9 }\n",
    );
    let args = vec![
        format!("--model_name={MODEL}"),
        format!("--model_base_path={}", fixture_model(MODEL).display()),
        format!("--monitoring_config_file={}", path.display()),
    ];
    let log = Server::try_start(MODEL, &args, &[])
        .err()
        .expect("start-up must fail");
    assert!(log.contains("MonitoringConfig"), "{log}");
}

/// A released version's series go with it (a server rolling out version after version keeps a
/// bounded set), and come back when it serves again.
#[test]
fn series_of_a_released_version_are_dropped() {
    let server = start_monitored("released", "prometheus_config {\n  enable: true\n}\n");
    let of_version = |samples: &HashMap<String, f64>| -> Vec<String> {
        let mut keys: Vec<String> = samples
            .keys()
            .filter(|k| k.starts_with("aegis_") && k.contains("version=\"123\""))
            .filter(|k| !k.starts_with("aegis_model_version_state"))
            .cloned()
            .collect();
        keys.sort_unstable();
        keys
    };
    let predict = || {
        let r = server.post(
            &format!("/v1/models/{MODEL}:predict"),
            br#"{"instances": [1.0]}"#,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    predict();
    let served = of_version(&scrape(&server, DEFAULT_PATH));
    for family in [
        "aegis_request_duration_seconds_count",
        "aegis_queue_duration_seconds_count",
        "aegis_run_duration_seconds_count",
        "aegis_batch_size_count",
    ] {
        assert!(
            served.iter().any(|k| k.starts_with(family)),
            "{family}: {served:#?}"
        );
    }

    let r = server.post(&format!("/v2/repository/models/{MODEL}/unload"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    // Released once its state is END (its last request has ended and its session is closed).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = server.get(&format!("/v1/models/{MODEL}")).json();
        if status["model_version_status"][0]["state"] == "END" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = of_version(&scrape(&server, DEFAULT_PATH));
    assert!(left.is_empty(), "{left:#?}");

    let r = server.post(&format!("/v2/repository/models/{MODEL}/load"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    predict();
    let back = of_version(&scrape(&server, DEFAULT_PATH));
    assert!(
        back.iter()
            .any(|k| k.starts_with("aegis_request_duration_seconds_count")),
        "{back:#?}"
    );
}
