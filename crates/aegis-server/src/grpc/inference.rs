//! `PredictionService.Classify`, `Regress` and `MultiInference`: the request's `Input` becomes
//! serialized examples ([`crate::examples`]), the model layer runs them with TF Serving's rules
//! (`aegis_models`'s classify / regress / multi-inference), and the results come back with the
//! `model_spec` TF Serving echoes (name as requested, signature used, version served).

use aegis_core::Error;
use aegis_models::{Classifications, InferenceOutput, InferenceTask, ModelManager};
use aegis_proto::tensorflow::serving::{
    inference_result, Class, ClassificationRequest, ClassificationResponse, ClassificationResult,
    InferenceResult, ModelSpec, MultiInferenceRequest, MultiInferenceResponse, Regression,
    RegressionRequest, RegressionResponse, RegressionResult,
};

pub(super) async fn classify(
    manager: &ModelManager,
    req: ClassificationRequest,
) -> Result<ClassificationResponse, Error> {
    let spec = req.model_spec.as_ref();
    let served = super::resolve(manager, spec)?;
    let signature = super::signature_name(spec);
    crate::metrics::note_signature_of(&served, signature);
    let examples = crate::examples::serialized_examples(req.input.as_ref());
    let result = served.classify(signature, examples).await?;
    Ok(ClassificationResponse {
        model_spec: Some(super::response_spec(
            requested_name(spec),
            signature,
            &served,
        )),
        result: Some(classification_result(result)),
    })
}

pub(super) async fn regress(
    manager: &ModelManager,
    req: RegressionRequest,
) -> Result<RegressionResponse, Error> {
    let spec = req.model_spec.as_ref();
    let served = super::resolve(manager, spec)?;
    let signature = super::signature_name(spec);
    crate::metrics::note_signature_of(&served, signature);
    let examples = crate::examples::serialized_examples(req.input.as_ref());
    let values = served.regress(signature, examples).await?;
    Ok(RegressionResponse {
        model_spec: Some(super::response_spec(
            requested_name(spec),
            signature,
            &served,
        )),
        result: Some(regression_result(values)),
    })
}

pub(super) async fn multi_inference(
    manager: &ModelManager,
    req: MultiInferenceRequest,
) -> Result<MultiInferenceResponse, Error> {
    // TF Serving resolves the model from the first task's spec, an empty one when there is none
    // (so no task at all is `ModelSpec has no name specified.`).
    let empty = ModelSpec::default();
    let first = req
        .tasks
        .first()
        .and_then(|t| t.model_spec.as_ref())
        .unwrap_or(&empty);
    let served = super::resolve(manager, Some(first))?;
    let tasks: Vec<InferenceTask> = req
        .tasks
        .iter()
        .map(|t| {
            let spec = t.model_spec.as_ref().unwrap_or(&empty);
            InferenceTask {
                model_name: spec.name.clone(),
                signature_name: spec.signature_name.clone(),
                method_name: t.method_name.clone(),
            }
        })
        .collect();
    let examples = crate::examples::serialized_examples(req.input.as_ref());
    let outputs = served.multi_inference(&tasks, examples).await?;
    let results = req
        .tasks
        .iter()
        .zip(outputs)
        .map(|(task, output)| {
            let spec = task.model_spec.as_ref();
            InferenceResult {
                model_spec: Some(super::response_spec(
                    requested_name(spec),
                    super::signature_name(spec),
                    &served,
                )),
                result: Some(match output {
                    InferenceOutput::Classification(c) => {
                        inference_result::Result::ClassificationResult(classification_result(c))
                    }
                    InferenceOutput::Regression(v) => {
                        inference_result::Result::RegressionResult(regression_result(v))
                    }
                }),
            }
        })
        .collect();
    Ok(MultiInferenceResponse { results })
}

/// The model name a response echoes: the one the client asked for.
fn requested_name(spec: Option<&ModelSpec>) -> &str {
    spec.map_or("", |s| s.name.as_str())
}

fn classification_result(result: Classifications) -> ClassificationResult {
    ClassificationResult {
        classifications: result
            .into_iter()
            .map(
                |classes| aegis_proto::tensorflow::serving::Classifications {
                    classes: classes
                        .into_iter()
                        .map(|c| Class {
                            // A proto `string` must be UTF-8; TensorFlow strings are bytes.
                            label: String::from_utf8(c.label).unwrap_or_else(|e| {
                                String::from_utf8_lossy(e.as_bytes()).into_owned()
                            }),
                            score: c.score,
                        })
                        .collect(),
                },
            )
            .collect(),
    }
}

fn regression_result(values: Vec<f32>) -> RegressionResult {
    RegressionResult {
        regressions: values
            .into_iter()
            .map(|value| Regression { value })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_convert_in_order() {
        let c = classification_result(vec![
            vec![aegis_models::Class {
                label: vec![],
                score: 3.0,
            }],
            vec![aegis_models::Class {
                label: vec![b'a', 0xff],
                score: 0.5,
            }],
        ]);
        assert_eq!(c.classifications.len(), 2);
        assert_eq!(c.classifications[0].classes[0].label, "");
        assert_eq!(c.classifications[0].classes[0].score, 3.0);
        assert_eq!(c.classifications[1].classes[0].label, "a\u{FFFD}");
        let r = regression_result(vec![3.0, 7.0]);
        assert_eq!(
            r.regressions.iter().map(|r| r.value).collect::<Vec<_>>(),
            [3.0, 7.0]
        );
    }
}
