//! KServe v2's gRPC service (`inference.GRPCInferenceService`) and the repository REST routes,
//! end to end: the real `aegis` binary serving the fixtures, called with a tonic client built
//! from the project's `inference` proto. Outputs are checked against TensorFlow's golden values
//! (`fixtures/golden/`), errors against the codes the v2 protocol uses, and after each bad
//! request the server must still serve.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use aegis_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use aegis_proto::inference::{
    infer_parameter::ParameterChoice, model_infer_request::InferInputTensor, InferParameter,
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelReadyRequest, ModelStatisticsRequest, RepositoryIndexRequest, RepositoryModelLoadRequest,
    RepositoryModelUnloadRequest, ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
};
use common::golden::{binary_of, cases, check_tensor, decode_binary, nest, v2_datatype, Case};
use common::{fixture_model, golden, Server};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

type Client = GrpcInferenceServiceClient<Channel>;

/// Writes a config serving `models` (the versioned fixture with every version) and starts a
/// server on it.
fn start(tag: &str, models: &[&str]) -> Server {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("aegis-kserve-grpc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut text = String::from("model_config_list {\n");
    for m in models {
        let policy = if *m == "versioned" {
            " model_version_policy { all {} }"
        } else {
            ""
        };
        text.push_str(&format!(
            "  config {{ name: '{m}' base_path: '{}' model_platform: 'tensorflow'{policy} }}\n",
            fixture_model(m).display()
        ));
    }
    text.push_str("}\n");
    let path = dir.join("models.config");
    std::fs::write(&path, text).expect("write config");
    let arg = format!("--model_config_file={}", path.display());
    Server::start_with("", &[&arg], &[])
}

async fn client(server: &Server) -> Client {
    GrpcInferenceServiceClient::new(common::grpc_channel(server.grpc_port).await)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn string_param(s: &str) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(s.to_string())),
    }
}

/// A ModelInfer request for a golden case: raw contents, or typed contents where the dtype has
/// a typed field.
fn request(model: &str, case: &Case, raw: bool) -> ModelInferRequest {
    let mut inputs = Vec::new();
    let mut raw_contents = Vec::new();
    for (name, t) in &case.inputs {
        let contents = if raw {
            raw_contents.push(binary_of(t));
            None
        } else {
            Some(typed(&t.dtype, &t.values))
        };
        inputs.push(InferInputTensor {
            name: name.clone(),
            datatype: v2_datatype(&t.dtype).to_string(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            parameters: Default::default(),
            contents,
        });
    }
    let mut parameters = std::collections::HashMap::new();
    if case.signature != "serving_default" {
        parameters.insert("signature_name".to_string(), string_param(&case.signature));
    }
    ModelInferRequest {
        model_name: model.to_string(),
        model_version: String::new(),
        id: format!("case-{}", case.name),
        parameters,
        inputs,
        outputs: Vec::new(),
        raw_input_contents: raw_contents,
    }
}

fn typed(dtype: &str, values: &[Value]) -> InferTensorContents {
    use base64::Engine;
    let mut c = InferTensorContents::default();
    let i = |v: &Value| v.as_i64().expect("int");
    let f = |v: &Value| match v.as_str() {
        Some("NaN") => f64::NAN,
        Some("Infinity") => f64::INFINITY,
        Some("-Infinity") => f64::NEG_INFINITY,
        _ => v.as_f64().expect("number"),
    };
    for v in values {
        match dtype {
            "bool" => c.bool_contents.push(v.as_bool().expect("bool")),
            "int8" | "int16" | "int32" => c.int_contents.push(i(v) as i32),
            "int64" => c.int64_contents.push(i(v)),
            "uint8" | "uint16" | "uint32" => c.uint_contents.push(i(v) as u32),
            "uint64" => c.uint64_contents.push(v.as_u64().expect("u64")),
            "float32" => c.fp32_contents.push(f(v) as f32),
            "float64" => c.fp64_contents.push(f(v)),
            "string" => c.bytes_contents.push(
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().expect("b64"))
                    .expect("golden base64"),
            ),
            other => panic!("no typed contents for {other}"),
        }
    }
    c
}

fn check(case: &Case, resp: &ModelInferResponse) {
    assert_eq!(resp.id, format!("case-{}", case.name));
    assert_eq!(resp.model_version, case.version.to_string());
    assert_eq!(resp.outputs.len(), case.outputs.len(), "{}", case.name);
    assert_eq!(resp.raw_output_contents.len(), resp.outputs.len());
    for (name, want) in &case.outputs {
        let i = resp
            .outputs
            .iter()
            .position(|o| &o.name == name)
            .unwrap_or_else(|| panic!("{}: no output {name}", case.name));
        let out = &resp.outputs[i];
        assert_eq!(
            out.datatype,
            v2_datatype(&want.dtype),
            "{}/{name}",
            case.name
        );
        let shape: Vec<usize> = out.shape.iter().map(|&d| d as usize).collect();
        assert_eq!(shape, want.shape, "{}/{name}", case.name);
        let values = decode_binary(&out.datatype, &resp.raw_output_contents[i]);
        if want.dtype == "string" {
            assert_eq!(values, want.values, "{}/{name}", case.name);
        } else {
            check_tensor(&case.name, name, want, &nest(&values, &shape));
        }
    }
}

#[tokio::test]
async fn infer_raw_and_typed_matches_tensorflow() {
    let server = start(
        "infer",
        &["half_plus_two", "multi_io", "dtypes", "versioned"],
    );
    let mut c = client(&server).await;
    let mut checked = 0;
    for model in ["half_plus_two", "multi_io", "dtypes"] {
        for case in cases(&golden(model)) {
            let resp = c
                .model_infer(request(model, &case, true))
                .await
                .unwrap_or_else(|e| panic!("{model}/{}: {e}", case.name))
                .into_inner();
            check(&case, &resp);
            let no_typed = case
                .inputs
                .iter()
                .any(|(_, t)| t.dtype == "float16" || t.dtype == "bfloat16");
            if !no_typed {
                let resp = c
                    .model_infer(request(model, &case, false))
                    .await
                    .unwrap_or_else(|e| panic!("{model}/{} typed: {e}", case.name))
                    .into_inner();
                check(&case, &resp);
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} golden cases");

    // Version selection: "" is the latest; each version answers its own golden values.
    for case in cases(&golden("versioned")) {
        let mut req = request("versioned", &case, true);
        req.model_version = case.version.to_string();
        let resp = c.model_infer(req).await.expect("versioned").into_inner();
        check(&case, &resp);
    }
    let latest = cases(&golden("versioned"))
        .into_iter()
        .max_by_key(|c| c.version)
        .expect("cases");
    let resp = c
        .model_infer(request("versioned", &latest, true))
        .await
        .expect("latest")
        .into_inner();
    check(&latest, &resp);

    // Only some outputs.
    let case = &cases(&golden("multi_io"))[0];
    let mut req = request("multi_io", case, true);
    let first = case.outputs[0].0.clone();
    req.outputs = vec![
        aegis_proto::inference::model_infer_request::InferRequestedOutputTensor {
            name: first.clone(),
            parameters: Default::default(),
        },
    ];
    let resp = c.model_infer(req).await.expect("filtered").into_inner();
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!(resp.outputs[0].name, first);
}

#[tokio::test]
async fn health_and_metadata() {
    let server = start("meta", &["half_plus_two", "versioned"]);
    let mut c = client(&server).await;
    assert!(
        c.server_live(ServerLiveRequest {})
            .await
            .expect("live")
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(ServerReadyRequest {})
            .await
            .expect("ready")
            .into_inner()
            .ready
    );
    let ready = |name: &str, version: &str| ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        c.model_ready(ready("half_plus_two", ""))
            .await
            .expect("r")
            .into_inner()
            .ready
    );
    assert!(
        c.model_ready(ready("versioned", "1"))
            .await
            .expect("r")
            .into_inner()
            .ready
    );
    assert!(
        !c.model_ready(ready("versioned", "9"))
            .await
            .expect("r")
            .into_inner()
            .ready
    );
    assert!(
        !c.model_ready(ready("nope", ""))
            .await
            .expect("r")
            .into_inner()
            .ready
    );

    let meta = c
        .server_metadata(ServerMetadataRequest {})
        .await
        .expect("server metadata")
        .into_inner();
    assert_eq!(meta.name, "aegis");
    for ext in ["binary_tensor_data", "model_repository", "statistics"] {
        assert!(meta.extensions.iter().any(|e| e == ext), "{ext}");
    }
    let m = c
        .model_metadata(ModelMetadataRequest {
            name: "half_plus_two".into(),
            version: String::new(),
        })
        .await
        .expect("model metadata")
        .into_inner();
    assert_eq!(m.name, "half_plus_two");
    assert_eq!(m.platform, "tensorflow_savedmodel");
    assert_eq!(m.versions, vec!["123"]);
    assert_eq!(m.inputs[0].name, "x");
    assert_eq!(m.inputs[0].datatype, "FP32");
    let v = c
        .model_metadata(ModelMetadataRequest {
            name: "versioned".into(),
            version: String::new(),
        })
        .await
        .expect("versioned metadata")
        .into_inner();
    assert_eq!(v.versions, vec!["2", "1"]);
    let e = c
        .model_metadata(ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

fn hpt(shape: Vec<i64>, datatype: &str) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "half_plus_two".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: datatype.into(),
            shape,
            parameters: Default::default(),
            contents: None,
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn malformed_requests_get_codes_and_the_server_keeps_serving() {
    let mut server = start("errors", &["half_plus_two"]);
    let mut c = client(&server).await;
    let floats = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    let ok = {
        let mut r = hpt(vec![3], "FP32");
        r.raw_input_contents = vec![floats(&[1.0, 2.0, 5.0])];
        r
    };

    let mut bad = Vec::new();
    // Unknown model and version.
    let mut r = ok.clone();
    r.model_name = "nope".into();
    bad.push((
        r,
        Code::NotFound,
        "Request for unknown model: 'nope' is not found",
    ));
    let mut r = ok.clone();
    r.model_version = "7".into();
    bad.push((r, Code::NotFound, "'half_plus_two' version 7 is not found"));
    let mut r = ok.clone();
    r.model_version = "latest".into();
    bad.push((r, Code::InvalidArgument, "integer"));
    // Raw contents with the wrong byte count.
    let mut r = ok.clone();
    r.raw_input_contents = vec![floats(&[1.0, 2.0])];
    bad.push((r, Code::InvalidArgument, "need 12 bytes"));
    // More raw entries than inputs.
    let mut r = ok.clone();
    r.raw_input_contents.push(vec![0; 4]);
    bad.push((r, Code::InvalidArgument, "2 entries for 1 inputs"));
    // Unknown datatype.
    let mut r = ok.clone();
    r.inputs[0].datatype = "FLOAT".into();
    bad.push((r, Code::InvalidArgument, "unknown datatype 'FLOAT'"));
    // A datatype the model does not take.
    let mut r = hpt(vec![3], "INT32");
    r.raw_input_contents = vec![vec![0; 12]];
    bad.push((r, Code::InvalidArgument, "dtype"));
    // Typed contents that do not match the shape, or sit in the wrong field.
    let mut r = hpt(vec![4], "FP32");
    r.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![1.0, 2.0, 3.0],
        ..Default::default()
    });
    bad.push((r, Code::InvalidArgument, "needs 4 elements"));
    let mut r = hpt(vec![1], "FP32");
    r.inputs[0].contents = Some(InferTensorContents {
        int64_contents: vec![1],
        ..Default::default()
    });
    bad.push((r, Code::InvalidArgument, "int64_contents"));
    // Negative dimension; contents and raw both.
    bad.push((hpt(vec![-1], "FP32"), Code::InvalidArgument, "non-negative"));
    let mut r = ok.clone();
    r.inputs[0].contents = Some(InferTensorContents::default());
    bad.push((r, Code::InvalidArgument, "one or the other"));
    // Unknown input and output names.
    let mut r = ok.clone();
    r.inputs[0].name = "q".into();
    bad.push((r, Code::InvalidArgument, "q"));
    let mut r = ok.clone();
    r.outputs = vec![
        aegis_proto::inference::model_infer_request::InferRequestedOutputTensor {
            name: "zz".into(),
            parameters: Default::default(),
        },
    ];
    bad.push((r, Code::InvalidArgument, "zz"));
    // Unknown signature.
    let mut r = ok.clone();
    r.parameters
        .insert("signature_name".into(), string_param("nope"));
    bad.push((r, Code::InvalidArgument, "signature 'nope'"));

    for (req, code, needle) in bad {
        let e = c.model_infer(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e}");
        assert!(e.message().contains(needle), "{req:?}: {}", e.message());
        let resp = c.model_infer(ok.clone()).await.expect("still serving");
        assert_eq!(
            resp.into_inner().raw_output_contents[0],
            floats(&[2.5, 3.0, 4.5])
        );
    }
    assert!(server.alive());
}

#[tokio::test]
async fn repository_index_load_unload_over_grpc_and_rest() {
    let mut server = start("repo", &["half_plus_two", "versioned"]);
    let mut c = client(&server).await;
    let index = |ready: bool| RepositoryIndexRequest {
        repository_name: String::new(),
        ready,
    };
    let idx = c
        .repository_index(index(false))
        .await
        .expect("index")
        .into_inner();
    let lines: Vec<(String, String, String)> = idx
        .models
        .iter()
        .map(|m| (m.name.clone(), m.version.clone(), m.state.clone()))
        .collect();
    for (n, v) in [
        ("half_plus_two", "123"),
        ("versioned", "1"),
        ("versioned", "2"),
    ] {
        assert!(
            lines.contains(&(n.into(), v.into(), "READY".into())),
            "{lines:?}"
        );
    }

    let unload = |name: &str| RepositoryModelUnloadRequest {
        repository_name: String::new(),
        model_name: name.into(),
        parameters: Default::default(),
    };
    let load = |name: &str| RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: name.into(),
        parameters: Default::default(),
    };
    c.repository_model_unload(unload("versioned"))
        .await
        .expect("unload");
    let ready = |name: &str| ModelReadyRequest {
        name: name.into(),
        version: String::new(),
    };
    assert!(
        !c.model_ready(ready("versioned"))
            .await
            .expect("r")
            .into_inner()
            .ready
    );
    // Unloading one model on purpose leaves the server ready.
    assert!(
        c.server_ready(ServerReadyRequest {})
            .await
            .expect("r")
            .into_inner()
            .ready
    );
    let case = &cases(&golden("versioned"))[0];
    let e = c
        .model_infer(request("versioned", case, true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Listed as unavailable, and only ready versions with `ready`.
    let mut unloaded = false;
    for _ in 0..100 {
        let idx = c
            .repository_index(index(false))
            .await
            .expect("index")
            .into_inner();
        unloaded = idx
            .models
            .iter()
            .filter(|m| m.name == "versioned")
            .all(|m| m.state == "UNAVAILABLE" && m.reason == "unloaded");
        if unloaded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(unloaded);
    let idx = c
        .repository_index(index(true))
        .await
        .expect("index")
        .into_inner();
    assert!(
        idx.models.iter().all(|m| m.name == "half_plus_two"),
        "{idx:?}"
    );

    // Re-applying a config that still lists the model does not bring it back.
    {
        use aegis_proto::tensorflow::serving::model_service_client::ModelServiceClient;
        use aegis_proto::tensorflow::serving::{
            model_server_config, ModelConfig, ModelConfigList, ModelServerConfig,
            ReloadConfigRequest,
        };
        let model = |name: &str| ModelConfig {
            name: name.into(),
            base_path: fixture_model(name).display().to_string(),
            model_platform: "tensorflow".into(),
            ..Default::default()
        };
        let mut admin =
            ModelServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc_port))
                .await
                .expect("connect");
        admin
            .handle_reload_config_request(ReloadConfigRequest {
                config: Some(ModelServerConfig {
                    config: Some(model_server_config::Config::ModelConfigList(
                        ModelConfigList {
                            config: vec![model("half_plus_two"), model("versioned")],
                        },
                    )),
                }),
                metric_names: vec![],
            })
            .await
            .expect("reload");
        let r = c.model_ready(ready("versioned")).await.expect("r");
        assert!(
            !r.into_inner().ready,
            "a config re-apply brought an unloaded model back"
        );
    }

    c.repository_model_load(load("versioned"))
        .await
        .expect("load");
    assert!(
        c.model_ready(ready("versioned"))
            .await
            .expect("r")
            .into_inner()
            .ready
    );
    let resp = c
        .model_infer(request("versioned", case, true))
        .await
        .expect("infer after load");
    assert!(!resp.into_inner().outputs.is_empty());

    // Unknown names, a named repository and config overrides are errors naming the problem.
    let e = c.repository_model_load(load("nope")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("'nope'"), "{}", e.message());
    let e = c.repository_model_unload(unload("nope")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .repository_index(RepositoryIndexRequest {
            repository_name: "other".into(),
            ready: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // The same over REST.
    let r = server.post("/v2/repository/models/half_plus_two/unload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.get("/v2/models/half_plus_two/ready").status, 503);
    let r = server.post("/v2/repository/index", "{}");
    assert_eq!(r.status, 200);
    let list = r.json();
    let hpt: Vec<&Value> = list
        .as_array()
        .expect("array")
        .iter()
        .filter(|m| m["name"] == "half_plus_two")
        .collect();
    assert!(!hpt.is_empty());
    assert!(hpt.iter().all(|m| m["state"] != json!("READY")), "{list}");
    let r = server.post("/v2/repository/models/half_plus_two/load", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.get("/v2/models/half_plus_two/ready").status, 200);
    let r = server.post("/v2/repository/index", r#"{"ready": true}"#);
    let list = r.json();
    assert!(list
        .as_array()
        .expect("array")
        .iter()
        .all(|m| m["state"] == json!("READY")));
    let r = server.post("/v2/repository/models/nope/load", "");
    assert_eq!(r.status, 404);
    assert!(r.error().contains("'nope'"), "{}", r.text());
    let r = server.post(
        "/v2/repository/models/half_plus_two/load",
        r#"{"parameters": {"config": "{}"}}"#,
    );
    assert_eq!(r.status, 400);
    let r = server.post("/v2/repository/index", "not json");
    assert_eq!(r.status, 400);
    assert!(server.alive());
}

#[tokio::test]
async fn statistics_move_with_requests() {
    let server = start("stats", &["half_plus_two"]);
    let mut c = client(&server).await;
    let stats = |name: &str| ModelStatisticsRequest {
        name: name.into(),
        version: String::new(),
    };
    let before = c
        .model_statistics(stats("half_plus_two"))
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(before.model_stats.len(), 1);
    let s0 = &before.model_stats[0];
    assert_eq!(
        (s0.name.as_str(), s0.version.as_str()),
        ("half_plus_two", "123")
    );
    let case = &cases(&golden("half_plus_two"))[0];
    for _ in 0..3 {
        c.model_infer(request("half_plus_two", case, true))
            .await
            .expect("infer");
    }
    let mut bad = request("half_plus_two", case, true);
    bad.raw_input_contents[0].push(0);
    // Rejected before it reaches the model: not a model failure.
    assert!(c.model_infer(bad).await.is_err());
    let mut wrong = request("half_plus_two", case, true);
    wrong.inputs[0].name = "q".into();
    assert!(c.model_infer(wrong).await.is_err());

    let after = c
        .model_statistics(stats("half_plus_two"))
        .await
        .expect("stats")
        .into_inner();
    let s = &after.model_stats[0];
    let inf = s.inference_stats.as_ref().expect("inference_stats");
    let d = |x: &Option<aegis_proto::inference::StatisticDuration>| {
        x.as_ref().map_or((0, 0), |x| (x.count, x.ns))
    };
    let s0inf = s0.inference_stats.unwrap_or_default();
    assert_eq!(d(&inf.success).0 - d(&s0inf.success).0, 3);
    assert!(d(&inf.success).1 > 0);
    assert_eq!(d(&inf.fail).0 - d(&s0inf.fail).0, 1);
    assert_eq!(s.execution_count - s0.execution_count, 3);
    let rows = case.inputs[0].1.shape[0] as u64;
    assert_eq!(s.inference_count - s0.inference_count, 3 * rows);
    assert!(d(&inf.compute_infer).0 >= 3 && d(&inf.compute_infer).1 > 0);
    assert!(d(&inf.queue).0 >= 3);
    assert!(s.last_inference > 0);

    // Every model; unknown ones are NOT_FOUND.
    let all = c
        .model_statistics(stats(""))
        .await
        .expect("all")
        .into_inner();
    assert_eq!(all.model_stats.len(), 1);
    let e = c.model_statistics(stats("nope")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // REST renders the same numbers.
    let r = server.get("/v2/models/half_plus_two/stats");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let m = &j["model_stats"][0];
    assert_eq!(m["name"], "half_plus_two");
    assert_eq!(m["version"], "123");
    assert!(
        m["inference_stats"]["success"]["count"]
            .as_u64()
            .expect("count")
            >= 3
    );
    let r = server.get("/v2/models/half_plus_two/versions/123/stats");
    assert_eq!(r.status, 200);
    let r = server.get("/v2/models/stats");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model_stats"].as_array().map(Vec::len), Some(1));
    assert_eq!(server.get("/v2/models/nope/stats").status, 404);
}
