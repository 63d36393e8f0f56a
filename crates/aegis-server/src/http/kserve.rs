//! KServe v2 / Open Inference Protocol REST handlers under `/v2/`: server metadata (`GET /v2`),
//! model metadata and readiness (`GET /v2/models/{m}[/versions/{v}][/ready]`) and inference
//! (`POST /v2/models/{m}[/versions/{v}]/infer`), with the binary tensor extension.
//!
//! The same models and versions as the TF Serving API, through the model manager; nothing here
//! touches a runtime. The health probes `/v2/health/{live,ready}` and the unversioned
//! `/v2/models/{m}/ready` are answered by [`super::health`] before a request reaches this module.
//!
//! * The signature is `serving_default`, or the one named by the request parameter
//!   `parameters.signature_name` (a string) on `infer`. Model metadata describes `serving_default`
//!   (or the model's first signature when it has none).
//! * `data` may be flat or nested (row-major); BYTES elements are JSON strings in and out (bytes
//!   that are not UTF-8 come back with U+FFFD: ask for `binary_data` to get them exactly).
//!   FP16 / BF16 are accepted and written as JSON numbers too.
//! * Binary tensor extension: `Inference-Header-Content-Length: <n>` gives the JSON part's length;
//!   inputs with `parameters.binary_data_size` take their bytes, in input order, from what follows.
//!   Outputs with `parameters.binary_data: true` (or request parameter `binary_data_output: true`)
//!   are appended after the JSON, marked with `binary_data_size`, and the response carries the same
//!   header. BYTES elements travel as a 4-byte little-endian length followed by the bytes. The raw
//!   form (`Inference-Header-Content-Length: 0`) is not supported (400).
//! * Errors are `{"error": "<message>"}`: unknown model or version 404, client mistakes 400.
//!
//! * Repository extension: `POST /v2/repository/index` (body `{"ready": true}` lists only ready
//!   versions) answers `[{"name", "version", "state", "reason"}]`; `POST
//!   /v2/repository/models/{m}/load` and `/unload` answer 200 with an empty body once done
//!   (semantics in `aegis_models`' repository module).
//!
//! * Statistics extension: `GET /v2/models[/{m}[/versions/{v}]]/stats` answers
//!   `{"model_stats": [...]}` for the versions serving now (see `crate::kserve::model_stats`).
//!
//! Not here: the gRPC service (`crate::grpc`), the shared-memory extensions.

use aegis_core::{DataType, Error, InferRequest, Signature, Tensor, TensorData};
use aegis_models::{ServedVersion, VersionSelector};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::json::{self, Number, Value};
use super::{json_response, HttpState};
use crate::error::ApiError;
use crate::kserve::{self as v2, bad, v2_datatype, Wanted};

/// The request and response header that gives the length of the JSON part of a binary body.
pub(super) const HEADER_LENGTH: &str = "inference-header-content-length";

/// Whether the request belongs to this module (`/v2` or `/v2/...`).
pub(super) fn is_v2_path(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Server,
    Metadata(String, VersionSelector),
    Ready(String, VersionSelector),
    Infer(String, VersionSelector),
    /// `(model, version)`; an empty model means every model.
    Stats(String, String),
    RepositoryIndex,
    Load(String),
    Unload(String),
}

pub(super) async fn handle(state: HttpState, req: Request) -> Response {
    match handle_inner(state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn handle_inner(state: HttpState, req: Request) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let route = parse_route(&method, req.uri().path())?;
    match route {
        Route::Server => Ok(ok_json(&serde_json::json!({
            "name": v2::SERVER_NAME,
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": v2::EXTENSIONS,
        }))),
        Route::Metadata(name, version) => metadata(&state, &name, &version),
        Route::Ready(name, version) => {
            let ready = state.manager.resolve(&name, &version).is_ok();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::to_vec(&serde_json::json!({ "ready": ready }));
            Ok(json_response(status, body.unwrap_or_default()))
        }
        Route::Stats(name, version) => stats(&state, &name, &version),
        Route::RepositoryIndex | Route::Load(_) | Route::Unload(_) => {
            let body = match super::tfserving::read_body(req, state.max_body_bytes).await {
                Ok(body) => body,
                Err(resp) => return Ok(resp),
            };
            repository(&state, route, &body).await
        }
        Route::Infer(name, version) => {
            let headers = req.headers().clone();
            let body = match super::tfserving::read_body(req, state.max_body_bytes).await {
                Ok(body) => body,
                Err(resp) => return Ok(resp),
            };
            infer(&state, &name, &version, &headers, &body).await
        }
    }
}

fn not_found(method: &Method, path: &str) -> Error {
    Error::not_found(format!("Not Found: {method} {path}"))
}

fn parse_route(method: &Method, path: &str) -> Result<Route, Error> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed == "/v2" {
        return if *method == Method::GET {
            Ok(Route::Server)
        } else {
            Err(not_found(method, path))
        };
    }
    if let Some(rest) = trimmed.strip_prefix("/v2/repository/") {
        return match (method, rest.split('/').collect::<Vec<_>>().as_slice()) {
            (&Method::POST, ["index"]) => Ok(Route::RepositoryIndex),
            (&Method::POST, ["models", name, action]) if !name.is_empty() => {
                let name = percent_decode(name)
                    .ok_or_else(|| Error::invalid_argument("model name is not valid UTF-8"))?;
                match *action {
                    "load" => Ok(Route::Load(name)),
                    "unload" => Ok(Route::Unload(name)),
                    _ => Err(not_found(method, path)),
                }
            }
            _ => Err(not_found(method, path)),
        };
    }
    if trimmed == "/v2/models/stats" && *method == Method::GET {
        return Ok(Route::Stats(String::new(), String::new()));
    }
    let rest = trimmed
        .strip_prefix("/v2/models/")
        .ok_or_else(|| not_found(method, path))?;
    let segs: Vec<&str> = rest.split('/').collect();
    let (name, mut tail) = match segs.split_first() {
        Some((name, tail)) if !name.is_empty() => (percent_decode(name), tail),
        _ => return Err(not_found(method, path)),
    };
    let name = name.ok_or_else(|| Error::invalid_argument("model name is not valid UTF-8"))?;
    let mut version = VersionSelector::Latest;
    if let ["versions", v, more @ ..] = tail {
        let v = v.parse::<i64>().map_err(|_| {
            Error::invalid_argument(format!("model version must be an integer, got '{v}'"))
        })?;
        version = VersionSelector::Specific(v);
        tail = more;
    }
    match (method, tail) {
        (&Method::GET, []) => Ok(Route::Metadata(name, version)),
        (&Method::GET, ["ready"]) => Ok(Route::Ready(name, version)),
        (&Method::GET, ["stats"]) => Ok(Route::Stats(
            name,
            match version {
                VersionSelector::Specific(v) => v.to_string(),
                _ => String::new(),
            },
        )),
        (&Method::POST, ["infer"]) => Ok(Route::Infer(name, version)),
        _ => Err(not_found(method, path)),
    }
}

/// `%XX` decoding of a path segment; `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn ok_json(value: &serde_json::Value) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn metadata(
    state: &HttpState,
    name: &str,
    version: &VersionSelector,
) -> Result<Response, ApiError> {
    let meta = v2::model_metadata(&state.manager, name, version)?;
    let tensors = |list: &[v2::TensorMeta]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": t.shape,
                })
            })
            .collect()
    };
    Ok(ok_json(&serde_json::json!({
        "name": meta.name,
        "versions": meta.versions,
        "platform": meta.platform,
        "inputs": tensors(&meta.inputs),
        "outputs": tensors(&meta.outputs),
    })))
}

/// The statistics extension: `{"model_stats": [...]}` with Triton's field names.
fn stats(state: &HttpState, name: &str, version: &str) -> Result<Response, ApiError> {
    let list: Vec<serde_json::Value> = v2::model_stats(&state.manager, name, version)?
        .into_iter()
        .map(|m| {
            let mut inference = serde_json::Map::new();
            for (key, t) in m.durations() {
                inference.insert(
                    key.into(),
                    serde_json::json!({"count": t.count, "ns": t.ns}),
                );
            }
            for key in ["cache_hit", "cache_miss"] {
                inference.insert(key.into(), serde_json::json!({"count": 0, "ns": 0}));
            }
            serde_json::json!({
                "name": m.name,
                "version": m.version,
                "last_inference": m.last_inference,
                "inference_count": m.inference_count,
                "execution_count": m.execution_count,
                "inference_stats": inference,
                "batch_stats": [],
                "memory_usage": [],
            })
        })
        .collect();
    Ok(ok_json(&serde_json::json!({ "model_stats": list })))
}

/// The repository extension: `POST /v2/repository/index` (optional body `{"ready": bool}`) and
/// `POST /v2/repository/models/{m}/load|unload` (optional body `{"parameters": {...}}`).
async fn repository(state: &HttpState, route: Route, body: &[u8]) -> Result<Response, ApiError> {
    let doc = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Vec::new())
    } else {
        json::parse(body).map_err(Error::from)?
    };
    if !matches!(doc, Value::Object(_)) {
        return Err(bad("request body must be a JSON object").into());
    }
    let parameters = match doc.get("parameters") {
        None => Vec::new(),
        Some(Value::Object(members)) => members.iter().map(|(k, _)| k.as_str()).collect(),
        Some(_) => return Err(bad("'parameters' must be an object").into()),
    };
    match route {
        Route::RepositoryIndex => {
            let ready = match doc.get("ready") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("'ready' must be a boolean").into()),
            };
            let entries: Vec<serde_json::Value> = state
                .manager
                .repository_index(ready)
                .into_iter()
                .map(|e| {
                    let mut o = serde_json::json!({ "name": e.name, "state": e.state.name() });
                    if let Some(v) = e.version {
                        o["version"] = v.to_string().into();
                    }
                    if !e.reason.is_empty() {
                        o["reason"] = e.reason.into();
                    }
                    o
                })
                .collect();
            Ok(ok_json(&serde_json::Value::Array(entries)))
        }
        Route::Load(name) => {
            v2::check_load_parameters(parameters.into_iter())?;
            v2::repository_action(&state.manager, &name, true).await?;
            Ok(json_response(StatusCode::OK, Vec::new()))
        }
        Route::Unload(name) => {
            v2::repository_action(&state.manager, &name, false).await?;
            Ok(json_response(StatusCode::OK, Vec::new()))
        }
        _ => Err(Error::internal("not a repository route").into()),
    }
}

async fn infer(
    state: &HttpState,
    name: &str,
    version: &VersionSelector,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let json_len = json_length(
        headers.get(HEADER_LENGTH).map(HeaderValue::as_bytes),
        body.len(),
    )?;
    let (json_part, mut binary) = body.split_at(json_len);
    let doc = json::parse(json_part).map_err(Error::from)?;
    let Value::Object(_) = doc else {
        return Err(bad("request body must be a JSON object").into());
    };
    let id = match doc.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("'id' must be a string").into()),
    };
    let params = doc.get("parameters");
    if let Some(p) = params {
        if !matches!(p, Value::Object(_)) {
            return Err(bad("'parameters' must be an object").into());
        }
    }
    let signature = match params.and_then(|p| p.get("signature_name")) {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(bad("parameter 'signature_name' must be a non-empty string").into()),
    };
    let binary_all = match params.and_then(|p| p.get("binary_data_output")) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("parameter 'binary_data_output' must be a boolean").into()),
    };

    let (served, signature) = v2::resolve_for_infer(&state.manager, name, version, signature)?;
    let sig = served
        .signature(&signature)
        .ok_or_else(|| Error::internal("signature vanished"))?;

    let Some(Value::Array(inputs_json)) = doc.get("inputs") else {
        return Err(bad("'inputs' must be an array").into());
    };
    let mut inputs = Vec::with_capacity(inputs_json.len());
    for input in inputs_json {
        inputs.push(parse_input(input, &mut binary)?);
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data follow the JSON but no input claims them",
            binary.len()
        ))
        .into());
    }

    let wanted = parse_outputs(doc.get("outputs"), sig, binary_all)?;
    let request = InferRequest {
        signature,
        inputs,
        output_filter: v2::output_filter(doc.get("outputs").is_some(), &wanted),
    };
    let response = super::tfserving::with_deadline(state.timeout, served.predict(request)).await?;
    Ok(write_response(
        &served,
        id.as_deref(),
        &wanted,
        &response.outputs,
    ))
}

/// The length of the JSON part of a body of `body_len` bytes, from the
/// `Inference-Header-Content-Length` header when there is one.
pub(crate) fn json_length(header: Option<&[u8]>, body_len: usize) -> Result<usize, Error> {
    let Some(h) = header else {
        return Ok(body_len);
    };
    let n = std::str::from_utf8(h)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .ok_or_else(|| bad("Inference-Header-Content-Length must be an integer"))?;
    if n == 0 {
        return Err(bad(
            "raw binary requests (Inference-Header-Content-Length: 0) are not supported",
        ));
    }
    if n > body_len {
        return Err(bad(format!(
            "Inference-Header-Content-Length {n} is larger than the body ({body_len} bytes)"
        )));
    }
    Ok(n)
}

pub(crate) fn parse_input(input: &Value, binary: &mut &[u8]) -> Result<(String, Tensor), Error> {
    let Some(Value::String(name)) = input.get("name") else {
        return Err(bad("each input needs a string 'name'"));
    };
    let datatype = match input.get("datatype") {
        Some(Value::String(s)) => v2::input_datatype(name, s)?,
        _ => return Err(bad(format!("input '{name}' needs a string 'datatype'"))),
    };
    let Some(Value::Array(dims)) = input.get("shape") else {
        return Err(bad(format!("input '{name}' needs a 'shape' array")));
    };
    let dims = dims
        .iter()
        .map(|d| match d {
            Value::Number(Number::Int(i)) => Some(*i),
            _ => None,
        })
        .collect::<Option<Vec<i64>>>()
        .ok_or_else(|| {
            bad(format!(
                "input '{name}': shape must hold non-negative integers"
            ))
        })?;
    let (shape, count) = v2::input_shape(name, &dims)?;
    let size = match input.get("parameters") {
        None => None,
        Some(p @ Value::Object(_)) => match p.get("binary_data_size") {
            None => None,
            Some(Value::Number(Number::Int(n))) => Some(usize::try_from(*n).map_err(|_| {
                bad(format!(
                    "input '{name}': binary_data_size must be non-negative"
                ))
            })?),
            Some(_) => {
                return Err(bad(format!(
                    "input '{name}': binary_data_size must be an integer"
                )))
            }
        },
        Some(_) => {
            return Err(bad(format!(
                "input '{name}': 'parameters' must be an object"
            )))
        }
    };
    let data = match (size, input.get("data")) {
        (Some(_), Some(_)) => {
            return Err(bad(format!(
                "input '{name}' has both 'data' and binary_data_size"
            )))
        }
        (None, None) => return Err(bad(format!("input '{name}' has no 'data'"))),
        (Some(size), None) => {
            if size > binary.len() {
                return Err(bad(format!(
                    "input '{name}': binary_data_size {size} is more than the {} binary bytes left",
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(size);
            *binary = rest;
            v2::decode_raw(name, datatype, count, mine, "binary_data_size")?
        }
        (None, Some(data)) => {
            let mut leaves = Vec::new();
            flatten(data, &mut leaves);
            if leaves.len() != count {
                return Err(bad(format!(
                    "input '{name}': shape {shape:?} needs {count} elements but 'data' holds {}",
                    leaves.len()
                )));
            }
            decode_json(name, datatype, &leaves)?
        }
    };
    let tensor = Tensor::new(datatype, shape, data).map_err(|e| bad(e.message))?;
    Ok((name.clone(), tensor))
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        leaf => out.push(leaf),
    }
}

fn decode_json(name: &str, dtype: DataType, leaves: &[&Value]) -> Result<TensorData, Error> {
    let wrong = |v: &Value| {
        bad(format!(
            "input '{name}': {} is not a valid {} element",
            json::message_json(v),
            v2_datatype(dtype)
        ))
    };
    if dtype == DataType::String {
        return leaves
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_bytes().to_vec()),
                other => Err(wrong(other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TensorData::Strings);
    }
    let mut out = Vec::with_capacity(leaves.len() * dtype.size().unwrap_or(1));
    for &v in leaves {
        let int = || match v {
            Value::Number(Number::Int(i)) => Some(i128::from(*i)),
            Value::Number(Number::UInt(u)) => Some(i128::from(*u)),
            _ => None,
        };
        let float = || match v {
            Value::Number(n) => Some(n.as_f64()),
            _ => None,
        };
        macro_rules! int_as {
            ($t:ty) => {
                out.extend_from_slice(
                    &int()
                        .and_then(|i| <$t>::try_from(i).ok())
                        .ok_or_else(|| wrong(v))?
                        .to_le_bytes(),
                )
            };
        }
        match dtype {
            DataType::Bool => match v {
                Value::Bool(b) => out.push(u8::from(*b)),
                _ => return Err(wrong(v)),
            },
            DataType::Int8 => int_as!(i8),
            DataType::Int16 => int_as!(i16),
            DataType::Int32 => int_as!(i32),
            DataType::Int64 => int_as!(i64),
            DataType::UInt8 => int_as!(u8),
            DataType::UInt16 => int_as!(u16),
            DataType::UInt32 => int_as!(u32),
            DataType::UInt64 => int_as!(u64),
            DataType::Float16 => out.extend_from_slice(
                &half::f16::from_f64(float().ok_or_else(|| wrong(v))?).to_le_bytes(),
            ),
            DataType::BFloat16 => out.extend_from_slice(
                &half::bf16::from_f64(float().ok_or_else(|| wrong(v))?).to_le_bytes(),
            ),
            DataType::Float32 => match v {
                Value::Number(n) => out.extend_from_slice(&n.as_f32().to_le_bytes()),
                _ => return Err(wrong(v)),
            },
            DataType::Float64 => {
                out.extend_from_slice(&float().ok_or_else(|| wrong(v))?.to_le_bytes())
            }
            DataType::String => return Err(wrong(v)),
        }
    }
    Ok(TensorData::Fixed(out))
}

pub(crate) fn parse_outputs(
    outputs: Option<&Value>,
    sig: &Signature,
    binary_all: bool,
) -> Result<Vec<Wanted>, Error> {
    let Some(outputs) = outputs else {
        return Ok(v2::all_outputs(sig, binary_all));
    };
    let Value::Array(items) = outputs else {
        return Err(bad("'outputs' must be an array"));
    };
    items
        .iter()
        .map(|o| {
            let Some(Value::String(name)) = o.get("name") else {
                return Err(bad("each requested output needs a string 'name'"));
            };
            let binary = match o.get("parameters").map(|p| (p, p.get("binary_data"))) {
                None | Some((Value::Object(_), None)) => binary_all,
                Some((_, Some(Value::Bool(b)))) => *b,
                Some(_) => {
                    return Err(bad(format!(
                        "output '{name}': parameters.binary_data must be a boolean"
                    )))
                }
            };
            Ok(Wanted {
                name: name.clone(),
                binary,
            })
        })
        .collect()
}

/// Renders the response: the JSON part, then the binary outputs' bytes in output order.
fn write_response(
    served: &ServedVersion,
    id: Option<&str>,
    wanted: &[Wanted],
    outputs: &[(String, Tensor)],
) -> Response {
    let mut out = Vec::new();
    let mut binary = Vec::new();
    out.extend_from_slice(b"{\"model_name\":");
    json::write_str(&mut out, &served.name);
    out.extend_from_slice(b",\"model_version\":");
    json::write_str(&mut out, &served.version.to_string());
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        json::write_str(&mut out, id);
    }
    out.extend_from_slice(b",\"outputs\":[");
    for (i, (alias, tensor)) in outputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let as_binary = wanted
            .iter()
            .find(|w| &w.name == alias)
            .is_some_and(|w| w.binary);
        out.extend_from_slice(b"{\"name\":");
        json::write_str(&mut out, alias);
        out.extend_from_slice(b",\"datatype\":");
        json::write_str(&mut out, v2_datatype(tensor.dtype()));
        out.extend_from_slice(b",\"shape\":[");
        for (j, d) in tensor.shape().iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json::write_u64(&mut out, *d as u64);
        }
        out.push(b']');
        if as_binary {
            let start = binary.len();
            v2::encode_raw(tensor, &mut binary);
            out.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
            json::write_u64(&mut out, (binary.len() - start) as u64);
            out.extend_from_slice(b"}}");
        } else {
            out.extend_from_slice(b",\"data\":[");
            write_data(&mut out, tensor);
            out.extend_from_slice(b"]}");
        }
    }
    out.extend_from_slice(b"]}");
    if binary.is_empty() && !wanted.iter().any(|w| w.binary) {
        return json_response(StatusCode::OK, out);
    }
    let json_len = out.len();
    out.extend_from_slice(&binary);
    let mut resp = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        out,
    )
        .into_response();
    resp.headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(json_len));
    resp
}

/// Appends a tensor's elements, flat and row-major, separated by commas.
fn write_data(out: &mut Vec<u8>, tensor: &Tensor) {
    let bytes = match tensor.data() {
        TensorData::Strings(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json::write_bytes_lossy(out, item);
            }
            return;
        }
        TensorData::Fixed(b) => b.as_slice(),
    };
    let size = tensor.dtype().size().unwrap_or(1).max(1);
    for (i, c) in bytes.chunks_exact(size).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        macro_rules! le {
            ($t:ty) => {{
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(c);
                <$t>::from_le_bytes(a)
            }};
        }
        match tensor.dtype() {
            DataType::Bool => out.extend_from_slice(if c[0] != 0 { b"true" } else { b"false" }),
            DataType::Int8 => json::write_i64(out, le!(i8).into()),
            DataType::Int16 => json::write_i64(out, le!(i16).into()),
            DataType::Int32 => json::write_i64(out, le!(i32).into()),
            DataType::Int64 => json::write_i64(out, le!(i64)),
            DataType::UInt8 => json::write_u64(out, le!(u8).into()),
            DataType::UInt16 => json::write_u64(out, le!(u16).into()),
            DataType::UInt32 => json::write_u64(out, le!(u32).into()),
            DataType::UInt64 => json::write_u64(out, le!(u64)),
            DataType::Float16 => json::write_f16(out, half::f16::from_bits(le!(u16))),
            DataType::BFloat16 => json::write_bf16(out, half::bf16::from_bits(le!(u16))),
            DataType::Float32 => json::write_f32(out, le!(f32)),
            DataType::Float64 => json::write_f64(out, le!(f64)),
            DataType::String => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = |p: &str| parse_route(&Method::GET, p);
        assert_eq!(get("/v2").unwrap(), Route::Server);
        assert_eq!(
            get("/v2/models/a%20b/versions/7").unwrap(),
            Route::Metadata("a b".into(), VersionSelector::Specific(7))
        );
        assert_eq!(
            get("/v2/models/m/versions/7/ready").unwrap(),
            Route::Ready("m".into(), VersionSelector::Specific(7))
        );
        assert_eq!(
            parse_route(&Method::POST, "/v2/models/m/infer").unwrap(),
            Route::Infer("m".into(), VersionSelector::Latest)
        );
        assert!(get("/v2/models/m/versions/x").is_err());
        assert!(get("/v2/models/m/infer").is_err());
        assert!(get("/v2/models/").is_err());
        assert!(parse_route(&Method::POST, "/v2").is_err());
        let post = |p: &str| parse_route(&Method::POST, p);
        assert_eq!(
            post("/v2/repository/index").unwrap(),
            Route::RepositoryIndex
        );
        assert_eq!(
            post("/v2/repository/models/a%2Fb/load").unwrap(),
            Route::Load("a/b".into())
        );
        assert_eq!(
            post("/v2/repository/models/m/unload").unwrap(),
            Route::Unload("m".into())
        );
        assert!(post("/v2/repository/models/m/reload").is_err());
        assert!(get("/v2/repository/index").is_err());
        assert_eq!(
            get("/v2/models/stats").unwrap(),
            Route::Stats(String::new(), String::new())
        );
        assert_eq!(
            get("/v2/models/m/versions/3/stats").unwrap(),
            Route::Stats("m".into(), "3".into())
        );
        assert!(is_v2_path("/v2") && is_v2_path("/v2/x") && !is_v2_path("/v20"));
    }

    #[test]
    fn json_elements_are_checked() {
        let v = json::parse(br#"[[1, 2], [300, -1]]"#).unwrap();
        let mut leaves = Vec::new();
        flatten(&v, &mut leaves);
        assert_eq!(leaves.len(), 4);
        assert!(decode_json("x", DataType::UInt8, &leaves).is_err());
        assert!(decode_json("x", DataType::Int16, &leaves).is_ok());
        assert!(decode_json("x", DataType::Bool, &leaves).is_err());
        let f = json::parse(b"1.5").unwrap();
        assert!(decode_json("x", DataType::Int32, &[&f]).is_err());
        assert!(decode_json("x", DataType::Float32, &[&f]).is_ok());
    }
}
