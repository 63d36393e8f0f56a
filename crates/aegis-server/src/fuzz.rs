//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): every decoder that reads bytes a
//! client sends, driven exactly as the request path drives it, minus the sockets and the model.
//! Each returns normally on any input; a panic, an abort or a runaway allocation is the bug the
//! fuzzer looks for. Not part of the API.

use aegis_core::{DataType, Signature, TensorSpec};
use aegis_proto::inference::ModelInferRequest;
use aegis_proto::tensorflow::serving::PredictRequest;
use aegis_proto::tensorflow::TensorProto;
use prost::Message;

use crate::grpc::tensor_proto;
use crate::http::{json, kserve, tensor_json};

/// What a decoder may allocate for one fuzz input (the server's own limits are larger, and are
/// what the per-request budget tests exercise; here the point is that the budget holds).
const BUDGET: usize = 64 << 20;

fn spec(dtype: DataType) -> TensorSpec {
    TensorSpec {
        tensor_name: "t:0".into(),
        dtype,
        shape: None,
    }
}

/// The signatures the REST decoders convert against: one float input (the common case) and one
/// input of every dtype.
fn signatures() -> [Signature; 2] {
    [
        Signature {
            name: "serving_default".into(),
            method_name: String::new(),
            inputs: vec![("x".into(), spec(DataType::Float32))],
            outputs: vec![("y".into(), spec(DataType::Float32))],
        },
        Signature {
            name: "every_dtype".into(),
            method_name: String::new(),
            inputs: DataType::ALL
                .iter()
                .map(|d| (d.name().to_string(), spec(*d)))
                .collect(),
            outputs: vec![("y_bytes".into(), spec(DataType::String))],
        },
    ]
}

/// TF Serving's predict JSON: the body parser, the conversion to tensors for each signature, and
/// the response writer on what came out.
pub fn rest_predict(body: &[u8]) {
    for sig in signatures() {
        let Ok(parsed) = tensor_json::PredictRequestBody::parse(body) else {
            return;
        };
        let format = parsed.format();
        if let Ok(inputs) = parsed.into_inputs(&sig) {
            let _ = tensor_json::predict_response(format, &inputs);
        }
    }
}

/// The JSON parser alone, and the writer on what it parsed (which must parse again).
pub fn json_value(body: &[u8]) {
    if let Ok(v) = json::parse(body) {
        check_numbers(&v);
        let mut text = Vec::new();
        json::write_value(&mut text, &v);
        if let Err(e) = json::parse(&text) {
            panic!(
                "written JSON does not parse ({e:?}): {}",
                String::from_utf8_lossy(&text)
            );
        }
    }
}

/// Every number's quick `f32` conversion equals the exact one (nearest `f64`, then `f32`).
fn check_numbers(v: &json::Value) {
    match v {
        json::Value::Number(n) => {
            let (quick, exact) = (n.as_f32(), n.as_f64() as f32);
            assert!(
                quick.to_bits() == exact.to_bits() || (quick.is_nan() && exact.is_nan()),
                "{n:?}: as_f32 {quick:e} but as_f64 as f32 {exact:e}"
            );
        }
        json::Value::Array(items) => items.iter().for_each(check_numbers),
        json::Value::Object(members) => members.iter().for_each(|(_, m)| check_numbers(m)),
        _ => {}
    }
}

/// A KServe v2 REST infer body: `header` is the `Inference-Header-Content-Length` value.
pub fn v2_rest_infer(header: Option<&[u8]>, body: &[u8]) {
    let Ok(json_len) = kserve::json_length(header, body.len()) else {
        return;
    };
    let (json_part, mut binary) = body.split_at(json_len);
    let Ok(doc) = json::parse(json_part) else {
        return;
    };
    if let Some(json::Value::Array(inputs)) = doc.get("inputs") {
        for input in inputs {
            if kserve::parse_input(input, &mut binary).is_err() {
                break;
            }
        }
    }
    for sig in signatures() {
        let _ = kserve::parse_outputs(doc.get("outputs"), &sig, false);
    }
}

/// A serialized `TensorProto`: decoded under a budget; what decodes must encode and decode back
/// to the same tensor, in both output encodings.
pub fn tensor_proto(bytes: &[u8]) {
    let Ok(proto) = TensorProto::decode(bytes) else {
        return;
    };
    let mut budget = BUDGET;
    let Ok(tensor) = tensor_proto::decode(proto, &mut budget) else {
        return;
    };
    for content in [false, true] {
        let mut budget = BUDGET;
        let again =
            tensor_proto::decode(tensor_proto::encode(tensor.clone(), content), &mut budget)
                .unwrap_or_else(|e| panic!("re-decoding our own encoding failed: {e}"));
        assert!(
            same(&again, &tensor),
            "round trip changed the tensor (tensor_content: {content})"
        );
    }
}

/// Equal, counting NaNs with the same bits as equal (the wire keeps them bit for bit).
fn same(a: &aegis_core::Tensor, b: &aegis_core::Tensor) -> bool {
    a.dtype() == b.dtype() && a.shape() == b.shape() && a.data() == b.data()
}

/// A serialized `PredictRequest`: every input decoded under one shared budget, as the gRPC
/// adapter does.
pub fn predict_request(bytes: &[u8]) {
    let Ok(req) = PredictRequest::decode(bytes) else {
        return;
    };
    let mut budget = BUDGET;
    for (_, proto) in req.inputs {
        if tensor_proto::decode(proto, &mut budget).is_err() {
            return;
        }
    }
}

/// A serialized KServe v2 `ModelInferRequest`: typed and raw contents.
pub fn v2_grpc_infer(bytes: &[u8]) {
    let Ok(req) = ModelInferRequest::decode(bytes) else {
        return;
    };
    let _ = crate::grpc::kserve::decode_inputs(req.inputs, req.raw_input_contents, BUDGET);
}

/// The text-format config files: `--model_config_file` and `--batching_parameters_file`.
pub fn config_text(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let _ = aegis_models::parse_model_config_text(text);
    let _ = aegis_models::parse_batching_parameters_text(text);
}
