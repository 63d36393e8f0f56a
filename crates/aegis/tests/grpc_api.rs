//! TF Serving's gRPC API, end to end: the real `aegis` binary serving the fixture SavedModels,
//! called with a tonic client built from the project's protos (the same wire format as the
//! official `tensorflow-serving-api` client). Outputs are checked against the values TensorFlow
//! computed when the fixtures were made (`fixtures/golden/`), errors against TF Serving's codes
//! and texts.

mod common;

use aegis_proto::tensorflow::serving::model_service_client::ModelServiceClient;
use aegis_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use aegis_proto::tensorflow::serving::{
    model_spec::VersionChoice, GetModelMetadataRequest, GetModelStatusRequest, ModelSpec,
    PredictRequest, PredictResponse, ReloadConfigRequest, SignatureDefMap,
};
use aegis_proto::tensorflow::{
    tensor_info, tensor_shape_proto::Dim, DataType, TensorProto, TensorShapeProto,
};
use base64::Engine;
use common::golden::{cases, Case, GoldenTensor};
use common::{fixture_model, golden, repo_root, Server};
use prost::Message;
use serde_json::Value;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::Code;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---------------------------------------------------------------------------------------------
// Clients

use common::grpc_channel as channel;

async fn predictor(server: &Server) -> PredictionServiceClient<Channel> {
    PredictionServiceClient::new(channel(server.grpc_port).await)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn spec(name: &str, version: Option<i64>, signature: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: name.to_string(),
        signature_name: signature.to_string(),
        version_choice: version.map(VersionChoice::Version),
    })
}

fn error<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    match r {
        Ok(resp) => panic!("expected an error, got {:?}", resp.into_inner()),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Golden tensors <-> TensorProto

fn shape_proto(dims: &[usize]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|&d| Dim {
                size: d as i64,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}

fn dtype_code(name: &str) -> DataType {
    match name {
        "float16" => DataType::DtHalf,
        "bfloat16" => DataType::DtBfloat16,
        "float32" => DataType::DtFloat,
        "float64" => DataType::DtDouble,
        "int8" => DataType::DtInt8,
        "int16" => DataType::DtInt16,
        "int32" => DataType::DtInt32,
        "int64" => DataType::DtInt64,
        "uint8" => DataType::DtUint8,
        "uint16" => DataType::DtUint16,
        "uint32" => DataType::DtUint32,
        "uint64" => DataType::DtUint64,
        "bool" => DataType::DtBool,
        "string" => DataType::DtString,
        other => panic!("unknown golden dtype {other}"),
    }
}

/// One element, whatever its dtype.
#[derive(Debug, Clone, PartialEq)]
enum Elem {
    F(f64),
    I(i128),
    B(bool),
    S(Vec<u8>),
}

impl Elem {
    fn f(&self) -> f64 {
        match self {
            Elem::F(v) => *v,
            other => panic!("not a float: {other:?}"),
        }
    }
    fn i(&self) -> i128 {
        match self {
            Elem::I(v) => *v,
            other => panic!("not an integer: {other:?}"),
        }
    }
}

fn golden_elems(t: &GoldenTensor) -> Vec<Elem> {
    t.values
        .iter()
        .map(|v| match t.dtype.as_str() {
            "float16" | "bfloat16" | "float32" | "float64" => Elem::F(match v {
                Value::String(s) if s == "NaN" => f64::NAN,
                Value::String(s) if s == "Infinity" => f64::INFINITY,
                Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
                v => v.as_f64().expect("float"),
            }),
            "bool" => Elem::B(v.as_bool().expect("bool")),
            "string" => Elem::S(B64.decode(v.as_str().expect("b64")).expect("base64")),
            _ => Elem::I(
                v.as_i64()
                    .map(i128::from)
                    .or(v.as_u64().map(i128::from))
                    .expect("integer"),
            ),
        })
        .collect()
}

/// TensorFlow's string-list encoding: every length as a varint32, then every byte.
fn string_list(strings: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in strings {
        let mut n = s.len() as u32;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    for s in strings {
        out.extend_from_slice(s);
    }
    out
}

/// A golden tensor as a request `TensorProto`: the dtype's typed field, or `tensor_content`
/// (TensorFlow's string-list encoding for strings).
fn to_proto(t: &GoldenTensor, content: bool) -> TensorProto {
    let dtype = dtype_code(&t.dtype);
    let mut p = TensorProto {
        dtype: dtype as i32,
        tensor_shape: shape_proto(&t.shape),
        ..Default::default()
    };
    let elems = golden_elems(t);
    let mut bytes = Vec::new();
    match t.dtype.as_str() {
        "float32" => {
            p.float_val = elems.iter().map(|e| e.f() as f32).collect();
            for v in &p.float_val {
                bytes.extend(v.to_le_bytes());
            }
        }
        "float64" => {
            p.double_val = elems.iter().map(Elem::f).collect();
            for v in &p.double_val {
                bytes.extend(v.to_le_bytes());
            }
        }
        "float16" | "bfloat16" => {
            let bits: Vec<u16> = elems
                .iter()
                .map(|e| {
                    if t.dtype == "float16" {
                        half::f16::from_f64(e.f()).to_bits()
                    } else {
                        half::bf16::from_f64(e.f()).to_bits()
                    }
                })
                .collect();
            p.half_val = bits.iter().map(|&b| i32::from(b)).collect();
            for b in bits {
                bytes.extend(b.to_le_bytes());
            }
        }
        "int8" | "int16" | "int32" | "uint8" | "uint16" => {
            p.int_val = elems.iter().map(|e| e.i() as i32).collect();
            let width = match t.dtype.as_str() {
                "int8" | "uint8" => 1,
                "int16" | "uint16" => 2,
                _ => 4,
            };
            for e in &elems {
                bytes.extend(&(e.i() as i32).to_le_bytes()[..width]);
            }
        }
        "int64" => {
            p.int64_val = elems.iter().map(|e| e.i() as i64).collect();
            for v in &p.int64_val {
                bytes.extend(v.to_le_bytes());
            }
        }
        "uint32" => {
            p.uint32_val = elems.iter().map(|e| e.i() as u32).collect();
            for v in &p.uint32_val {
                bytes.extend(v.to_le_bytes());
            }
        }
        "uint64" => {
            p.uint64_val = elems.iter().map(|e| e.i() as u64).collect();
            for v in &p.uint64_val {
                bytes.extend(v.to_le_bytes());
            }
        }
        "bool" => {
            p.bool_val = elems.iter().map(|e| e == &Elem::B(true)).collect();
            bytes = p.bool_val.iter().map(|&b| u8::from(b)).collect();
        }
        "string" => {
            p.string_val = elems
                .into_iter()
                .map(|e| match e {
                    Elem::S(s) => s,
                    other => panic!("not a string: {other:?}"),
                })
                .collect();
            bytes = string_list(&p.string_val);
        }
        other => panic!("unknown golden dtype {other}"),
    }
    if content {
        let mut c = TensorProto {
            dtype: p.dtype,
            tensor_shape: p.tensor_shape,
            tensor_content: bytes,
            ..Default::default()
        };
        // An empty tensor has no content at all, which TensorFlow reads the same way.
        if c.tensor_content.is_empty() {
            c.tensor_content = Vec::new();
        }
        return c;
    }
    p
}

/// A response tensor's elements, from `tensor_content` when set, else from the typed field.
fn from_proto(p: &TensorProto) -> (DataType, Vec<usize>, Vec<Elem>) {
    let dtype = DataType::try_from(p.dtype).expect("dtype");
    let shape: Vec<usize> = p
        .tensor_shape
        .as_ref()
        .expect("responses always carry a shape")
        .dim
        .iter()
        .map(|d| d.size as usize)
        .collect();
    let c = &p.tensor_content;
    fn le<const W: usize>(c: &[u8]) -> Vec<[u8; W]> {
        c.chunks_exact(W)
            .map(|b| b.try_into().expect("chunk"))
            .collect()
    }
    let elems: Vec<Elem> = if c.is_empty() {
        match dtype {
            DataType::DtFloat => p.float_val.iter().map(|&v| Elem::F(v.into())).collect(),
            DataType::DtDouble => p.double_val.iter().map(|&v| Elem::F(v)).collect(),
            DataType::DtHalf => p
                .half_val
                .iter()
                .map(|&v| Elem::F(half::f16::from_bits(v as u16).to_f64()))
                .collect(),
            DataType::DtBfloat16 => p
                .half_val
                .iter()
                .map(|&v| Elem::F(half::bf16::from_bits(v as u16).to_f64()))
                .collect(),
            DataType::DtInt8
            | DataType::DtInt16
            | DataType::DtInt32
            | DataType::DtUint8
            | DataType::DtUint16 => p.int_val.iter().map(|&v| Elem::I(v.into())).collect(),
            DataType::DtInt64 => p.int64_val.iter().map(|&v| Elem::I(v.into())).collect(),
            DataType::DtUint32 => p.uint32_val.iter().map(|&v| Elem::I(v.into())).collect(),
            DataType::DtUint64 => p.uint64_val.iter().map(|&v| Elem::I(v.into())).collect(),
            DataType::DtBool => p.bool_val.iter().map(|&v| Elem::B(v)).collect(),
            DataType::DtString => p.string_val.iter().map(|s| Elem::S(s.clone())).collect(),
            other => panic!("unexpected output dtype {other:?}"),
        }
    } else {
        match dtype {
            DataType::DtFloat => le::<4>(c)
                .into_iter()
                .map(|b| Elem::F(f32::from_le_bytes(b).into()))
                .collect(),
            DataType::DtDouble => le::<8>(c)
                .into_iter()
                .map(|b| Elem::F(f64::from_le_bytes(b)))
                .collect(),
            DataType::DtHalf => le::<2>(c)
                .into_iter()
                .map(|b| Elem::F(half::f16::from_le_bytes(b).to_f64()))
                .collect(),
            DataType::DtBfloat16 => le::<2>(c)
                .into_iter()
                .map(|b| Elem::F(half::bf16::from_le_bytes(b).to_f64()))
                .collect(),
            DataType::DtInt8 => c.iter().map(|&b| Elem::I((b as i8).into())).collect(),
            DataType::DtUint8 => c.iter().map(|&b| Elem::I(b.into())).collect(),
            DataType::DtInt16 => le::<2>(c)
                .into_iter()
                .map(|b| Elem::I(i16::from_le_bytes(b).into()))
                .collect(),
            DataType::DtUint16 => le::<2>(c)
                .into_iter()
                .map(|b| Elem::I(u16::from_le_bytes(b).into()))
                .collect(),
            DataType::DtInt32 => le::<4>(c)
                .into_iter()
                .map(|b| Elem::I(i32::from_le_bytes(b).into()))
                .collect(),
            DataType::DtUint32 => le::<4>(c)
                .into_iter()
                .map(|b| Elem::I(u32::from_le_bytes(b).into()))
                .collect(),
            DataType::DtInt64 => le::<8>(c)
                .into_iter()
                .map(|b| Elem::I(i64::from_le_bytes(b).into()))
                .collect(),
            DataType::DtUint64 => le::<8>(c)
                .into_iter()
                .map(|b| Elem::I(u64::from_le_bytes(b).into()))
                .collect(),
            DataType::DtBool => c.iter().map(|&b| Elem::B(b != 0)).collect(),
            other => panic!("unexpected tensor_content for {other:?}"),
        }
    };
    (dtype, shape, elems)
}

/// Compares a response tensor with the golden one: dtype, shape, floats within a tolerance stated
/// per dtype (relative 1e-3 for half, 1e-2 for bfloat16, 1e-5 otherwise), everything else exact.
fn check_tensor(case: &str, alias: &str, want: &GoldenTensor, got: &TensorProto) {
    let (dtype, shape, elems) = from_proto(got);
    assert_eq!(dtype, dtype_code(&want.dtype), "{case}/{alias}: dtype");
    assert_eq!(shape, want.shape, "{case}/{alias}: shape");
    let wanted = golden_elems(want);
    assert_eq!(elems.len(), wanted.len(), "{case}/{alias}: element count");
    let rel = match want.dtype.as_str() {
        "float16" => 1e-3,
        "bfloat16" => 1e-2,
        _ => 1e-5,
    };
    for (i, (g, w)) in elems.iter().zip(&wanted).enumerate() {
        let ok = match (g, w) {
            (Elem::F(g), Elem::F(w)) if w.is_nan() => g.is_nan(),
            (Elem::F(g), Elem::F(w)) if w.is_infinite() => g == w,
            (Elem::F(g), Elem::F(w)) => (g - w).abs() <= 1e-6 + rel * w.abs(),
            (g, w) => g == w,
        };
        assert!(
            ok,
            "{case}/{alias}[{i}]: got {g:?}, TensorFlow computed {w:?}"
        );
    }
}

fn predict_request(
    model: &str,
    case: &Case,
    version: Option<i64>,
    content: bool,
) -> PredictRequest {
    PredictRequest {
        model_spec: spec(model, version, &case.signature),
        inputs: case
            .inputs
            .iter()
            .map(|(alias, t)| (alias.clone(), to_proto(t, content)))
            .collect(),
        ..Default::default()
    }
}

/// Checks a Predict response against a golden case, `model_spec` included.
fn check_response(model: &str, case: &Case, resp: &PredictResponse) {
    assert_eq!(
        resp.model_spec,
        spec(model, Some(case.version), &case.signature),
        "{}: model_spec",
        case.name
    );
    assert_eq!(
        resp.outputs.len(),
        case.outputs.len(),
        "{}: outputs",
        case.name
    );
    for (alias, want) in &case.outputs {
        let got = resp
            .outputs
            .get(alias)
            .unwrap_or_else(|| panic!("{}: no output {alias}", case.name));
        check_tensor(&case.name, alias, want, got);
    }
}

/// Runs every golden case of `model` through Predict, with typed fields and with
/// `tensor_content`, through the latest version and the case's own version. Returns how many
/// cases ran.
async fn check_all_cases(server: &Server, model: &str) -> usize {
    let mut client = predictor(server).await;
    let all = cases(&golden(model));
    for case in &all {
        for content in [false, true] {
            for version in [None, Some(case.version)] {
                let req = predict_request(model, case, version, content);
                let resp = client
                    .predict(req)
                    .await
                    .unwrap_or_else(|e| panic!("{} (content {content}): {e:?}", case.name))
                    .into_inner();
                check_response(model, case, &resp);
            }
        }
    }
    all.len()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread")]
async fn golden_models_match_tensorflow_over_grpc() {
    for (model, count) in [("half_plus_two", 13), ("multi_io", 3), ("mlp", 3)] {
        let server = Server::start(model, &fixture_model(model), &[]);
        assert_eq!(check_all_cases(&server, model).await, count, "{model}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dtype_matches_tensorflow_in_both_encodings() {
    let model = "dtypes";
    // Typed fields out (TF Serving's default), then tensor_content out.
    let server = Server::start(model, &fixture_model(model), &[]);
    assert_eq!(check_all_cases(&server, model).await, 15);
    let mut client = predictor(&server).await;
    let case = cases(&golden(model))
        .into_iter()
        .find(|c| c.name == "bfloat16")
        .expect("bfloat16 case");
    let resp = client
        .predict(predict_request(model, &case, None, false))
        .await
        .expect("predict")
        .into_inner();
    assert!(!resp.outputs["y"].half_val.is_empty());
    assert!(resp.outputs["y"].tensor_content.is_empty());
    drop(server);

    let server = Server::start(
        model,
        &fixture_model(model),
        &["--enable_serialization_as_tensor_content"],
    );
    assert_eq!(check_all_cases(&server, model).await, 15);
    let mut client = predictor(&server).await;
    for case in cases(&golden(model)) {
        let resp = client
            .predict(predict_request(model, &case, None, false))
            .await
            .expect("predict")
            .into_inner();
        let y = &resp.outputs["y"];
        if case.name == "string" {
            // `tf.make_ndarray` cannot read strings from tensor_content: they stay in string_val.
            assert!(y.tensor_content.is_empty() && !y.string_val.is_empty());
        } else {
            assert!(!y.tensor_content.is_empty(), "{}", case.name);
            assert!(
                y.float_val.is_empty() && y.int_val.is_empty() && y.half_val.is_empty(),
                "{}",
                case.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn predict_half_plus_two_and_version_selection() {
    let server = Server::start("half_plus_two", &fixture_model("half_plus_two"), &[]);
    let mut client = predictor(&server).await;
    // TF Serving's documented call: x = [[2.0]] -> y = [[3.0]] (the doc example's golden value).
    let want = cases(&golden("half_plus_two"))
        .into_iter()
        .find(|c| c.name == "doc_example")
        .expect("doc_example");
    assert_eq!(want.inputs[0].1.values[1], 2.0);
    let golden_y = want.outputs[0].1.values[1].as_f64().expect("y");
    for version in [None, Some(123)] {
        let req = PredictRequest {
            model_spec: spec("half_plus_two", version, ""),
            inputs: [(
                "x".to_string(),
                TensorProto {
                    dtype: DataType::DtFloat as i32,
                    tensor_shape: shape_proto(&[1, 1]),
                    float_val: vec![2.0],
                    ..Default::default()
                },
            )]
            .into(),
            output_filter: vec!["y".into()],
            ..Default::default()
        };
        let resp = client.predict(req).await.expect("predict").into_inner();
        assert_eq!(
            resp.model_spec,
            spec("half_plus_two", Some(123), "serving_default")
        );
        let y = &resp.outputs["y"];
        assert_eq!(y.dtype, DataType::DtFloat as i32);
        assert_eq!(y.tensor_shape, shape_proto(&[1, 1]));
        assert_eq!(y.float_val, vec![golden_y as f32]);
    }
    // The fill rule: one value repeated over the shape.
    let req = PredictRequest {
        model_spec: spec("half_plus_two", None, ""),
        inputs: [(
            "x".to_string(),
            TensorProto {
                dtype: DataType::DtFloat as i32,
                tensor_shape: shape_proto(&[3, 1]),
                float_val: vec![2.0],
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    let resp = client.predict(req).await.expect("predict").into_inner();
    assert_eq!(resp.outputs["y"].float_val, vec![3.0; 3]);

    let (code, msg) = error(
        client
            .predict(PredictRequest {
                model_spec: spec("half_plus_two", Some(7), ""),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        (code, msg.as_str()),
        (
            Code::NotFound,
            "Servable not found for request: Specific(half_plus_two, 7)"
        )
    );
    let mut labelled = spec("half_plus_two", None, "");
    if let Some(s) = labelled.as_mut() {
        s.version_choice = Some(VersionChoice::VersionLabel("stable".into()));
    }
    let (code, msg) = error(
        client
            .predict(PredictRequest {
                model_spec: labelled,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        (code, msg.as_str()),
        (
            Code::InvalidArgument,
            "Unrecognized servable version label: stable"
        )
    );

    // A model with two versions serves the latest; the other is not loaded.
    let server = Server::start("versioned", &fixture_model("versioned"), &[]);
    let mut client = predictor(&server).await;
    let all = cases(&golden("versioned"));
    let v2 = all.iter().find(|c| c.version == 2).expect("v2 case");
    for version in [None, Some(2)] {
        let resp = client
            .predict(predict_request("versioned", v2, version, false))
            .await
            .expect("predict")
            .into_inner();
        check_response("versioned", v2, &resp);
    }
    let v1 = all.iter().find(|c| c.version == 1).expect("v1 case");
    let (code, msg) = error(
        client
            .predict(predict_request("versioned", v1, Some(1), false))
            .await,
    );
    assert_eq!(
        (code, msg.as_str()),
        (
            Code::NotFound,
            "Servable not found for request: Specific(versioned, 1)"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_tf_serving_codes_and_texts() {
    let server = Server::start("half_plus_two", &fixture_model("half_plus_two"), &[]);
    let mut client = predictor(&server).await;
    let x = |p: TensorProto| -> std::collections::HashMap<String, TensorProto> {
        [("x".to_string(), p)].into()
    };
    let floats = |dims: &[usize], content: Vec<u8>| TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: shape_proto(dims),
        tensor_content: content,
        ..Default::default()
    };
    let good = || x(floats(&[2], vec![0; 8]));
    let predict = |model_spec: Option<ModelSpec>,
                   inputs: std::collections::HashMap<String, TensorProto>,
                   output_filter: Vec<String>| PredictRequest {
        model_spec,
        inputs,
        output_filter,
        ..Default::default()
    };
    let hp2 = || spec("half_plus_two", None, "");
    let hostile = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: shape_proto(&[1_000_000_000_000]),
        float_val: vec![1.0],
        ..Default::default()
    };
    let int64 = TensorProto {
        dtype: DataType::DtInt64 as i32,
        tensor_shape: shape_proto(&[1]),
        int64_val: vec![1],
        ..Default::default()
    };
    let complex = TensorProto {
        dtype: DataType::DtComplex64 as i32,
        scomplex_val: vec![1.0, 2.0],
        ..Default::default()
    };
    let cases: Vec<(PredictRequest, Code, &str)> =
        vec![
        (predict(None, good(), vec![]), Code::InvalidArgument, "Missing ModelSpec"),
        (
            predict(spec("", None, ""), good(), vec![]),
            Code::InvalidArgument,
            "ModelSpec has no name specified.",
        ),
        (
            predict(spec("nope", None, ""), good(), vec![]),
            Code::NotFound,
            "Servable not found for request: Latest(nope)",
        ),
        (
            predict(spec("half_plus_two", None, "nope"), good(), vec![]),
            Code::FailedPrecondition,
            "Serving signature key \"nope\" not found.",
        ),
        (
            predict(hp2(), Default::default(), vec![]),
            Code::InvalidArgument,
            "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. \
             Missing but required: {x}.",
        ),
        (
            // An unknown alias is reported before its (broken) tensor is parsed.
            predict(
                hp2(),
                [("z".to_string(), floats(&[2], vec![0; 7]))].into(),
                vec![],
            ),
            Code::InvalidArgument,
            "input tensor alias not found in signature: z. Inputs expected to be in the set {x}.",
        ),
        (
            predict(hp2(), x(floats(&[2], vec![0; 7])), vec![]),
            Code::InvalidArgument,
            "tensor parsing error: x: tensor_content holds 7 bytes but shape [2] of float needs 8",
        ),
        (
            predict(hp2(), x(hostile), vec![]),
            Code::InvalidArgument,
            "tensor parsing error: x: a float tensor of shape [1000000000000] would take \
             4000000000000 bytes, more than the 2147483647 bytes a request may decode into",
        ),
        (
            predict(hp2(), x(complex), vec![]),
            Code::InvalidArgument,
            "tensor parsing error: x: dtype DT_COMPLEX64 is not supported",
        ),
        (
            predict(hp2(), x(int64), vec![]),
            Code::InvalidArgument,
            "input 'x' of signature 'serving_default' expects dtype float but the request sent \
             int64",
        ),
        (
            predict(hp2(), good(), vec!["q".into()]),
            Code::InvalidArgument,
            "output tensor alias not found in signature: q Outputs expected to be in the set {y}.",
        ),
        (
            predict(hp2(), good(), vec!["y".into(), "y".into()]),
            Code::InvalidArgument,
            "duplicate output tensor alias: y",
        ),
    ];
    for (req, code, msg) in cases {
        let got = error(client.predict(req.clone()).await);
        assert_eq!(got, (code, msg.to_string()), "{req:?}");
    }

    // Metadata and status errors.
    let meta = |fields: &[&str], model_spec| GetModelMetadataRequest {
        model_spec,
        metadata_field: fields.iter().map(|f| f.to_string()).collect(),
    };
    for (req, code, msg) in [
        (
            meta(&[], hp2()),
            Code::InvalidArgument,
            "GetModelMetadataRequest must specify at least one metadata_field",
        ),
        (
            meta(&["signature_def", "foo"], hp2()),
            Code::InvalidArgument,
            "Metadata field foo is not supported",
        ),
        (
            meta(&["signature_def"], None),
            Code::InvalidArgument,
            "Missing ModelSpec",
        ),
        (
            meta(&["signature_def"], spec("half_plus_two", Some(9), "")),
            Code::NotFound,
            "Servable not found for request: Specific(half_plus_two, 9)",
        ),
    ] {
        assert_eq!(
            error(client.get_model_metadata(req).await),
            (code, msg.to_string())
        );
    }
    let mut models = ModelServiceClient::new(channel(server.grpc_port).await);
    for (req, code, msg) in [
        (
            GetModelStatusRequest { model_spec: None },
            Code::InvalidArgument,
            "Missing ModelSpec",
        ),
        (
            GetModelStatusRequest {
                model_spec: spec("nope", None, ""),
            },
            Code::NotFound,
            "Could not find any versions of model nope",
        ),
        (
            GetModelStatusRequest {
                model_spec: spec("half_plus_two", Some(7), ""),
            },
            Code::NotFound,
            "Could not find version 7 of model half_plus_two",
        ),
    ] {
        assert_eq!(
            error(models.get_model_status(req).await),
            (code, msg.to_string())
        );
    }
    assert_eq!(
        error(
            models
                .handle_reload_config_request(ReloadConfigRequest::default())
                .await
        ),
        (
            Code::InvalidArgument,
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only \
             ModelConfigList is currently supported"
                .to_string()
        )
    );
    // After all that, the server still serves.
    assert!(client.predict(predict(hp2(), good(), vec![])).await.is_ok());
}

/// Compares served signatures with the SignatureDefs TensorFlow reads from saved_model.pb.
fn check_metadata(model: &str, served: &SignatureDefMap) {
    let path = repo_root().join(format!("fixtures/golden/metadata/{model}.json"));
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("metadata golden"))
            .expect("json");
    let want = want["signature_def"].as_object().expect("map");
    let mut want_names: Vec<&String> = want
        .keys()
        .filter(|k| *k != "__saved_model_init_op")
        .collect();
    want_names.sort();
    let mut got_names: Vec<&String> = served
        .signature_def
        .keys()
        .filter(|k| *k != "__saved_model_init_op")
        .collect();
    got_names.sort();
    assert_eq!(got_names, want_names, "{model}: signature names");
    for name in want_names {
        let (w, s) = (&want[name], &served.signature_def[name]);
        assert_eq!(
            s.method_name,
            w["method_name"].as_str().unwrap_or(""),
            "{model}/{name}"
        );
        for (side, infos) in [("inputs", &s.inputs), ("outputs", &s.outputs)] {
            let wm = w[side].as_object().expect("tensor infos");
            assert_eq!(infos.len(), wm.len(), "{model}/{name}/{side}");
            for (alias, wi) in wm {
                let si = &infos[alias];
                assert_eq!(
                    si.encoding,
                    Some(tensor_info::Encoding::Name(
                        wi["name"].as_str().expect("name").to_string()
                    )),
                    "{model}/{name}/{alias}"
                );
                let dtype = DataType::try_from(si.dtype).expect("dtype");
                assert_eq!(
                    dtype.as_str_name(),
                    wi["dtype"].as_str().expect("dtype"),
                    "{model}/{name}/{alias}"
                );
                let shape = si.tensor_shape.as_ref().expect("shape");
                let want_dims: Vec<i64> = wi["tensor_shape"]["dim"]
                    .as_array()
                    .map(|d| {
                        d.iter()
                            .map(|x| x["size"].as_str().expect("size").parse().expect("int"))
                            .collect()
                    })
                    .unwrap_or_default();
                let got_dims: Vec<i64> = shape.dim.iter().map(|d| d.size).collect();
                assert_eq!(got_dims, want_dims, "{model}/{name}/{alias} dims");
                assert_eq!(
                    shape.unknown_rank,
                    wi["tensor_shape"]["unknown_rank"]
                        .as_bool()
                        .unwrap_or(false),
                    "{model}/{name}/{alias} unknown_rank"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_and_status() {
    for model in ["half_plus_two", "multi_io"] {
        let server = Server::start(model, &fixture_model(model), &[]);
        let version = if model == "half_plus_two" { 123 } else { 1 };
        let mut client = predictor(&server).await;
        for v in [None, Some(version)] {
            let resp = client
                .get_model_metadata(GetModelMetadataRequest {
                    model_spec: spec(model, v, "ignored"),
                    metadata_field: vec!["signature_def".into()],
                })
                .await
                .expect("metadata")
                .into_inner();
            assert_eq!(resp.model_spec, spec(model, Some(version), ""));
            assert_eq!(resp.metadata.len(), 1);
            let any = &resp.metadata["signature_def"];
            assert_eq!(
                any.type_url,
                "type.googleapis.com/tensorflow.serving.SignatureDefMap"
            );
            let map = SignatureDefMap::decode(any.value.as_slice()).expect("SignatureDefMap");
            check_metadata(model, &map);
        }

        let mut models = ModelServiceClient::new(channel(server.grpc_port).await);
        for v in [None, Some(version)] {
            let resp = models
                .get_model_status(GetModelStatusRequest {
                    model_spec: spec(model, v, ""),
                })
                .await
                .expect("status")
                .into_inner();
            assert_eq!(resp.model_version_status.len(), 1);
            let s = &resp.model_version_status[0];
            assert_eq!((s.version, s.state), (version, 30)); // AVAILABLE
            let status = s.status.as_ref().expect("status");
            assert_eq!((status.error_code, status.error_message.as_str()), (0, ""));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transport_gzip_large_messages_health_and_reflection() {
    let server = Server::start("mlp", &fixture_model("mlp"), &[]);
    let ch = channel(server.grpc_port).await;

    // gzip both ways.
    let mut client = PredictionServiceClient::new(ch.clone())
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let case = cases(&golden("mlp"))
        .into_iter()
        .find(|c| c.name == "batch4")
        .expect("batch4");
    let resp = client
        .predict(predict_request("mlp", &case, None, false))
        .await
        .expect("gzip predict");
    assert_eq!(
        resp.metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    check_response("mlp", &case, resp.get_ref());

    // A 6.3 MB request (batch 2000 of 784 floats in tensor_content): over the 4 MiB default.
    let rows = 2000;
    let x = &case.inputs[0].1;
    let row_bytes: Vec<Vec<u8>> = golden_elems(x)
        .chunks(784)
        .map(|r| {
            r.iter()
                .flat_map(|e| (e.f() as f32).to_le_bytes())
                .collect()
        })
        .collect();
    let mut content = Vec::with_capacity(rows * 784 * 4);
    for i in 0..rows {
        content.extend_from_slice(&row_bytes[i % 4]);
    }
    let req = PredictRequest {
        model_spec: spec("mlp", None, ""),
        inputs: [(
            "x".to_string(),
            TensorProto {
                dtype: DataType::DtFloat as i32,
                tensor_shape: shape_proto(&[rows, 784]),
                tensor_content: content,
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    assert!(req.encoded_len() > 6_000_000);
    let mut big = predictor(&server).await;
    let resp = big.predict(req).await.expect("large predict").into_inner();
    let (_, shape, out) = from_proto(&resp.outputs["output_0"]);
    assert_eq!(shape, vec![rows, 10]);
    let want = golden_elems(&case.outputs[0].1);
    for (i, row) in out.chunks(10).enumerate() {
        for (g, w) in row.iter().zip(&want[(i % 4) * 10..(i % 4) * 10 + 10]) {
            assert!(
                (g.f() - w.f()).abs() <= 1e-5 + 1e-4 * w.f().abs(),
                "row {i}"
            );
        }
    }

    // grpc.health.v1: the server and TF Serving's two services are SERVING.
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let mut health = HealthClient::new(ch.clone());
    for service in [
        "",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
    ] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            resp.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let (code, _) = error(
        health
            .check(HealthCheckRequest {
                service: "nope".into(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);

    // Server reflection (v1 and v1alpha) lists the services.
    {
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let mut r = ServerReflectionClient::new(ch.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = r
            .server_reflection_info(tokio_stream_once(req))
            .await
            .expect("reflection")
            .into_inner();
        let msg = stream.message().await.expect("message").expect("response");
        let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
            panic!("unexpected reflection answer {msg:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for want in [
            "tensorflow.serving.PredictionService",
            "tensorflow.serving.ModelService",
            "grpc.health.v1.Health",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
    }
    {
        use tonic_reflection::pb::v1alpha::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let mut r = ServerReflectionClient::new(ch);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "tensorflow.serving.PredictionService".into(),
            )),
        };
        let mut stream = r
            .server_reflection_info(tokio_stream_once(req))
            .await
            .expect("reflection")
            .into_inner();
        let msg = stream.message().await.expect("message").expect("response");
        assert!(
            matches!(
                msg.message_response,
                Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
            ),
            "{msg:?}"
        );
    }
}

/// A one-message request stream.
fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send + 'static {
    tonic::codegen::tokio_stream::iter([item])
}

/// One gRPC call over a bare HTTP/2 connection, so that headers such as `grpc-timeout` reach the
/// server as written (tonic's channel acts on that header itself). Returns `grpc-status` and
/// `grpc-message`.
async fn raw_call(
    port: u16,
    path: &str,
    message: &[u8],
    headers: &[(&str, &str)],
) -> (u32, String) {
    let (status, message, _) = raw_call_body(port, path, message, headers).await;
    (status, message)
}

/// [`raw_call`], with the response body (length-prefixed messages) as well.
async fn raw_call_body(
    port: u16,
    path: &str,
    message: &[u8],
    headers: &[(&str, &str)],
) -> (u32, String, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    // With `grpc-encoding: gzip` the message goes gzip-framed (compressed-flag byte 1).
    let gzip = headers.contains(&("grpc-encoding", "gzip"));
    let message = if gzip {
        gzip_stored(message)
    } else {
        message.to_vec()
    };
    let mut body = vec![u8::from(gzip)];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).expect("request"))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes().to_vec();
    let get = |k: &str| {
        parts
            .headers
            .get(k)
            .or(trailers.get(k))
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let status = get("grpc-status")
        .expect("grpc-status")
        .parse()
        .expect("code");
    (
        status,
        percent_decode(&get("grpc-message").unwrap_or_default()),
        body,
    )
}

/// A gzip stream of `data` in stored (uncompressed) deflate blocks: valid gzip without a
/// compressor.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(0xffff).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = chunk.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend((!crc).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

/// `grpc-message` is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn deadlines_and_malformed_messages() {
    let server = Server::start("mlp", &fixture_model("mlp"), &[]);
    let path = "/tensorflow.serving.PredictionService/Predict";
    let case = cases(&golden("mlp"))
        .into_iter()
        .find(|c| c.name == "batch1")
        .expect("batch1");
    let req = predict_request("mlp", &case, None, true).encode_to_vec();
    assert_eq!(raw_call(server.grpc_port, path, &req, &[]).await.0, 0);
    // Advertising gzip (as grpcio does on every call) does not get a compressed answer; only a
    // compressed request does (see the gzip test).
    let (code, _, body) = raw_call_body(
        server.grpc_port,
        path,
        &req,
        &[("grpc-accept-encoding", "identity, deflate, gzip")],
    )
    .await;
    assert_eq!((code, body.first()), (0, Some(&0)), "compressed-flag byte");
    let (code, _, body) = raw_call_body(
        server.grpc_port,
        path,
        &req,
        &[
            ("grpc-encoding", "gzip"),
            ("grpc-accept-encoding", "identity, deflate, gzip"),
        ],
    )
    .await;
    assert_eq!((code, body.first()), (0, Some(&1)), "compressed-flag byte");
    assert_eq!(
        raw_call(server.grpc_port, path, &req, &[("grpc-timeout", "10S")])
            .await
            .0,
        0
    );
    // A spent deadline: DEADLINE_EXCEEDED, as TF Serving answers (tonic's stock server would say
    // CANCELLED).
    assert_eq!(
        raw_call(server.grpc_port, path, &req, &[("grpc-timeout", "0n")]).await,
        (4, "Deadline Exceeded".to_string())
    );
    // Bytes that are not a PredictRequest: an error status, and the server carries on.
    let (code, _) = raw_call(server.grpc_port, path, &[0xff, 0xff, 0xff], &[]).await;
    assert_ne!(code, 0);
    let (code, _) = raw_call(
        server.grpc_port,
        "/tensorflow.serving.Nope/Predict",
        &req,
        &[],
    )
    .await;
    assert_eq!(code, Code::Unimplemented as u32);
    assert_eq!(raw_call(server.grpc_port, path, &req, &[]).await.0, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_alone_when_rest_is_off() {
    let server = Server::start_grpc_only("half_plus_two", &fixture_model("half_plus_two"));
    let mut client = predictor(&server).await;
    let case = &cases(&golden("half_plus_two"))[0];
    let resp = client
        .predict(predict_request("half_plus_two", case, None, false))
        .await
        .expect("predict")
        .into_inner();
    check_response("half_plus_two", case, &resp);
    assert!(server.log().contains("gRPC API listening"));
    assert!(!server.log().contains("REST API listening"));
}

#[test]
fn no_listener_at_all_is_refused_at_start_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aegis"))
        .current_dir(repo_root())
        .args(["serve", "--port=0", "--rest_api_port=0", "--model_name=m"])
        .arg(format!(
            "--model_base_path={}",
            fixture_model("half_plus_two").display()
        ))
        .output()
        .expect("run aegis");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--port=0 and --rest_api_port=0: neither the gRPC nor the REST API"),
        "{stderr}"
    );
}

/// One server, the MLP in every format on its own runtime, each matching its runtime's goldens
/// over gRPC (typed fields and tensor_content).
#[tokio::test(flavor = "multi_thread")]
async fn every_runtime_serves_its_golden_outputs_over_grpc() {
    let server = common::start_mlp_formats("grpc", &[]);
    for (model, _platform) in common::MLP_FORMATS {
        assert!(check_all_cases(&server, model).await >= 2, "{model}");
    }
}
