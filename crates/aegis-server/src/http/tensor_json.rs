//! TF Serving's predict JSON (`{"instances": ...}` / `{"inputs": ...}` in, `{"predictions": ...}` /
//! `{"outputs": ...}` out) to and from aegis tensors, with TF Serving's error texts
//! (`tensorflow_serving/util/json_tensor.cc`).
//!
//! A request is read in two steps because the signature is looked up between them:
//! [`PredictRequestBody::parse`] reads the JSON and the signature name, the caller resolves the model
//! and signature, and [`PredictRequestBody::into_inputs`] converts the values using the signature's
//! declared dtypes. The checks run in TF Serving's order, so the same bad request gets the same error.
//!
//! Where we do better than TF Serving (each noted at the spot): integer inputs narrower than int32
//! are range-checked instead of silently wrapped; uint16, float16 and bfloat16 inputs are accepted
//! (TF Serving answers 501); float16/bfloat16 outputs are written as numbers; duplicate keys in an
//! `instances` object count once (first wins) instead of being appended twice.

use super::json::{self, Number, Value};
use aegis_core::{DataType, Error, Signature, Tensor, TensorData};
use base64::Engine as _;

/// Which request shape the client used; the response mirrors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `instances`: a list of rows, answered with `predictions`.
    Row,
    /// `inputs`: whole tensors, answered with `outputs`.
    Columnar,
}

/// A parsed predict request body whose values are not yet converted to tensors.
#[derive(Debug)]
pub struct PredictRequestBody {
    /// The top-level object (kept whole: some error texts quote it).
    doc: Value,
    signature_name: Option<String>,
    /// Length of the JSON text: an upper bound on the number of leaf values, so allocations sized
    /// from a (possibly hostile) inferred shape never exceed what the body can fill.
    body_len: usize,
}

impl PredictRequestBody {
    /// Parses the JSON body, checks that it is an object and that `signature_name`, when present,
    /// is a string. `instances` / `inputs` are checked by [`PredictRequestBody::into_inputs`], after
    /// the signature lookup, as TF Serving does.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let doc = json::parse(body)?;
        if !matches!(doc, Value::Object(_)) {
            return Err(format_error(&doc, "Is not object"));
        }
        let signature_name = match doc.get("signature_name") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(format_error(
                    &doc,
                    "not formatted correctly. 'signature_name' key must be a string value.",
                ))
            }
        };
        Ok(PredictRequestBody {
            doc,
            signature_name,
            body_len: body.len(),
        })
    }

    /// The requested signature; `None` when absent or empty, meaning the default one.
    pub fn signature_name(&self) -> Option<&str> {
        self.signature_name.as_deref().filter(|s| !s.is_empty())
    }

    /// [`Format::Row`] when the body has an `instances` key, else [`Format::Columnar`] (a body with
    /// neither key, or both, fails in [`PredictRequestBody::into_inputs`]).
    pub fn format(&self) -> Format {
        if self.doc.get("instances").is_some() {
            Format::Row
        } else {
            Format::Columnar
        }
    }

    /// Converts `instances` or `inputs` into one tensor per signature input, in signature order,
    /// using the dtypes `sig` declares.
    pub fn into_inputs(self, sig: &Signature) -> Result<Vec<(String, Tensor)>, Error> {
        if sig.inputs.is_empty() {
            return Err(Error::invalid_argument(format!(
                "Failed to get input map for signature: {}",
                self.signature_name().unwrap_or("DEFAULT")
            )));
        }
        match (self.doc.get("instances"), self.doc.get("inputs")) {
            (Some(_), Some(_)) => Err(format_error(
                &self.doc,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
            )),
            (Some(Value::Array(rows)), None) if !rows.is_empty() => {
                rows_to_tensors(rows, sig, self.body_len)
            }
            (Some(Value::Array(_)), None) => {
                Err(format_error(&self.doc, "No values in 'instances' array"))
            }
            (Some(_), None) => Err(format_error(
                &self.doc,
                "Expecting 'instances' to be an list/array",
            )),
            (None, Some(inputs)) => columns_to_tensors(inputs, sig, self.body_len),
            (None, None) => Err(Error::invalid_argument(
                "Missing 'inputs' or 'instances' key",
            )),
        }
    }
}

/// TF Serving's `FormatError`: `JSON Value: <json> <what>`.
fn format_error(v: &Value, what: &str) -> Error {
    Error::invalid_argument(format!("JSON Value: {} {what}", json::message_json(v)))
}

fn type_error(v: &Value, dtype: DataType) -> Error {
    Error::invalid_argument(format!(
        "JSON Value: {} Type: {} is not of expected type: {}",
        json::message_json(v),
        v.type_name(),
        dtype.name()
    ))
}

fn lossy_error(v: &Value, dtype: DataType) -> Error {
    Error::invalid_argument(format!(
        "Cannot convert JSON value: {} to {} without loss of precision.",
        json::message_json(v),
        dtype.name()
    ))
}

/// An element in place of an object in row mode, or the reverse, is not a `{"b64": ...}` value.
fn is_row_object(v: &Value) -> bool {
    matches!(v, Value::Object(_)) && v.b64_payload().is_none()
}

// ------------------------------------------------------------------------------------------------
// Request: JSON -> tensors

fn rows_to_tensors(
    rows: &[Value],
    sig: &Signature,
    body_len: usize,
) -> Result<Vec<(String, Tensor)>, Error> {
    let object_mode = rows.first().is_some_and(is_row_object);
    if !object_mode && sig.inputs.len() > 1 {
        // TF Serving tests `IsObject()` here, so a `{"b64": ...}` first row slips through and fails
        // later; refusing it at once is clearer.
        return Err(Error::invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors \
             required as per tensorinfo_map",
        ));
    }
    let specs = if object_mode {
        &sig.inputs[..]
    } else {
        sig.inputs.get(..1).unwrap_or_default()
    };
    let mut columns: Vec<Column> = specs
        .iter()
        .map(|(name, spec)| Column::new(name, spec.dtype, rows.len(), body_len))
        .collect();
    let mut seen = vec![false; columns.len()];
    for (i, row) in rows.iter().enumerate() {
        if !object_mode {
            if is_row_object(row) {
                return Err(Error::invalid_argument(format!(
                    "Expecting value/list but got object at item {i} of input list"
                )));
            }
            if let Some(col) = columns.first_mut() {
                col.add_row(row).map_err(|e| {
                    Error::invalid_argument(format!(
                        "Failed to process element: {i} of 'instances' list. Error: {e}"
                    ))
                })?;
            }
            continue;
        }
        let members = match row {
            Value::Object(members) if is_row_object(row) => members,
            _ => {
                return Err(Error::invalid_argument(format!(
                    "Expecting object but got list at item {i} of input list"
                )))
            }
        };
        seen.fill(false);
        for (key, v) in members {
            let Some(c) = columns.iter().position(|c| c.name == key) else {
                return Err(Error::invalid_argument(format!(
                    "Failed to process element: {i} key: {key} of 'instances' list. Error: \
                     INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                )));
            };
            if std::mem::replace(&mut seen[c], true) {
                continue; // a duplicate key: the first one won
            }
            columns[c].add_row(v).map_err(|e| {
                Error::invalid_argument(format!(
                    "Failed to process element: {i} key: {key} of 'instances' list. Error: {e}"
                ))
            })?;
        }
        if seen.contains(&false) {
            let mut names: Vec<&str> = columns.iter().map(|c| c.name).collect();
            names.sort_unstable();
            return Err(Error::invalid_argument(format!(
                "Failed to process element: {i} of 'instances' list. JSON object: {} keys must \
                 be equal to: {}",
                json::message_json(row),
                names.join(",")
            )));
        }
    }
    columns
        .into_iter()
        .map(|c| c.into_batch(rows.len()))
        .collect()
}

fn columns_to_tensors(
    inputs: &Value,
    sig: &Signature,
    body_len: usize,
) -> Result<Vec<(String, Tensor)>, Error> {
    if !matches!(inputs, Value::Object(_)) || inputs.b64_payload().is_some() {
        let [(name, spec)] = sig.inputs.as_slice() else {
            return Err(Error::invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors \
                 required as per tensorinfo_map",
            ));
        };
        return Ok(vec![(
            name.clone(),
            whole_tensor(inputs, spec.dtype, body_len)?,
        )]);
    }
    sig.inputs
        .iter()
        .map(|(name, spec)| {
            let v = inputs.get(name).ok_or_else(|| {
                Error::invalid_argument(format!("Missing named input: {name} in 'inputs' object."))
            })?;
            Ok((name.clone(), whole_tensor(v, spec.dtype, body_len)?))
        })
        .collect()
}

fn whole_tensor(v: &Value, dtype: DataType, body_len: usize) -> Result<Tensor, Error> {
    let shape = infer_shape(v);
    let mut sink = Sink::new(dtype, product(&shape).min(body_len));
    fill(v, 0, &shape, dtype, &mut sink)?;
    Tensor::new(dtype, shape, sink.into_data())
}

/// One input being assembled from the rows of `instances`.
struct Column<'a> {
    name: &'a str,
    dtype: DataType,
    sink: Sink,
    /// Shape and element count of the first row's slice; later rows must match.
    first: Option<(Vec<usize>, usize)>,
    rows: usize,
    body_len: usize,
}

impl<'a> Column<'a> {
    fn new(name: &'a str, dtype: DataType, rows: usize, body_len: usize) -> Self {
        Column {
            name,
            dtype,
            sink: Sink::new(dtype, 0),
            first: None,
            rows,
            body_len,
        }
    }

    fn add_row(&mut self, v: &Value) -> Result<(), Error> {
        let shape = infer_shape(v);
        let per_row = product(&shape);
        if self.first.is_none() {
            self.sink
                .reserve(per_row.saturating_mul(self.rows).min(self.body_len));
        }
        let before = self.sink.len();
        fill(v, 0, &shape, self.dtype, &mut self.sink)?;
        let size = self.sink.len() - before;
        match &self.first {
            None => self.first = Some((shape, size)),
            Some((_, first_size)) if *first_size != size => {
                return Err(Error::invalid_argument(format!(
                    "Expecting tensor size: {first_size} but got: {size}"
                )))
            }
            Some((first_shape, _)) if *first_shape != shape => {
                return Err(Error::invalid_argument(format!(
                    "Expecting shape {} but got: {}",
                    shape_string(first_shape),
                    shape_string(&shape)
                )))
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn into_batch(self, rows: usize) -> Result<(String, Tensor), Error> {
        let mut shape = vec![rows];
        if let Some((slice, _)) = self.first {
            shape.extend(slice);
        }
        let tensor = Tensor::new(self.dtype, shape, self.sink.into_data())?;
        Ok((self.name.to_owned(), tensor))
    }
}

/// `[2,3]`, as TF Serving's `ShapeToString` prints shapes.
fn shape_string(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(","))
}

/// The shape a nested list implies, reading the first element at each level (TF Serving's
/// `GetDenseTensorShape`); a scalar has shape `[]`.
fn infer_shape(mut v: &Value) -> Vec<usize> {
    let mut shape = Vec::new();
    while let Value::Array(items) = v {
        shape.push(items.len());
        match items.first() {
            Some(first) => v = first,
            None => break,
        }
    }
    shape
}

fn product(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

/// Walks a nested list, checking it is dense with the inferred `shape`, and appends its leaves
/// (TF Serving's `FillTensorProto`, same checks, same order, same texts).
fn fill(
    v: &Value,
    level: usize,
    shape: &[usize],
    dtype: DataType,
    sink: &mut Sink,
) -> Result<(), Error> {
    let rank = shape.len();
    let Value::Array(items) = v else {
        if level != rank {
            return Err(Error::invalid_argument(format!(
                "JSON Value: {} found at incorrect level: {} in the JSON DOM. Expected at level: {rank}",
                json::message_json(v),
                level + 1
            )));
        }
        return sink.push(v, dtype);
    };
    let expected = match shape.get(level) {
        Some(&n) if level < rank => n,
        _ => {
            return Err(Error::invalid_argument(format!(
                "Encountered list at unexpected level: {level} expected < {rank}"
            )))
        }
    };
    if items.len() != expected {
        return Err(Error::invalid_argument(format!(
            "Encountered list at unexpected size: {} at level: {level} expected size: {expected}",
            items.len()
        )));
    }
    if level + 1 == rank {
        // Innermost list: the hot loop for big numeric payloads.
        for item in items {
            if matches!(item, Value::Array(_)) {
                return Err(Error::invalid_argument(format!(
                    "Encountered list at unexpected level: {rank} expected < {rank}"
                )));
            }
            sink.push(item, dtype)?;
        }
        return Ok(());
    }
    for item in items {
        fill(item, level + 1, shape, dtype, sink)?;
    }
    Ok(())
}

/// Element storage for one tensor being built.
enum Sink {
    /// Little-endian bytes of `count` elements of `size` bytes each.
    Fixed {
        bytes: Vec<u8>,
        count: usize,
        size: usize,
    },
    Strings(Vec<Vec<u8>>),
}

/// Standard alphabet; padding optional and non-canonical trailing bits accepted, as absl's
/// `Base64Unescape` (which TF Serving uses) accepts them.
const B64_DECODE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

impl Sink {
    fn new(dtype: DataType, elements: usize) -> Sink {
        match dtype.size() {
            Some(size) => Sink::Fixed {
                bytes: Vec::with_capacity(elements.saturating_mul(size)),
                count: 0,
                size,
            },
            None => Sink::Strings(Vec::with_capacity(elements)),
        }
    }

    fn reserve(&mut self, elements: usize) {
        match self {
            Sink::Fixed { bytes, size, .. } => bytes.reserve(elements.saturating_mul(*size)),
            Sink::Strings(v) => v.reserve(elements),
        }
    }

    fn len(&self) -> usize {
        match self {
            Sink::Fixed { count, .. } => *count,
            Sink::Strings(v) => v.len(),
        }
    }

    fn into_data(self) -> TensorData {
        match self {
            Sink::Fixed { bytes, .. } => TensorData::Fixed(bytes),
            Sink::Strings(v) => TensorData::Strings(v),
        }
    }

    /// Converts one leaf to `dtype` and appends it (TF Serving's `AddValueToTensor`).
    fn push(&mut self, v: &Value, dtype: DataType) -> Result<(), Error> {
        let (bytes, count) = match self {
            Sink::Strings(out) => {
                out.push(string_leaf(v, dtype)?);
                return Ok(());
            }
            Sink::Fixed { bytes, count, .. } => (bytes, count),
        };
        let n = match v {
            Value::Number(n) => *n,
            Value::Bool(b) if dtype == DataType::Bool => {
                bytes.push(u8::from(*b));
                *count += 1;
                return Ok(());
            }
            _ => return Err(type_error(v, dtype)),
        };
        // An integer leaf as `$t`, range-checked as `int_leaf` says.
        macro_rules! int {
            ($t:ty, $narrow:expr) => {
                bytes.extend_from_slice(&int_leaf::<$t>(v, n, dtype, $narrow)?.to_le_bytes())
            };
        }
        match dtype {
            DataType::Float32 => {
                let x = n.as_f32();
                if x.is_infinite() && n.as_f64().is_finite() {
                    return Err(lossy_error(v, dtype));
                }
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            DataType::Float64 => {
                bytes.extend_from_slice(&n.as_f64().to_le_bytes());
            }
            // Not in TF Serving (501 there). Rounding to the 16-bit formats is expected; only a
            // finite value that overflows to infinity is refused.
            DataType::Float16 => {
                let x = n.as_f64();
                let h = half::f16::from_f64(x);
                if x.is_finite() && !h.is_finite() {
                    return Err(lossy_error(v, dtype));
                }
                bytes.extend_from_slice(&h.to_le_bytes());
            }
            DataType::BFloat16 => {
                let x = n.as_f64();
                let h = half::bf16::from_f64(x);
                if x.is_finite() && !h.is_finite() {
                    return Err(lossy_error(v, dtype));
                }
                bytes.extend_from_slice(&h.to_le_bytes());
            }
            DataType::Int32 => int!(i32, false),
            DataType::Int64 => int!(i64, false),
            DataType::UInt32 => int!(u32, false),
            DataType::UInt64 => int!(u64, false),
            // TF Serving reads these as int32 and wraps silently; we range-check.
            DataType::Int16 => int!(i16, true),
            DataType::Int8 => int!(i8, true),
            DataType::UInt16 => int!(u16, true),
            DataType::UInt8 => int!(u8, true),
            DataType::Bool | DataType::String => return Err(type_error(v, dtype)),
        }
        *count += 1;
        Ok(())
    }
}

/// An integer literal as `T`. Decimals are a type error; an integer out of range is a type error
/// for the types TF Serving checks (int32, int64, uint32, uint64) and `... is out of range for
/// <dtype>` for the narrow ones it does not (`narrow`).
fn int_leaf<T: TryFrom<i64> + TryFrom<u64>>(
    v: &Value,
    n: Number,
    dtype: DataType,
    narrow: bool,
) -> Result<T, Error> {
    let converted = match n {
        Number::Int(i) => T::try_from(i).ok(),
        Number::UInt(u) => T::try_from(u).ok(),
        Number::BigInt(_) => None,
        Number::Float(_) | Number::Decimal(_) => return Err(type_error(v, dtype)),
    };
    converted.ok_or_else(|| {
        if narrow {
            Error::invalid_argument(format!(
                "JSON Value: {} is out of range for {}",
                json::message_json(v),
                dtype.name()
            ))
        } else {
            type_error(v, dtype)
        }
    })
}

/// A string element: a JSON string's UTF-8 bytes, or the decoded bytes of `{"b64": "..."}`.
fn string_leaf(v: &Value, dtype: DataType) -> Result<Vec<u8>, Error> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(_) => {
            let Some(text) = v.b64_payload() else {
                return Err(Error::invalid_argument(format!(
                    "JSON Value: {} not formatted correctly for base64 data",
                    json::message_json(v)
                )));
            };
            decode_b64(text).ok_or_else(|| Error::invalid_argument("Unable to base64 decode"))
        }
        _ => Err(type_error(v, dtype)),
    }
}

/// Standard-alphabet base64; like absl's decoder, ASCII whitespace is skipped and padding is
/// optional. The URL-safe alphabet is refused.
pub(super) fn decode_b64(text: &str) -> Option<Vec<u8>> {
    if text.bytes().any(|c| c.is_ascii_whitespace()) {
        let compact: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        return B64_DECODE.decode(compact).ok();
    }
    B64_DECODE.decode(text).ok()
}

// ------------------------------------------------------------------------------------------------
// Response: tensors -> JSON

/// Renders the outputs as `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar), keyed in
/// the order given. String outputs are JSON strings (invalid UTF-8 replaced by U+FFFD) unless the
/// alias ends with `_bytes`, then `{"b64": "..."}`.
pub fn predict_response(format: Format, outputs: &[(String, Tensor)]) -> Result<Vec<u8>, Error> {
    if outputs.is_empty() {
        return Err(Error::invalid_argument(
            "Cannot convert empty tensor map to JSON",
        ));
    }
    let mut out = Vec::with_capacity(estimate_len(outputs));
    let several = outputs.len() > 1;
    match format {
        Format::Row => {
            let mut batch: Option<usize> = None;
            for (name, t) in outputs {
                let Some(&b) = t.shape().first() else {
                    return Err(Error::invalid_argument(format!(
                        "Tensor name: {name} has no shape information "
                    )));
                };
                match batch {
                    Some(expected) if expected != b => {
                        return Err(Error::invalid_argument(format!(
                            "Tensor name: {name} has inconsistent batch size: {b} expecting: \
                             {expected}"
                        )))
                    }
                    _ => batch = Some(b),
                }
            }
            out.extend_from_slice(b"{\"predictions\":[");
            for row in 0..batch.unwrap_or(0) {
                if row > 0 {
                    out.push(b',');
                }
                if several {
                    out.push(b'{');
                }
                for (k, (name, t)) in outputs.iter().enumerate() {
                    if several {
                        if k > 0 {
                            out.push(b',');
                        }
                        json::write_str(&mut out, name);
                        out.push(b':');
                    }
                    let dims = t.shape().get(1..).unwrap_or_default();
                    let view = View::new(name, t);
                    write_nested(&mut out, &view, dims, row.saturating_mul(product(dims)))?;
                }
                if several {
                    out.push(b'}');
                }
            }
            out.extend_from_slice(b"]}");
        }
        Format::Columnar => {
            out.extend_from_slice(b"{\"outputs\":");
            if several {
                out.push(b'{');
            }
            for (k, (name, t)) in outputs.iter().enumerate() {
                if several {
                    if k > 0 {
                        out.push(b',');
                    }
                    json::write_str(&mut out, name);
                    out.push(b':');
                }
                write_nested(&mut out, &View::new(name, t), t.shape(), 0)?;
            }
            if several {
                out.push(b'}');
            }
            out.push(b'}');
        }
    }
    Ok(out)
}

/// `{"error": "<message>"}`, laid out exactly as TF Serving's pretty writer prints it.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 24);
    out.extend_from_slice(b"{\n    \"error\": ");
    json::write_str(&mut out, message);
    out.extend_from_slice(b"\n}");
    out
}

fn estimate_len(outputs: &[(String, Tensor)]) -> usize {
    outputs
        .iter()
        .map(|(_, t)| match t.data() {
            TensorData::Fixed(b) => b.len().saturating_mul(3),
            TensorData::Strings(s) => s.iter().map(|x| x.len() + 3).sum(),
        })
        .sum::<usize>()
        .saturating_add(64)
}

/// A tensor's elements, borrowed for writing.
struct View<'a> {
    dtype: DataType,
    data: &'a TensorData,
    as_b64: bool,
}

impl<'a> View<'a> {
    fn new(name: &str, t: &'a Tensor) -> Self {
        View {
            dtype: t.dtype(),
            data: t.data(),
            as_b64: t.dtype() == DataType::String && name.ends_with("_bytes"),
        }
    }

    fn write_error(&self) -> Error {
        Error::invalid_argument(format!(
            "Failed to write JSON value for tensor type: {}",
            self.dtype.name()
        ))
    }
}

/// Writes the sub-tensor of shape `dims` whose first element is element `offset`: nested lists, or
/// a bare value when `dims` is empty.
fn write_nested(
    out: &mut Vec<u8>,
    view: &View<'_>,
    dims: &[usize],
    offset: usize,
) -> Result<(), Error> {
    match dims {
        [] => write_run(out, view, offset, 1),
        [n] => {
            out.push(b'[');
            write_run(out, view, offset, *n)?;
            out.push(b']');
            Ok(())
        }
        [n, rest @ ..] => {
            let stride = product(rest);
            out.push(b'[');
            for j in 0..*n {
                if j > 0 {
                    out.push(b',');
                }
                let at = j
                    .checked_mul(stride)
                    .and_then(|x| x.checked_add(offset))
                    .ok_or_else(|| view.write_error())?;
                write_nested(out, view, rest, at)?;
            }
            out.push(b']');
            Ok(())
        }
    }
}

/// Writes `count` consecutive elements starting at element `start`, comma-separated.
fn write_run(out: &mut Vec<u8>, view: &View<'_>, start: usize, count: usize) -> Result<(), Error> {
    let bytes = match view.data {
        TensorData::Strings(all) => {
            let items = start
                .checked_add(count)
                .and_then(|end| all.get(start..end))
                .ok_or_else(|| view.write_error())?;
            let mut b64 = String::new();
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if view.as_b64 {
                    b64.clear();
                    base64::engine::general_purpose::STANDARD.encode_string(s, &mut b64);
                    out.extend_from_slice(b"{\"b64\":\"");
                    out.extend_from_slice(b64.as_bytes());
                    out.extend_from_slice(b"\"}");
                } else {
                    json::write_bytes_lossy(out, s);
                }
            }
            return Ok(());
        }
        TensorData::Fixed(b) => b,
    };
    let size = view.dtype.size().ok_or_else(|| view.write_error())?;
    let run = start
        .checked_mul(size)
        .zip(start.checked_add(count).and_then(|e| e.checked_mul(size)))
        .and_then(|(a, b)| bytes.get(a..b))
        .ok_or_else(|| view.write_error())?;
    macro_rules! each {
        ($n:literal, |$x:ident| $write:expr) => {
            for (i, chunk) in run.chunks_exact($n).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let mut a = [0u8; $n];
                a.copy_from_slice(chunk);
                let $x = a;
                $write;
            }
        };
    }
    match view.dtype {
        DataType::Float32 => each!(4, |a| json::write_f32(out, f32::from_le_bytes(a))),
        DataType::Float64 => each!(8, |a| json::write_f64(out, f64::from_le_bytes(a))),
        DataType::Float16 => each!(2, |a| json::write_f16(out, half::f16::from_le_bytes(a))),
        DataType::BFloat16 => each!(2, |a| json::write_bf16(out, half::bf16::from_le_bytes(a))),
        DataType::Int8 => each!(1, |a| json::write_i64(out, i8::from_le_bytes(a).into())),
        DataType::Int16 => each!(2, |a| json::write_i64(out, i16::from_le_bytes(a).into())),
        DataType::Int32 => each!(4, |a| json::write_i64(out, i32::from_le_bytes(a).into())),
        DataType::Int64 => each!(8, |a| json::write_i64(out, i64::from_le_bytes(a))),
        DataType::UInt8 => each!(1, |a| json::write_u64(out, u8::from_le_bytes(a).into())),
        DataType::UInt16 => each!(2, |a| json::write_u64(out, u16::from_le_bytes(a).into())),
        DataType::UInt32 => each!(4, |a| json::write_u64(out, u32::from_le_bytes(a).into())),
        DataType::UInt64 => each!(8, |a| json::write_u64(out, u64::from_le_bytes(a))),
        DataType::Bool => each!(1, |a| out.extend_from_slice(if a[0] != 0 {
            b"true".as_slice()
        } else {
            b"false"
        })),
        DataType::String => return Err(view.write_error()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_core::TensorSpec;

    fn sig(inputs: &[(&str, DataType)]) -> Signature {
        Signature {
            name: "serving_default".into(),
            method_name: "tensorflow/serving/predict".into(),
            inputs: inputs
                .iter()
                .map(|(n, d)| {
                    let spec = TensorSpec {
                        tensor_name: format!("{n}:0"),
                        dtype: *d,
                        shape: None,
                    };
                    (n.to_string(), spec)
                })
                .collect(),
            outputs: vec![],
        }
    }

    fn convert(body: &str, sig: &Signature) -> Result<Vec<(String, Tensor)>, Error> {
        PredictRequestBody::parse(body.as_bytes())?.into_inputs(sig)
    }

    fn ok(body: &str, sig: &Signature) -> Vec<(String, Tensor)> {
        convert(body, sig).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    /// The one input of a single-input conversion.
    fn one(body: &str, dtype: DataType) -> Tensor {
        let mut v = ok(body, &sig(&[("x", dtype)]));
        assert_eq!(v.len(), 1);
        v.remove(0).1
    }

    fn err(body: &str, sig: &Signature) -> String {
        match convert(body, sig) {
            Ok(v) => panic!("{body}: converted to {v:?}"),
            Err(e) => {
                assert_eq!(e.kind, aegis_core::ErrorKind::InvalidArgument, "{e}");
                e.message
            }
        }
    }

    fn err1(body: &str, dtype: DataType) -> String {
        err(body, &sig(&[("x", dtype)]))
    }

    fn respond(format: Format, outputs: &[(&str, Tensor)]) -> Result<String, Error> {
        let outputs: Vec<(String, Tensor)> = outputs
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        predict_response(format, &outputs).map(|b| String::from_utf8(b).unwrap())
    }

    fn f32s(shape: Vec<usize>, v: &[f32]) -> Tensor {
        Tensor::from_slice(shape, v).unwrap()
    }

    const F: DataType = DataType::Float32;

    #[test]
    fn tf_docs_worked_examples() {
        // half_plus_two: y = 0.5 x + 2.
        let x = one(r#"{"instances": [1.0, 2.0, 5.0]}"#, F);
        assert_eq!(x.shape(), &[3]);
        assert_eq!(x.to_vec::<f32>().unwrap(), [1.0, 2.0, 5.0]);
        let y = f32s(vec![3], &[2.5, 3.0, 4.5]);
        assert_eq!(
            respond(Format::Row, &[("y", y)]).unwrap(),
            r#"{"predictions":[2.5,3.0,4.5]}"#
        );

        let x = one(r#"{"inputs": [2.0, 3.0, 4.0]}"#, F);
        assert_eq!(x.shape(), &[3]);
        let y = f32s(vec![3], &[3.0, 3.5, 4.0]);
        assert_eq!(
            respond(Format::Columnar, &[("y", y)]).unwrap(),
            r#"{"outputs":[3.0,3.5,4.0]}"#
        );

        let x = one(r#"{"instances": [[1.0, 2.0], [3.0, 4.0]]}"#, F);
        assert_eq!(x.shape(), &[2, 2]);
        assert_eq!(x.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
        let y = f32s(vec![2, 2], &[2.5, 3.0, 3.5, 4.0]);
        assert_eq!(
            respond(Format::Row, &[("y", y)]).unwrap(),
            r#"{"predictions":[[2.5,3.0],[3.5,4.0]]}"#
        );
    }

    #[test]
    fn top_level_checks() {
        let s = sig(&[("x", F)]);
        assert_eq!(err("", &s), "JSON Parse error: The document is empty");
        assert_eq!(
            err("{\"instances\": [1.0,]}", &s),
            "JSON Parse error: Invalid value. at offset: 19"
        );
        assert_eq!(err("[1, 2]", &s), "JSON Value: [1,2] Is not object");
        assert_eq!(err("\"x\"", &s), "JSON Value: \"x\" Is not object");
        assert_eq!(
            err(r#"{"signature_name": 5, "inputs": [1.0]}"#, &s),
            "JSON Value: {\"signature_name\":5,\"inputs\":[1.0]} not formatted correctly. \
             'signature_name' key must be a string value."
        );
        let b = PredictRequestBody::parse(br#"{"signature_name": "sig", "inputs": 1}"#).unwrap();
        assert_eq!(b.signature_name(), Some("sig"));
        assert_eq!(b.format(), Format::Columnar);
        let b = PredictRequestBody::parse(br#"{"signature_name": "", "instances": [1]}"#).unwrap();
        assert_eq!(b.signature_name(), None);
        assert_eq!(b.format(), Format::Row);
        let b = PredictRequestBody::parse(b"{} trailing bytes are ignored").unwrap();
        assert_eq!(b.signature_name(), None);

        assert_eq!(err("{}", &s), "Missing 'inputs' or 'instances' key");
        assert_eq!(
            err(r#"{"instances": [1.0], "inputs": [1.0]}"#, &s),
            "JSON Value: {\"instances\":[1.0],\"inputs\":[1.0]} Not formatted correctly expecting \
             only one of 'inputs' or 'instances' keys to exist "
        );
        assert_eq!(
            err(r#"{"instances": 1.0}"#, &s),
            "JSON Value: {\"instances\":1.0} Expecting 'instances' to be an list/array"
        );
        assert_eq!(
            err(r#"{"instances": []}"#, &s),
            "JSON Value: {\"instances\":[]} No values in 'instances' array"
        );
    }

    #[test]
    fn signature_without_inputs() {
        let none = sig(&[]);
        assert_eq!(
            err(r#"{"instances": [1]}"#, &none),
            "Failed to get input map for signature: DEFAULT"
        );
        assert_eq!(
            err(r#"{"signature_name": "", "instances": [1]}"#, &none),
            "Failed to get input map for signature: DEFAULT"
        );
        // Checked before the body's keys, as TF Serving does.
        assert_eq!(
            err(r#"{"signature_name": "mine"}"#, &none),
            "Failed to get input map for signature: mine"
        );
    }

    #[test]
    fn row_object_mode() {
        let s = sig(&[("a", F), ("b", DataType::Int64)]);
        let v = ok(
            r#"{"instances": [{"a": [1.5, 2], "b": 7}, {"b": -8, "a": [3, 4.25]}]}"#,
            &s,
        );
        assert_eq!(v[0].0, "a");
        assert_eq!(v[0].1.shape(), &[2, 2]);
        assert_eq!(v[0].1.to_vec::<f32>().unwrap(), [1.5, 2.0, 3.0, 4.25]);
        assert_eq!(v[1].0, "b");
        assert_eq!(v[1].1.shape(), &[2]);
        assert_eq!(v[1].1.to_vec::<i64>().unwrap(), [7, -8]);

        // Duplicate keys: the first one counts, the later ones are ignored.
        let v = ok(
            r#"{"instances": [{"a": 1, "b": 2, "a": [9, 9]}, {"a": 3, "b": 4}]}"#,
            &s,
        );
        assert_eq!(v[0].1.to_vec::<f32>().unwrap(), [1.0, 3.0]);

        assert_eq!(
            err(r#"{"instances": [{"a": 1, "b": 2}, {"a": 1}]}"#, &s),
            "Failed to process element: 1 of 'instances' list. JSON object: {\"a\":1} keys must \
             be equal to: a,b"
        );
        assert_eq!(
            err(r#"{"instances": [{"a": 1, "c": 2}]}"#, &s),
            "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: \
             JSON object: does not have named input: c"
        );
        assert_eq!(
            err(r#"{"instances": [{"a": 1, "b": 2}, [1]]}"#, &s),
            "Expecting object but got list at item 1 of input list"
        );
        assert_eq!(
            err(r#"{"instances": [{"a": 1, "b": 2.5}]}"#, &s),
            "Failed to process element: 0 key: b of 'instances' list. Error: INVALID_ARGUMENT: \
             JSON Value: 2.5 Type: Number is not of expected type: int64"
        );
        assert_eq!(
            err(
                r#"{"instances": [{"a": [1, 2], "b": 1}, {"a": [1], "b": 1}]}"#,
                &s
            ),
            "Failed to process element: 1 key: a of 'instances' list. Error: INVALID_ARGUMENT: \
             Expecting tensor size: 2 but got: 1"
        );
        assert_eq!(
            err(r#"{"instances": [1.0, 2.0]}"#, &s),
            "instances is a plain list, but expecting list of objects as multiple input tensors \
             required as per tensorinfo_map"
        );
        assert_eq!(
            err(r#"{"instances": [{"b64": "AA=="}]}"#, &s),
            "instances is a plain list, but expecting list of objects as multiple input tensors \
             required as per tensorinfo_map"
        );

        // A single-input model may use object rows too.
        let x = one(r#"{"instances": [{"x": 1.0}, {"x": 2.0}]}"#, F);
        assert_eq!(x.shape(), &[2]);
        assert_eq!(x.to_vec::<f32>().unwrap(), [1.0, 2.0]);
    }

    #[test]
    fn row_plain_mode() {
        let x = one(
            r#"{"instances": [[[1], [2]], [[3], [4]], [[5], [6]]]}"#,
            DataType::Int32,
        );
        assert_eq!(x.shape(), &[3, 2, 1]);
        assert_eq!(x.to_vec::<i32>().unwrap(), [1, 2, 3, 4, 5, 6]);
        let x = one(r#"{"instances": [[], []]}"#, F);
        assert_eq!(x.shape(), &[2, 0]);
        assert_eq!(
            err1(r#"{"instances": [1.0, {"a": 1}]}"#, F),
            "Expecting value/list but got object at item 1 of input list"
        );
        assert_eq!(
            err1(r#"{"instances": [1.0, "a"]}"#, F),
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON \
             Value: \"a\" Type: String is not of expected type: float"
        );
        assert_eq!(
            err1(r#"{"instances": [[1, 2], [3, 4, 5]]}"#, F),
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: \
             Expecting tensor size: 2 but got: 3"
        );
        assert_eq!(
            err1(r#"{"instances": [[[1, 2]], [[3], [4]]]}"#, F),
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: \
             Expecting shape [1,2] but got: [2,1]"
        );
        assert_eq!(
            err1(r#"{"instances": [[[1, 2], [3]]]}"#, F),
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: \
             Encountered list at unexpected size: 1 at level: 1 expected size: 2"
        );
    }

    #[test]
    fn shape_errors() {
        assert_eq!(
            err1(r#"{"inputs": [[1, 2], [3]]}"#, F),
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2"
        );
        assert_eq!(
            err1(r#"{"inputs": [[1, 2], 3]}"#, F),
            "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"
        );
        assert_eq!(
            err1(r#"{"inputs": [1, [2]]}"#, F),
            "Encountered list at unexpected level: 1 expected < 1"
        );
        assert_eq!(
            err1(r#"{"inputs": [[1, [2]], [3, 4]]}"#, F),
            "Encountered list at unexpected level: 2 expected < 2"
        );
        assert_eq!(
            err1(r#"{"inputs": [[], [1]]}"#, F),
            "Encountered list at unexpected size: 1 at level: 1 expected size: 0"
        );
    }

    #[test]
    fn columnar_format() {
        let s = sig(&[("a", F), ("b", DataType::String)]);
        let v = ok(
            r#"{"inputs": {"b": ["x", "y", "z"], "ignored": 1, "a": [[1], [2]]}}"#,
            &s,
        );
        assert_eq!(v[0].0, "a");
        assert_eq!(v[0].1.shape(), &[2, 1]);
        assert_eq!(v[1].0, "b");
        assert_eq!(v[1].1.shape(), &[3]);
        assert_eq!(
            v[1].1.strings().unwrap(),
            [b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]
        );
        assert_eq!(
            err(r#"{"inputs": {"a": [1]}}"#, &s),
            "Missing named input: b in 'inputs' object."
        );
        assert_eq!(
            err(r#"{"inputs": [1]}"#, &s),
            "inputs is a plain value/list, but expecting an object as multiple input tensors \
             required as per tensorinfo_map"
        );
        assert_eq!(
            err(r#"{"inputs": {"b64": "AA=="}}"#, &s),
            "inputs is a plain value/list, but expecting an object as multiple input tensors \
             required as per tensorinfo_map"
        );
        // Errors are not wrapped in columnar mode.
        assert_eq!(
            err(r#"{"inputs": {"a": [true], "b": []}}"#, &s),
            "JSON Value: true Type: True is not of expected type: float"
        );

        // A bare scalar is a rank-0 tensor.
        let x = one(r#"{"inputs": 7}"#, DataType::Int32);
        assert_eq!(x.shape(), &[] as &[usize]);
        assert_eq!(x.to_vec::<i32>().unwrap(), [7]);
        let x = one(r#"{"inputs": {"b64": "aGk="}}"#, DataType::String);
        assert_eq!(x.shape(), &[] as &[usize]);
        assert_eq!(x.strings().unwrap(), [b"hi".to_vec()]);
        let x = one(r#"{"inputs": []}"#, F);
        assert_eq!(x.shape(), &[0]);
        // Single input keyed by name.
        let x = one(r#"{"inputs": {"x": [[1.5]]}}"#, F);
        assert_eq!(x.shape(), &[1, 1]);
        assert_eq!(
            err1(r#"{"inputs": {"y": [1]}}"#, F),
            "Missing named input: x in 'inputs' object."
        );
    }

    #[test]
    fn float_inputs() {
        let x = one(
            r#"{"inputs": [1, -2, 0.5, NaN, Infinity, -Infinity, Inf, -Inf, 16777215, 1e-50]}"#,
            F,
        );
        let v = x.to_vec::<f32>().unwrap();
        assert_eq!(v[..3], [1.0, -2.0, 0.5]);
        assert!(v[3].is_nan());
        assert_eq!(
            v[4..9],
            [
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::INFINITY,
                f32::NEG_INFINITY,
                16777215.0
            ]
        );
        assert_eq!(v[9], 0.0);
        assert_eq!(
            one(r#"{"inputs": [0.1]}"#, F).to_vec::<f32>().unwrap(),
            [0.1f32]
        );
        // Numbers round to the nearest float, as decimals always do; only a finite number
        // that would become infinite is refused.
        let big = one(
            r#"{"inputs": [16777217, 18446744073709551616, 3.4028234663852886e38]}"#,
            F,
        );
        assert_eq!(
            big.to_vec::<f32>().unwrap(),
            [16777216.0, 18446744073709551616.0, f32::MAX]
        );
        assert_eq!(
            err1(r#"{"inputs": [1e39]}"#, F),
            "Cannot convert JSON value: 1e39 to float without loss of precision."
        );
        assert_eq!(
            err1(r#"{"inputs": [null]}"#, F),
            "JSON Value: null Type: Null is not of expected type: float"
        );
        assert_eq!(
            err1(r#"{"inputs": [{"b64": "AA=="}]}"#, F),
            "JSON Value: {\"b64\":\"AA==\"} Type: Object is not of expected type: float"
        );
        assert_eq!(
            err1(r#"{"inputs": [[1.0], [false]]}"#, F),
            "JSON Value: false Type: False is not of expected type: float"
        );

        let d = DataType::Float64;
        let x = one(
            r#"{"inputs": [0.1, 9007199254740991, -1e308, NaN, 1e-320]}"#,
            d,
        );
        let v = x.to_vec::<f64>().unwrap();
        assert_eq!(v[..3], [0.1, 9007199254740991.0, -1e308]);
        assert!(v[3].is_nan());
        assert_eq!(v[4], 1e-320);
        assert_eq!(
            one(r#"{"inputs": [9007199254740993]}"#, d)
                .to_vec::<f64>()
                .unwrap(),
            [9007199254740992.0]
        );
        assert_eq!(
            err1(r#"{"inputs": ["1.0"]}"#, d),
            "JSON Value: \"1.0\" Type: String is not of expected type: double"
        );
    }

    #[test]
    fn half_precision_inputs_and_outputs() {
        use half::{bf16, f16};
        let x = one(
            r#"{"inputs": [0.1, 2, -65504, NaN, -Infinity]}"#,
            DataType::Float16,
        );
        let v = x.to_vec::<f16>().unwrap();
        assert_eq!(v[..3], [f16::from_f32(0.1), f16::from_f32(2.0), f16::MIN]);
        assert!(v[3].is_nan());
        assert_eq!(v[4], f16::NEG_INFINITY);
        assert_eq!(
            err1(r#"{"inputs": [70000]}"#, DataType::Float16),
            "Cannot convert JSON value: 70000 to half without loss of precision."
        );
        assert_eq!(
            err1(r#"{"inputs": [true]}"#, DataType::Float16),
            "JSON Value: true Type: True is not of expected type: half"
        );
        let x = one(r#"{"inputs": [[0.1, 1e30]]}"#, DataType::BFloat16);
        assert_eq!(x.shape(), &[1, 2]);
        assert_eq!(
            x.to_vec::<bf16>().unwrap(),
            [bf16::from_f32(0.1), bf16::from_f64(1e30)]
        );
        assert_eq!(
            err1(r#"{"inputs": [1e39]}"#, DataType::BFloat16),
            "Cannot convert JSON value: 1e39 to bfloat16 without loss of precision."
        );

        let h = Tensor::from_slice(
            vec![3],
            &[f16::from_f32(0.1), f16::from_f32(-2.0), f16::NAN],
        )
        .unwrap();
        let b = Tensor::from_slice(vec![3], &[bf16::from_f32(0.1), bf16::INFINITY, bf16::ZERO])
            .unwrap();
        assert_eq!(
            respond(Format::Columnar, &[("h", h), ("b", b)]).unwrap(),
            r#"{"outputs":{"h":[0.1,-2.0,NaN],"b":[0.1,Infinity,0.0]}}"#
        );
    }

    #[test]
    fn integer_inputs() {
        let i32s = DataType::Int32;
        let x = one(r#"{"inputs": [2147483647, -2147483648, 0]}"#, i32s);
        assert_eq!(x.to_vec::<i32>().unwrap(), [i32::MAX, i32::MIN, 0]);
        assert_eq!(
            err1(r#"{"instances": [1.0]}"#, i32s),
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON \
             Value: 1.0 Type: Number is not of expected type: int32"
        );
        assert_eq!(
            err1(r#"{"inputs": [2147483648]}"#, i32s),
            "JSON Value: 2147483648 Type: Number is not of expected type: int32"
        );
        assert_eq!(
            err1(r#"{"inputs": ["1"]}"#, i32s),
            "JSON Value: \"1\" Type: String is not of expected type: int32"
        );

        let i64s = DataType::Int64;
        let x = one(
            r#"{"inputs": [9223372036854775807, -9223372036854775808]}"#,
            i64s,
        );
        assert_eq!(x.to_vec::<i64>().unwrap(), [i64::MAX, i64::MIN]);
        assert_eq!(
            err1(r#"{"inputs": [9223372036854775808]}"#, i64s),
            "JSON Value: 9223372036854775808 Type: Number is not of expected type: int64"
        );
        assert_eq!(
            err1(r#"{"inputs": [-9223372036854775809]}"#, i64s),
            "JSON Value: -9.223372036854776e18 Type: Number is not of expected type: int64"
        );
        assert_eq!(
            err1(r#"{"inputs": [1e3]}"#, i64s),
            "JSON Value: 1000.0 Type: Number is not of expected type: int64"
        );

        let u64s = DataType::UInt64;
        let x = one(r#"{"inputs": [18446744073709551615, 0, 5]}"#, u64s);
        assert_eq!(x.to_vec::<u64>().unwrap(), [u64::MAX, 0, 5]);
        assert_eq!(
            err1(r#"{"inputs": [-1]}"#, u64s),
            "JSON Value: -1 Type: Number is not of expected type: uint64"
        );
        assert_eq!(
            err1(r#"{"inputs": [18446744073709551616]}"#, u64s),
            "JSON Value: 1.8446744073709552e19 Type: Number is not of expected type: uint64"
        );
        let u32s = DataType::UInt32;
        let x = one(r#"{"inputs": [4294967295]}"#, u32s);
        assert_eq!(x.to_vec::<u32>().unwrap(), [u32::MAX]);
        assert_eq!(
            err1(r#"{"inputs": [4294967296]}"#, u32s),
            "JSON Value: 4294967296 Type: Number is not of expected type: uint32"
        );

        // The narrow types are range-checked (TF Serving wraps them silently).
        let cases = [
            (DataType::Int8, "[-128, 127]", "128"),
            (DataType::Int16, "[-32768, 32767]", "-32769"),
            (DataType::UInt8, "[0, 255]", "-1"),
            (DataType::UInt16, "[0, 65535]", "65536"),
        ];
        for (dtype, good, bad) in cases {
            let t = one(&format!(r#"{{"inputs": {good}}}"#), dtype);
            assert_eq!(t.shape(), &[2]);
            assert_eq!(
                err1(&format!(r#"{{"inputs": [{bad}]}}"#), dtype),
                format!("JSON Value: {bad} is out of range for {}", dtype.name())
            );
            assert_eq!(
                err1(r#"{"inputs": [1.5]}"#, dtype),
                format!(
                    "JSON Value: 1.5 Type: Number is not of expected type: {}",
                    dtype.name()
                )
            );
        }
        assert_eq!(
            one(r#"{"inputs": [-128, 127]}"#, DataType::Int8)
                .bytes()
                .unwrap(),
            &[0x80, 0x7f]
        );
        assert_eq!(
            err1(r#"{"inputs": [99999999999999999999]}"#, DataType::UInt8),
            "JSON Value: 1e20 is out of range for uint8"
        );
    }

    #[test]
    fn bool_inputs() {
        let x = one(r#"{"instances": [true, false, true]}"#, DataType::Bool);
        assert_eq!(x.to_vec::<bool>().unwrap(), [true, false, true]);
        assert_eq!(
            err1(r#"{"inputs": [1]}"#, DataType::Bool),
            "JSON Value: 1 Type: Number is not of expected type: bool"
        );
        assert_eq!(
            err1(r#"{"inputs": ["true"]}"#, DataType::Bool),
            "JSON Value: \"true\" Type: String is not of expected type: bool"
        );
    }

    #[test]
    fn string_and_b64_inputs() {
        let s = DataType::String;
        let x = one(
            r#"{"instances": ["plain", "\u00e9\ud83d\ude00", {"b64": "AAH/"}, {"b64": "aGk"}, {"b64": "aG k=\n"}]}"#,
            s,
        );
        assert_eq!(x.shape(), &[5]);
        assert_eq!(
            x.strings().unwrap(),
            [
                b"plain".to_vec(),
                "é😀".as_bytes().to_vec(),
                vec![0, 1, 255],
                b"hi".to_vec(),
                b"hi".to_vec()
            ]
        );
        assert_eq!(
            err1(r#"{"inputs": [{"b64": "AAH_"}]}"#, s),
            "Unable to base64 decode"
        );
        assert_eq!(
            err1(r#"{"inputs": {"b64": "A"}}"#, s),
            "Unable to base64 decode"
        );
        assert_eq!(
            err1(r#"{"instances": [{"b64": "!!!!"}]}"#, s),
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable \
             to base64 decode"
        );
        assert_eq!(
            err1(r#"{"inputs": [{"b64": "AA==", "x": 1}]}"#, s),
            "JSON Value: {\"b64\":\"AA==\",\"x\":1} not formatted correctly for base64 data"
        );
        assert_eq!(
            err1(r#"{"inputs": [{"b64": 5}]}"#, s),
            "JSON Value: {\"b64\":5} not formatted correctly for base64 data"
        );
        assert_eq!(
            err1(r#"{"inputs": [5]}"#, s),
            "JSON Value: 5 Type: Number is not of expected type: string"
        );
        // Object rows whose values are b64 objects.
        let sg = sig(&[("img_bytes", s), ("k", DataType::Int32)]);
        let v = ok(
            r#"{"instances": [{"img_bytes": {"b64": "AQI="}, "k": 1}, {"img_bytes": {"b64": "AwQ="}, "k": 2}]}"#,
            &sg,
        );
        assert_eq!(v[0].1.strings().unwrap(), [vec![1, 2], vec![3, 4]]);
    }

    #[test]
    fn row_responses() {
        let a = f32s(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = Tensor::from_slice(vec![2], &[7i64, -8]).unwrap();
        assert_eq!(
            respond(Format::Row, &[("a", a.clone()), ("b", b.clone())]).unwrap(),
            r#"{"predictions":[{"a":[1.0,2.0],"b":7},{"a":[3.0,4.0],"b":-8}]}"#
        );
        let scalar = f32s(vec![], &[1.0]);
        assert_eq!(
            respond(Format::Row, &[("a", a.clone()), ("s", scalar)])
                .unwrap_err()
                .message,
            "Tensor name: s has no shape information "
        );
        let c = f32s(vec![3], &[1.0, 2.0, 3.0]);
        assert_eq!(
            respond(Format::Row, &[("a", a.clone()), ("c", c)])
                .unwrap_err()
                .message,
            "Tensor name: c has inconsistent batch size: 3 expecting: 2"
        );
        assert_eq!(
            predict_response(Format::Row, &[]).unwrap_err().message,
            "Cannot convert empty tensor map to JSON"
        );
        let empty = f32s(vec![0, 3], &[]);
        assert_eq!(
            respond(Format::Row, &[("e", empty)]).unwrap(),
            r#"{"predictions":[]}"#
        );
        let rank3 = Tensor::from_slice(vec![2, 1, 2], &[1i32, 2, 3, 4]).unwrap();
        assert_eq!(
            respond(Format::Row, &[("r", rank3)]).unwrap(),
            r#"{"predictions":[[[1,2]],[[3,4]]]}"#
        );
    }

    #[test]
    fn columnar_responses() {
        let a = f32s(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let s = Tensor::from_slice(vec![], &[true]).unwrap();
        assert_eq!(
            respond(Format::Columnar, &[("z", a.clone()), ("s", s.clone())]).unwrap(),
            r#"{"outputs":{"z":[[1.0,2.0],[3.0,4.0]],"s":true}}"#
        );
        assert_eq!(
            respond(Format::Columnar, &[("s", s)]).unwrap(),
            r#"{"outputs":true}"#
        );
        let zero = Tensor::from_slice(vec![2, 0], &[] as &[u8]).unwrap();
        assert_eq!(
            respond(Format::Columnar, &[("z", zero)]).unwrap(),
            r#"{"outputs":[[],[]]}"#
        );
    }

    #[test]
    fn value_rendering() {
        let f = f32s(
            vec![6],
            &[0.1, 3.0, 1e-7, f32::NAN, f32::INFINITY, f32::NEG_INFINITY],
        );
        assert_eq!(
            respond(Format::Columnar, &[("f", f)]).unwrap(),
            r#"{"outputs":[0.1,3.0,1e-7,NaN,Infinity,-Infinity]}"#
        );
        let d = Tensor::from_slice(vec![2], &[0.1f64, 1e300]).unwrap();
        assert_eq!(
            respond(Format::Columnar, &[("d", d)]).unwrap(),
            r#"{"outputs":[0.1,1e300]}"#
        );
        let ints = [
            (
                Tensor::from_slice(vec![2], &[i8::MIN, i8::MAX]).unwrap(),
                "[-128,127]",
            ),
            (
                Tensor::from_slice(vec![2], &[i16::MIN, 1]).unwrap(),
                "[-32768,1]",
            ),
            (Tensor::from_slice(vec![1], &[u8::MAX]).unwrap(), "[255]"),
            (Tensor::from_slice(vec![1], &[u16::MAX]).unwrap(), "[65535]"),
            (
                Tensor::from_slice(vec![1], &[u32::MAX]).unwrap(),
                "[4294967295]",
            ),
            (
                Tensor::from_slice(vec![2], &[i64::MIN, i64::MAX]).unwrap(),
                "[-9223372036854775808,9223372036854775807]",
            ),
            (
                Tensor::from_slice(vec![1], &[u64::MAX]).unwrap(),
                "[18446744073709551615]",
            ),
            (
                Tensor::from_slice(vec![2], &[true, false]).unwrap(),
                "[true,false]",
            ),
        ];
        for (t, want) in ints {
            assert_eq!(
                respond(Format::Columnar, &[("x", t)]).unwrap(),
                format!(r#"{{"outputs":{want}}}"#)
            );
        }
    }

    #[test]
    fn string_outputs_and_bytes_suffix() {
        let t = Tensor::from_strings(
            vec![3],
            vec![b"a\"b".to_vec(), vec![0, 1, 0xff], "é".as_bytes().to_vec()],
        )
        .unwrap();
        assert_eq!(
            respond(Format::Columnar, &[("text", t.clone())]).unwrap(),
            "{\"outputs\":[\"a\\\"b\",\"\\u0000\\u0001\u{FFFD}\",\"é\"]}"
        );
        assert_eq!(
            respond(Format::Row, &[("out_bytes", t.clone())]).unwrap(),
            r#"{"predictions":[{"b64":"YSJi"},{"b64":"AAH/"},{"b64":"w6k="}]}"#
        );
        // The suffix is for string tensors only.
        let n = Tensor::from_slice(vec![1], &[1i32]).unwrap();
        assert_eq!(
            respond(Format::Columnar, &[("n_bytes", n)]).unwrap(),
            r#"{"outputs":[1]}"#
        );
        // Output keys are escaped.
        assert!(respond(Format::Columnar, &[("q\"", t.clone()), ("k", t)])
            .unwrap()
            .starts_with(r#"{"outputs":{"q\"":["#));
    }

    #[test]
    fn exact_round_trips_through_request_and_response() {
        let body = r#"{"inputs": [9223372036854775807, -9223372036854775808, 0]}"#;
        let t = one(body, DataType::Int64);
        assert_eq!(
            respond(Format::Columnar, &[("y", t)]).unwrap(),
            r#"{"outputs":[9223372036854775807,-9223372036854775808,0]}"#
        );
        let t = one(r#"{"inputs": [18446744073709551615]}"#, DataType::UInt64);
        assert_eq!(
            respond(Format::Columnar, &[("y", t)]).unwrap(),
            r#"{"outputs":[18446744073709551615]}"#
        );
        let t = one(r#"{"instances": [NaN, Infinity, -Inf, 0.1]}"#, F);
        assert_eq!(
            respond(Format::Row, &[("y", t)]).unwrap(),
            r#"{"predictions":[NaN,Infinity,-Infinity,0.1]}"#
        );
        let t = one(r#"{"instances": [{"b64": "AAH/"}]}"#, DataType::String);
        assert_eq!(
            respond(Format::Row, &[("y_bytes", t)]).unwrap(),
            r#"{"predictions":[{"b64":"AAH/"}]}"#
        );
    }

    #[test]
    fn error_body_matches_tf_serving() {
        assert_eq!(
            error_body("a \"b\"\n"),
            b"{\n    \"error\": \"a \\\"b\\\"\\n\"\n}".to_vec()
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = sig(&[("x", F)]);
        let deep = format!("{{\"instances\": {}", "[".repeat(100_000));
        assert!(err(&deep, &s).contains("Nesting too deep"));
        // As deep as the parser allows: converted (or refused) without trouble.
        let d = json::MAX_DEPTH - 1;
        let body = format!("{{\"inputs\": {}1.0{}}}", "[".repeat(d), "]".repeat(d));
        let x = one(&body, F);
        assert_eq!(x.shape().len(), d);
        assert_eq!(x.num_elements(), 1);
        let body = format!("{{\"instances\": {}1.0{}}}", "[".repeat(d), "]".repeat(d));
        assert_eq!(one(&body, F).shape().len(), d);
        let t = one(&body, F);
        let text = respond(Format::Row, &[("y", t.clone())]).unwrap();
        assert!(text.starts_with("{\"predictions\":[[[[") && text.contains("1.0"));
        assert!(respond(Format::Columnar, &[("y", t)]).is_ok());
    }

    #[test]
    fn hostile_shapes_do_not_over_allocate() {
        // The first element claims a 1000^5 tensor; the rest of the body cannot back it.
        let level = format!("[{}]", vec!["0"; 1000].join(","));
        let mut v = level;
        for _ in 0..4 {
            v = format!("[{v}{}]", ",0".repeat(999));
        }
        let e = err1(&format!("{{\"inputs\": {v}}}"), F);
        assert!(
            e.starts_with("JSON Value: 0 found at incorrect level"),
            "{e}"
        );
        let e = err1(&format!("{{\"instances\": [{v}, {v}]}}"), F);
        assert!(e.contains("found at incorrect level"), "{e}");
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn fuzz_requests_never_panic() {
        let seeds: &[&str] = &[
            r#"{"instances": [[1.0, 2, -3e5], [NaN, -Infinity, 0.5]]}"#,
            r#"{"instances": [{"a": [1, 2], "b": "x"}, {"a": [3, 4], "b": {"b64": "AAE="}}]}"#,
            r#"{"inputs": {"a": [[1], [2]], "b": ["q", "r"]}, "signature_name": "s"}"#,
            r#"{"inputs": [[true, false]], "instances": 1}"#,
            r#"{"inputs": 18446744073709551615}"#,
        ];
        let sigs = [
            sig(&[("x", F)]),
            sig(&[("a", DataType::Int8), ("b", DataType::String)]),
            sig(&[("a", DataType::Float16), ("b", DataType::String)]),
            sig(&[("x", DataType::Bool)]),
            sig(&[("x", DataType::UInt64)]),
            sig(&[("x", DataType::String)]),
            sig(&[]),
        ];
        let alphabet = b"[]{}\",:.-+e0123456789 NaIfinity\"ab64x\\";
        let mut rng = Rng(0xDEAD_BEEF_1234_5678);
        for round in 0..20_000 {
            let mut v = seeds[rng.below(seeds.len())].as_bytes().to_vec();
            if round % 5 == 0 {
                v = (0..rng.below(48)).map(|_| rng.next() as u8).collect();
            }
            for _ in 0..rng.below(5) {
                let at = rng.below(v.len());
                match rng.below(3) {
                    0 if !v.is_empty() => v[at] = alphabet[rng.below(alphabet.len())],
                    1 => v.insert(at, alphabet[rng.below(alphabet.len())]),
                    _ if !v.is_empty() => {
                        v.remove(at);
                    }
                    _ => {}
                }
            }
            let Ok(body) = PredictRequestBody::parse(&v) else {
                continue;
            };
            let format = body.format();
            let s = &sigs[rng.below(sigs.len())];
            if let Ok(inputs) = body.into_inputs(s) {
                for (_, t) in &inputs {
                    assert_eq!(t.shape().iter().product::<usize>(), t.num_elements());
                }
                let _ = predict_response(format, &inputs);
                let _ = predict_response(Format::Columnar, &inputs);
            }
        }
    }

    /// `cargo test --release -- --ignored --nocapture bench` prints the numbers.
    #[test]
    #[ignore]
    fn bench_16x784_float32() {
        let mut rng = Rng(42);
        let values: Vec<f32> = (0..16 * 784)
            .map(|_| (rng.next() % 1_000_000) as f32 / 1_000_000.0)
            .collect();
        let s = sig(&[("x", F)]);
        let iters = 2000;
        let mut inputs = Vec::new();
        // Shortest f32 text (`0.123456`), and the f64 text of each f32 that Python clients send
        // (`json.dumps(array.tolist())`: `0.12345600128173828`).
        for (label, text) in [
            (
                "f32 text",
                &(|x: f32| format!("{x}")) as &dyn Fn(f32) -> String,
            ),
            ("f64 text of f32", &|x: f32| format!("{}", f64::from(x))),
        ] {
            let rows: Vec<String> = values
                .chunks(784)
                .map(|row| {
                    let vals: Vec<String> = row.iter().map(|&x| text(x)).collect();
                    format!("[{}]", vals.join(", "))
                })
                .collect();
            let body = format!("{{\"instances\": [{}]}}", rows.join(", "));
            let t0 = std::time::Instant::now();
            let mut out = None;
            for _ in 0..iters {
                let b = PredictRequestBody::parse(body.as_bytes()).unwrap();
                out = Some(b.into_inputs(&s).unwrap());
            }
            let per = t0.elapsed() / iters;
            inputs = out.unwrap();
            assert_eq!(inputs[0].1.shape(), &[16, 784]);
            println!(
                "parse+convert 16x784 float32, {label} ({} bytes): {per:?} per request",
                body.len()
            );
        }
        let t0 = std::time::Instant::now();
        let mut len = 0;
        for _ in 0..iters {
            len = predict_response(Format::Row, &inputs).unwrap().len();
        }
        println!(
            "write 16x784 float32 predictions ({len} bytes): {:?} per response",
            t0.elapsed() / iters
        );
    }
}
