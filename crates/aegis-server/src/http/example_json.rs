//! TF Serving's classify / regress JSON (`{"signature_name", "context", "examples"}` in,
//! `{"results": ...}` out), with TF Serving's rules and error texts
//! (`tensorflow_serving/util/json_tensor.cc`, `FillClassifyRegressRequestFromJson` and
//! `MakeJsonFrom{Classification,Regression}Result`).
//!
//! Each example object (and the context) becomes a `tensorflow.Example`, each key a `Feature`
//! whose kind follows the JSON: decimals (a literal with `.` or an exponent, and the `NaN` /
//! `Infinity` tokens) are a `float_list`, integer literals and booleans an `int64_list`, strings
//! and `{"b64": ...}` objects a `bytes_list`. A value is a scalar or a flat list whose elements
//! all map to one kind; an empty list is a feature with no kind. A key given twice keeps the last
//! value, as TF Serving's map assignment does.

use aegis_core::Error;
use aegis_models::{Class, Classifications};
use aegis_proto::tensorflow::serving::{input, ExampleList, ExampleListWithContext, Input};
use aegis_proto::tensorflow::{
    feature, BytesList, Example, Feature, Features, FloatList, Int64List,
};

use super::json::{self, Number, Value};
use super::tensor_json::decode_b64;

/// A parsed classify or regress request.
#[derive(Debug)]
pub struct ExamplesRequest {
    /// The requested signature; empty means `serving_default`.
    pub signature_name: String,
    pub input: Input,
}

/// TF Serving's `FormatError`: `JSON Value: <json> <what>`.
fn format_error(v: &Value, what: &str) -> Error {
    Error::invalid_argument(format!("JSON Value: {} {what}", json::message_json(v)))
}

/// Parses a classify or regress body: the top-level object, `signature_name`, `context` (when
/// present) and then `examples`, in TF Serving's order.
pub fn parse_request(body: &[u8]) -> Result<ExamplesRequest, Error> {
    let doc = json::parse(body)?;
    if !matches!(doc, Value::Object(_)) {
        return Err(format_error(&doc, "Is not object"));
    }
    let signature_name = match doc.get("signature_name") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(format_error(
                &doc,
                "not formatted correctly. 'signature_name' key must be a string value.",
            ))
        }
    };
    let context = doc.get("context").map(example_from_json).transpose()?;
    // TF Serving says "classify" here for regress requests too.
    let examples = match doc.get("examples") {
        None => {
            return Err(format_error(
                &doc,
                "When method is classify, key 'examples' is expected and was not found",
            ))
        }
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(format_error(&doc, "'examples' value is an empty array"))
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(example_from_json)
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(format_error(
                &doc,
                "Expecting 'examples' value to be an list/array",
            ))
        }
    };
    let kind = match context {
        Some(context) => input::Kind::ExampleListWithContext(ExampleListWithContext {
            examples,
            context: Some(context),
        }),
        None => input::Kind::ExampleList(ExampleList { examples }),
    };
    Ok(ExamplesRequest {
        signature_name,
        input: Input { kind: Some(kind) },
    })
}

/// `MakeExampleFromJsonObject`.
fn example_from_json(v: &Value) -> Result<Example, Error> {
    let Value::Object(members) = v else {
        return Err(Error::invalid_argument(format!(
            "Example must be JSON object but got JSON {}",
            v.type_name()
        )));
    };
    let mut features = Features::default();
    for (name, content) in members {
        let mut kind = None;
        match content {
            Value::Array(items) => {
                for item in items {
                    add_value(item, name, &mut kind)?;
                }
            }
            other => add_value(other, name, &mut kind)?,
        }
        features.feature.insert(name.clone(), Feature { kind });
    }
    Ok(Example {
        features: Some(features),
    })
}

fn unexpected_type(name: &str, v: &Value) -> Error {
    Error::invalid_argument(format!(
        "Feature: {name} has element with unexpected JSON type: {}",
        v.type_name()
    ))
}

fn kind_name(kind: &feature::Kind) -> &'static str {
    match kind {
        feature::Kind::BytesList(_) => "bytes",
        feature::Kind::FloatList(_) => "float",
        feature::Kind::Int64List(_) => "int64",
    }
}

fn bytes_list<'a>(
    name: &str,
    kind: &'a mut Option<feature::Kind>,
) -> Result<&'a mut Vec<Vec<u8>>, Error> {
    match kind.get_or_insert_with(|| feature::Kind::BytesList(BytesList::default())) {
        feature::Kind::BytesList(l) => Ok(&mut l.value),
        other => Err(incompatible(name, other)),
    }
}

fn float_list<'a>(
    name: &str,
    kind: &'a mut Option<feature::Kind>,
) -> Result<&'a mut Vec<f32>, Error> {
    match kind.get_or_insert_with(|| feature::Kind::FloatList(FloatList::default())) {
        feature::Kind::FloatList(l) => Ok(&mut l.value),
        other => Err(incompatible(name, other)),
    }
}

fn int64_list<'a>(
    name: &str,
    kind: &'a mut Option<feature::Kind>,
) -> Result<&'a mut Vec<i64>, Error> {
    match kind.get_or_insert_with(|| feature::Kind::Int64List(Int64List::default())) {
        feature::Kind::Int64List(l) => Ok(&mut l.value),
        other => Err(incompatible(name, other)),
    }
}

fn incompatible(name: &str, kind: &feature::Kind) -> Error {
    Error::invalid_argument(format!(
        "Unexpected element type in feature: {name} expecting type: {}",
        kind_name(kind)
    ))
}

/// `AddValueToFeature`: appends one JSON element to the feature being built.
fn add_value(v: &Value, name: &str, kind: &mut Option<feature::Kind>) -> Result<(), Error> {
    match v {
        Value::Null | Value::Array(_) => return Err(unexpected_type(name, v)),
        Value::Bool(b) => int64_list(name, kind)?.push(i64::from(*b)),
        Value::Object(_) => {
            let Some(text) = v.b64_payload() else {
                return Err(unexpected_type(name, v));
            };
            let list = bytes_list(name, kind)?;
            let bytes = decode_b64(text)
                .ok_or_else(|| Error::invalid_argument("Unable to base64 decode"))?;
            list.push(bytes);
        }
        Value::String(s) => bytes_list(name, kind)?.push(s.as_bytes().to_vec()),
        // rapidjson reads an integer literal beyond the 64-bit ranges as a double.
        Value::Number(n @ (Number::Float(_) | Number::BigInt(_) | Number::Decimal(_))) => {
            let list = float_list(name, kind)?;
            let f = n.as_f32();
            if f.is_infinite() && n.as_f64().is_finite() {
                return Err(Error::invalid_argument(format!(
                    "Cannot convert JSON value: {} to float without loss of precision.",
                    json::message_json(v)
                )));
            }
            list.push(f);
        }
        Value::Number(Number::Int(i)) => int64_list(name, kind)?.push(*i),
        Value::Number(Number::UInt(_)) => {
            int64_list(name, kind)?;
            return Err(Error::invalid_argument(format!(
                "Feature: {name} has uint64_t element. Only int64_t is supported."
            )));
        }
    }
    Ok(())
}

/// `{"results": [[["<label>", <score>], ...], ...]}`: per example, its classes. Labels that are
/// not UTF-8 get U+FFFD in place of each invalid sequence (the output must stay valid JSON).
pub fn classify_response(result: &Classifications) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + result.len() * 16);
    out.extend_from_slice(b"{\"results\":[");
    for (i, classes) in result.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        for (k, Class { label, score }) in classes.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.push(b'[');
            json::write_bytes_lossy(&mut out, label);
            out.push(b',');
            json::write_f32(&mut out, *score);
            out.push(b']');
        }
        out.push(b']');
    }
    out.extend_from_slice(b"]}");
    out
}

/// `{"results": [<value>, ...]}`: one value per example.
pub fn regress_response(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + values.len() * 12);
    out.extend_from_slice(b"{\"results\":[");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_f32(&mut out, *v);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ExamplesRequest, Error> {
        parse_request(body.as_bytes())
    }

    fn err(body: &str) -> String {
        let e = parse(body).unwrap_err();
        assert_eq!(e.kind, aegis_core::ErrorKind::InvalidArgument, "{body}");
        e.message
    }

    fn examples(req: &ExamplesRequest) -> (&[Example], Option<&Example>) {
        match req.input.kind.as_ref().unwrap() {
            input::Kind::ExampleList(l) => (&l.examples, None),
            input::Kind::ExampleListWithContext(l) => (&l.examples, l.context.as_ref()),
        }
    }

    fn feature<'a>(e: &'a Example, key: &str) -> &'a Feature {
        &e.features.as_ref().unwrap().feature[key]
    }

    fn kind_of(body: &str) -> Option<feature::Kind> {
        let req = parse(&format!(r#"{{"examples": [{{"f": {body}}}]}}"#)).unwrap();
        feature(&examples(&req).0[0], "f").kind.clone()
    }

    #[test]
    fn tf_serving_doc_request() {
        let req =
            parse(r#"{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}"#).unwrap();
        assert_eq!(req.signature_name, "classify_x_to_y");
        let (list, context) = examples(&req);
        assert!(context.is_none());
        assert_eq!(list.len(), 1);
        assert_eq!(
            feature(&list[0], "x").kind,
            Some(feature::Kind::FloatList(FloatList { value: vec![2.0] }))
        );
        // Serialized, it is the very example TensorFlow wrote for the golden case.
        let bytes = crate::examples::serialized_examples(Some(&req.input));
        assert_eq!(
            bytes,
            [vec![
                10, 15, 10, 13, 10, 1, 120, 18, 8, 18, 6, 10, 4, 0, 0, 0, 64
            ]]
        );
    }

    #[test]
    fn feature_kinds_follow_the_json() {
        use feature::Kind::*;
        assert_eq!(
            kind_of("1.5"),
            Some(FloatList(super::FloatList { value: vec![1.5] }))
        );
        assert_eq!(
            kind_of("[1e3, -2.5, NaN]").map(|k| match k {
                FloatList(l) => l.value.len(),
                _ => 0,
            }),
            Some(3)
        );
        assert_eq!(
            kind_of("7"),
            Some(Int64List(super::Int64List { value: vec![7] }))
        );
        assert_eq!(
            kind_of("[-9223372036854775808, 9223372036854775807, true, false]"),
            Some(Int64List(super::Int64List {
                value: vec![i64::MIN, i64::MAX, 1, 0]
            }))
        );
        assert_eq!(
            kind_of(r#"["a", {"b64": "AAE="}]"#),
            Some(BytesList(super::BytesList {
                value: vec![b"a".to_vec(), vec![0, 1]]
            }))
        );
        // rapidjson reads an integer literal beyond u64 as a double.
        assert_eq!(
            kind_of("100000000000000000000"),
            Some(FloatList(super::FloatList { value: vec![1e20] }))
        );
        assert_eq!(kind_of("[]"), None);
    }

    #[test]
    fn feature_errors() {
        let e = |v: &str| err(&format!(r#"{{"examples": [{{"f": {v}}}]}}"#));
        assert_eq!(
            e("18446744073709551615"),
            "Feature: f has uint64_t element. Only int64_t is supported."
        );
        assert_eq!(
            e("[1.0, 2]"),
            "Unexpected element type in feature: f expecting type: float"
        );
        assert_eq!(
            e(r#"[1, "a"]"#),
            "Unexpected element type in feature: f expecting type: int64"
        );
        assert_eq!(
            e(r#"["a", true]"#),
            "Unexpected element type in feature: f expecting type: bytes"
        );
        assert_eq!(
            e(r#"[{"b64": "AA=="}, 1.0]"#),
            "Unexpected element type in feature: f expecting type: bytes"
        );
        assert_eq!(
            e("null"),
            "Feature: f has element with unexpected JSON type: Null"
        );
        assert_eq!(
            e("[1, null]"),
            "Feature: f has element with unexpected JSON type: Null"
        );
        assert_eq!(
            e("[[1]]"),
            "Feature: f has element with unexpected JSON type: Array"
        );
        assert_eq!(
            e(r#"{"a": 1}"#),
            "Feature: f has element with unexpected JSON type: Object"
        );
        assert_eq!(
            e(r#"{"b64": "AA==", "x": 1}"#),
            "Feature: f has element with unexpected JSON type: Object"
        );
        assert_eq!(e(r#"{"b64": "!!"}"#), "Unable to base64 decode");
        assert_eq!(
            e("1e39"),
            "Cannot convert JSON value: 1e39 to float without loss of precision."
        );
        assert!(kind_of("Infinity").is_some());
    }

    #[test]
    fn request_errors() {
        assert_eq!(err(""), "JSON Parse error: The document is empty");
        assert_eq!(err("[1]"), "JSON Value: [1] Is not object");
        assert_eq!(
            err(r#"{"signature_name": 1, "examples": [{}]}"#),
            r#"JSON Value: {"signature_name":1,"examples":[{}]} not formatted correctly. 'signature_name' key must be a string value."#
        );
        assert_eq!(
            err(r#"{"instances": [1]}"#),
            r#"JSON Value: {"instances":[1]} When method is classify, key 'examples' is expected and was not found"#
        );
        assert_eq!(
            err(r#"{"examples": {}}"#),
            r#"JSON Value: {"examples":{}} Expecting 'examples' value to be an list/array"#
        );
        assert_eq!(
            err(r#"{"examples": []}"#),
            r#"JSON Value: {"examples":[]} 'examples' value is an empty array"#
        );
        assert_eq!(
            err(r#"{"examples": [1]}"#),
            "Example must be JSON object but got JSON Number"
        );
        assert_eq!(
            err(r#"{"context": [], "examples": [{}]}"#),
            "Example must be JSON object but got JSON Array"
        );
        // The context is read before the examples are looked for.
        assert_eq!(
            err(r#"{"context": {"c": null}}"#),
            "Feature: c has element with unexpected JSON type: Null"
        );
    }

    #[test]
    fn context_and_duplicates() {
        let req =
            parse(r#"{"context": {"x2": 7.0}, "examples": [{"x": 3.0}, {"x": 1, "x": 2.0}]}"#)
                .unwrap();
        let (list, context) = examples(&req);
        assert_eq!(
            feature(context.unwrap(), "x2").kind,
            Some(feature::Kind::FloatList(FloatList { value: vec![7.0] }))
        );
        assert_eq!(list.len(), 2);
        // The last of a repeated key wins.
        assert_eq!(
            feature(&list[1], "x").kind,
            Some(feature::Kind::FloatList(FloatList { value: vec![2.0] }))
        );
        assert_eq!(
            parse(r#"{"signature_name": "", "examples": [{}]}"#)
                .unwrap()
                .signature_name,
            ""
        );
    }

    #[test]
    fn responses() {
        let r = vec![
            vec![Class {
                label: vec![],
                score: 3.0,
            }],
            vec![
                Class {
                    label: b"a\"b".to_vec(),
                    score: 0.1,
                },
                Class {
                    label: vec![0xff],
                    score: f32::NAN,
                },
            ],
        ];
        assert_eq!(
            String::from_utf8(classify_response(&r)).unwrap(),
            "{\"results\":[[[\"\",3.0]],[[\"a\\\"b\",0.1],[\"\u{FFFD}\",NaN]]]}"
        );
        assert_eq!(
            String::from_utf8(regress_response(&[3.0, 12.0, 0.25])).unwrap(),
            r#"{"results":[3.0,12.0,0.25]}"#
        );
    }
}
