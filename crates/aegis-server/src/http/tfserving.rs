//! TF Serving's REST handlers: model status, model metadata, predict, classify and regress.

use aegis_core::{Error, InferRequest, Signature, TensorSpec, DEFAULT_SIGNATURE};
use aegis_models::VersionSelector;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::example_json;
use super::route::{self, InferMethod, Route};
use super::tensor_json::{predict_response, PredictRequestBody};
use super::{json_response, HttpState};
use crate::error::ApiError;

pub(super) async fn handle(state: HttpState, req: Request) -> Response {
    match handle_inner(state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn handle_inner(state: HttpState, req: Request) -> Result<Response, ApiError> {
    let route = route::parse(req.method(), req.uri().path())?;
    match route {
        Route::Status { name, version } => status(&state, &name, &version),
        Route::Metadata { name, version } => metadata(&state, &name, &version),
        Route::Infer {
            name,
            version,
            method,
        } => {
            let body = match read_body(req, state.max_body_bytes).await {
                Ok(body) => body,
                Err(resp) => return Ok(resp),
            };
            match method {
                InferMethod::Predict => predict(&state, &name, &version, &body).await,
                InferMethod::Classify | InferMethod::Regress => {
                    classify_regress(&state, &name, &version, method, &body).await
                }
            }
        }
    }
}

/// Reads the whole body; an oversized one is refused with 413 before it is buffered. A
/// `Content-Encoding: gzip` body is inflated, and the limit applies to it inflated too.
pub(super) async fn read_body(req: Request, limit: usize) -> Result<axum::body::Bytes, Response> {
    let gzip = req
        .headers()
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let too_large = || {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            super::error_body(&format!(
                "Request body is larger than the limit of {limit} bytes"
            )),
        )
    };
    let body = read_raw_body(req, limit).await?;
    if !gzip {
        return Ok(body);
    }
    match crate::limits::inflate_gzip(body, limit).await {
        Ok(inflated) => Ok(inflated.into()),
        Err(crate::limits::InflateError::TooLarge) => Err(too_large()),
        Err(crate::limits::InflateError::Corrupt(e)) => Err(ApiError(Error::invalid_argument(
            format!("Failed to decompress gzip request body: {e}"),
        ))
        .into_response()),
    }
}

async fn read_raw_body(req: Request, limit: usize) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                json_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    super::error_body(&format!(
                        "Request body is larger than the limit of {limit} bytes"
                    )),
                )
            } else {
                ApiError(Error::invalid_argument(format!(
                    "Failed to read request body: {e}"
                )))
                .into_response()
            }
        })
}

/// The version serving a request, noted for the request's metrics.
fn resolve(
    state: &HttpState,
    name: &str,
    version: &VersionSelector,
) -> aegis_core::Result<std::sync::Arc<aegis_models::ServedVersion>> {
    let served = state.manager.resolve(name, version)?;
    crate::metrics::note_version(&served);
    Ok(served)
}

fn ok_json(value: &Value) -> Response {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    json_response(StatusCode::OK, body)
}

fn status(state: &HttpState, name: &str, version: &VersionSelector) -> Result<Response, ApiError> {
    // TF Serving ignores a label here and lists every version; so do we.
    let version = match version {
        VersionSelector::Specific(v) => Some(*v),
        _ => None,
    };
    let statuses = state.manager.status(name, version)?;
    let list: Vec<Value> = statuses
        .iter()
        .map(|s| {
            let (code, message) = match &s.error {
                Some(e) => (e.kind.name(), e.message.as_str()),
                None => ("OK", ""),
            };
            json!({
                "version": s.version.to_string(),
                "state": s.state.name(),
                "status": {"error_code": code, "error_message": message},
            })
        })
        .collect();
    Ok(ok_json(&json!({ "model_version_status": list })))
}

fn metadata(
    state: &HttpState,
    name: &str,
    version: &VersionSelector,
) -> Result<Response, ApiError> {
    let served = resolve(state, name, version)?;
    let defs: Map<String, Value> = served
        .signatures()
        .iter()
        .map(|s| (s.name.clone(), signature_json(s)))
        .collect();
    Ok(ok_json(&json!({
        "model_spec": {"name": name, "signature_name": "", "version": served.version.to_string()},
        "metadata": {"signature_def": {"signature_def": defs}},
    })))
}

/// A `SignatureDef` in protobuf-JSON form, as TF Serving prints it (snake_case, int64 as strings).
fn signature_json(sig: &Signature) -> Value {
    let infos = |specs: &[(String, TensorSpec)]| -> Map<String, Value> {
        specs
            .iter()
            .map(|(alias, spec)| {
                let shape = match &spec.shape {
                    Some(dims) => json!({
                        "dim": dims.iter().map(|d| json!({"size": d.to_string(), "name": ""})).collect::<Vec<_>>(),
                        "unknown_rank": false,
                    }),
                    None => json!({"dim": [], "unknown_rank": true}),
                };
                (
                    alias.clone(),
                    json!({"dtype": spec.dtype.tf_name(), "tensor_shape": shape, "name": spec.tensor_name}),
                )
            })
            .collect()
    };
    json!({
        "inputs": infos(&sig.inputs),
        "outputs": infos(&sig.outputs),
        "method_name": sig.method_name,
        "defaults": {},
    })
}

async fn predict(
    state: &HttpState,
    name: &str,
    version: &VersionSelector,
    body: &[u8],
) -> Result<Response, ApiError> {
    let parsed = PredictRequestBody::parse(body)?;
    let served = resolve(state, name, version)?;
    let sig_name = parsed
        .signature_name()
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_SIGNATURE)
        .to_string();
    let sig = served.signature(&sig_name).ok_or_else(|| {
        Error::invalid_argument(format!(
            "Serving signature name: \"{sig_name}\" not found in signature def"
        ))
    })?;
    crate::metrics::note_signature(&sig_name);
    let format = parsed.format();
    let inputs = parsed.into_inputs(sig)?;
    let request = InferRequest {
        signature: sig_name,
        inputs,
        output_filter: Vec::new(),
    };
    let response = with_deadline(state.timeout, served.predict(request)).await?;
    let body = predict_response(format, &response.outputs)?;
    Ok(json_response(StatusCode::OK, body))
}

/// `:classify` and `:regress`: the body is read in full (TF Serving reports JSON errors before it
/// looks the model up), then the examples run through the model layer's classify / regress.
async fn classify_regress(
    state: &HttpState,
    name: &str,
    version: &VersionSelector,
    method: InferMethod,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request = example_json::parse_request(body)?;
    let served = resolve(state, name, version)?;
    let examples = crate::examples::serialized_examples(Some(&request.input));
    let signature = request.signature_name.as_str();
    crate::metrics::note_signature_of(&served, signature);
    let run = async {
        match method {
            InferMethod::Classify => served
                .classify(signature, examples)
                .await
                .map(|r| example_json::classify_response(&r)),
            InferMethod::Regress => served
                .regress(signature, examples)
                .await
                .map(|r| example_json::regress_response(&r)),
            InferMethod::Predict => Err(Error::internal(format!(
                "{} is not an examples method",
                method.name()
            ))),
        }
    };
    let body = with_deadline(state.timeout, run).await?;
    Ok(json_response(StatusCode::OK, body))
}

/// Runs `work` under the REST deadline (`--rest_api_timeout_in_ms`): DEADLINE_EXCEEDED (504)
/// when it takes longer.
pub(super) async fn with_deadline<T>(
    timeout: std::time::Duration,
    work: impl std::future::Future<Output = aegis_core::Result<T>>,
) -> aegis_core::Result<T> {
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        Error::new(
            aegis_core::ErrorKind::DeadlineExceeded,
            format!("Deadline exceeded after {} ms", timeout.as_millis()),
        )
    })?
}
