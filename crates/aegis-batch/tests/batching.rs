//! Dynamic batching's queue mechanics, with a runtime stand-in (runtime behaviour is tested
//! against the real runtimes elsewhere) that records the batches it sees and computes y = 2x per
//! row for floats and s + s for strings (and fails a run that holds the value -1).
#![allow(clippy::unwrap_used)]

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aegis_batch::{BatchingConfig, Executor, ExecutorConfig};
use aegis_core::{DataType, ErrorKind, Result, Signature, Tensor, TensorSpec};
use aegis_runtime::{Model, Session};

/// What each run saw: the shape of its first input and its float values.
type Seen = Arc<Mutex<Vec<(Vec<usize>, Vec<f32>)>>>;

struct Doubler {
    signatures: Vec<Signature>,
    seen: Seen,
    delay: Duration,
}
struct DoublerSession {
    seen: Seen,
    delay: Duration,
}

impl Model for Doubler {
    fn signatures(&self) -> &[Signature] {
        &self.signatures
    }
    fn session(&self) -> Result<Box<dyn Session>> {
        Ok(Box::new(DoublerSession {
            seen: Arc::clone(&self.seen),
            delay: self.delay,
        }))
    }
}

impl Session for DoublerSession {
    fn run(
        &mut self,
        _: &Signature,
        inputs: &[(String, Tensor)],
        outputs: &[String],
    ) -> Result<Vec<Tensor>> {
        let x = &inputs[0].1;
        self.seen
            .lock()
            .unwrap()
            .push((x.shape().to_vec(), x.to_vec::<f32>().unwrap_or_default()));
        std::thread::sleep(self.delay);
        if x.to_vec::<f32>().unwrap_or_default().contains(&-1.0) {
            return Err(aegis_core::Error::invalid_argument("poisoned row"));
        }
        if outputs.iter().any(|o| o == "scalar") {
            return Ok(vec![Tensor::from_slice(vec![], &[1.0f32])?]);
        }
        let y = match x.dtype() {
            DataType::String => Tensor::from_strings(
                x.shape().to_vec(),
                x.strings()
                    .unwrap()
                    .iter()
                    .map(|s| [s.as_slice(), s.as_slice()].concat())
                    .collect(),
            )?,
            _ => {
                let v: Vec<f32> = x.to_vec::<f32>().unwrap().iter().map(|v| v * 2.0).collect();
                Tensor::from_slice(x.shape().to_vec(), &v)?
            }
        };
        Ok(vec![y])
    }
}

/// How long one run of the doubler takes in the tests that queue requests behind a run (`BUSY_MS`),
/// and how long they give the worker to take the first request before sending the others
/// (`PICKUP`). Generous on purpose: on a loaded machine a woken worker thread can take tens of
/// milliseconds to be scheduled, and what is sent during the run must be queued before it ends.
const BUSY_MS: u64 = 150;
const PICKUP: Duration = Duration::from_millis(40);

struct Fixture {
    ex: Arc<Executor>,
    seen: Seen,
}

fn start(delay_ms: u64, batching: BatchingConfig) -> Fixture {
    let spec = TensorSpec {
        tensor_name: "x:0".into(),
        dtype: DataType::Float32,
        shape: None,
    };
    let seen = Seen::default();
    let model = Arc::new(Doubler {
        signatures: vec![Signature {
            name: "serving_default".into(),
            method_name: String::new(),
            inputs: vec![("x".into(), spec.clone())],
            outputs: vec![("y".into(), spec)],
        }],
        seen: Arc::clone(&seen),
        delay: Duration::from_millis(delay_ms),
    });
    let ex = Executor::start(
        "m",
        model,
        ExecutorConfig {
            workers: NonZeroUsize::MIN,
            queue_capacity: NonZeroUsize::MIN,
            batching: Some(batching),
            ..Default::default()
        },
    )
    .unwrap();
    Fixture {
        ex: Arc::new(ex),
        seen,
    }
}

/// A `[rows, cols]` input whose values start at `base`.
fn input(rows: usize, cols: usize, base: f32) -> Vec<(String, Tensor)> {
    let v: Vec<f32> = (0..rows * cols).map(|i| base + i as f32).collect();
    vec![(
        "x".to_string(),
        Tensor::from_slice(vec![rows, cols], &v).unwrap(),
    )]
}

fn spawn_run(
    ex: &Arc<Executor>,
    inputs: Vec<(String, Tensor)>,
) -> tokio::task::JoinHandle<Result<Vec<Tensor>>> {
    let ex = Arc::clone(ex);
    tokio::spawn(async move { ex.run("serving_default", inputs, vec!["y".into()]).await })
}

fn doubled(inputs: &[(String, Tensor)]) -> Vec<f32> {
    inputs[0]
        .1
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v * 2.0)
        .collect()
}

fn batch_sizes(seen: &Seen) -> Vec<usize> {
    seen.lock().unwrap().iter().map(|(s, _)| s[0]).collect()
}

#[tokio::test]
async fn concurrent_requests_are_merged_and_outputs_split_exactly() {
    let f = start(30, BatchingConfig::default());
    let inputs: Vec<_> = (0..8)
        .map(|i| input(i % 3 + 1, 2, 100.0 * i as f32))
        .collect();
    let handles: Vec<_> = inputs.iter().map(|x| spawn_run(&f.ex, x.clone())).collect();
    for (h, x) in handles.into_iter().zip(&inputs) {
        let y = h.await.unwrap().unwrap();
        assert_eq!(y.len(), 1);
        assert_eq!(y[0].shape(), x[0].1.shape());
        assert_eq!(y[0].to_vec::<f32>().unwrap(), doubled(x));
    }
    let sizes = batch_sizes(&f.seen);
    let total: usize = inputs.iter().map(|x| x[0].1.shape()[0]).sum();
    assert_eq!(sizes.iter().sum::<usize>(), total, "{sizes:?}");
    assert!(sizes.len() < inputs.len(), "nothing was merged: {sizes:?}");
}

#[tokio::test]
async fn batches_are_padded_to_an_allowed_size_and_padding_is_dropped() {
    let f = start(
        0,
        BatchingConfig {
            max_batch_size: 8,
            allowed_batch_sizes: vec![2, 4, 8],
            ..Default::default()
        },
    );
    let x = input(3, 2, 1.0);
    let y =
        f.ex.run("serving_default", x.clone(), vec!["y".into()])
            .await
            .unwrap();
    assert_eq!(y[0].shape(), &[3, 2]);
    assert_eq!(y[0].to_vec::<f32>().unwrap(), doubled(&x));
    let seen = f.seen.lock().unwrap().clone();
    assert_eq!(seen[0].0, vec![4, 2]);
    // Padded by repeating the first row of the last request, as TF Serving does.
    assert_eq!(&seen[0].1[6..], &[1.0, 2.0]);
    drop(seen);

    let x = input(1, 2, 7.0);
    let y =
        f.ex.run("serving_default", x.clone(), vec!["y".into()])
            .await
            .unwrap();
    assert_eq!(y[0].shape(), &[1, 2]);
    assert_eq!(y[0].to_vec::<f32>().unwrap(), doubled(&x));
    assert_eq!(batch_sizes(&f.seen), vec![4, 2]);

    // An empty request is not padded (there is no row to repeat).
    let y =
        f.ex.run("serving_default", input(0, 2, 0.0), vec!["y".into()])
            .await
            .unwrap();
    assert_eq!(y[0].shape(), &[0, 2]);
}

#[tokio::test]
async fn a_request_larger_than_a_batch_is_invalid_argument() {
    let f = start(
        0,
        BatchingConfig {
            max_batch_size: 4,
            ..Default::default()
        },
    );
    let err =
        f.ex.run("serving_default", input(5, 1, 0.0), vec!["y".into()])
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert_eq!(
        err.message,
        "Task size 5 is larger than maximum input batch size 4"
    );
    assert!(f.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_full_queue_is_unavailable() {
    let f = start(
        BUSY_MS,
        BatchingConfig {
            max_batch_size: 2,
            max_enqueued_batches: 1,
            ..Default::default()
        },
    );
    let a = spawn_run(&f.ex, input(1, 1, 0.0));
    tokio::time::sleep(PICKUP).await; // a is running
    let b = spawn_run(&f.ex, input(2, 1, 0.0));
    tokio::time::sleep(Duration::from_millis(10)).await; // b fills the queue (2 rows)
    let err =
        f.ex.run("serving_default", input(1, 1, 0.0), vec!["y".into()])
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert_eq!(
        err.message,
        "The batch scheduling queue to which this task was submitted is full"
    );
    assert!(a.await.unwrap().is_ok() && b.await.unwrap().is_ok());
}

#[tokio::test]
async fn requests_with_different_non_batch_dims_are_not_merged() {
    let f = start(BUSY_MS, BatchingConfig::default());
    let first = spawn_run(&f.ex, input(1, 2, 0.0));
    tokio::time::sleep(PICKUP).await; // first is running
    let xs = [input(1, 2, 10.0), input(1, 3, 20.0), input(1, 2, 30.0)];
    let handles: Vec<_> = xs.iter().map(|x| spawn_run(&f.ex, x.clone())).collect();
    first.await.unwrap().unwrap();
    for (h, x) in handles.into_iter().zip(&xs) {
        let y = h.await.unwrap().unwrap();
        assert_eq!(y[0].shape(), x[0].1.shape());
        assert_eq!(y[0].to_vec::<f32>().unwrap(), doubled(x));
    }
    let mut shapes: Vec<Vec<usize>> = f.seen.lock().unwrap().iter().map(|s| s.0.clone()).collect();
    shapes.sort();
    assert_eq!(shapes, vec![vec![1, 2], vec![1, 3], vec![2, 2]]);
}

#[tokio::test]
async fn string_tensors_are_merged_and_split() {
    let f = start(30, BatchingConfig::default());
    let xs: Vec<Vec<(String, Tensor)>> = (0..6)
        .map(|i| {
            let rows = i % 2 + 1;
            let s = (0..rows * 2)
                .map(|j| format!("r{i}-{j}").into_bytes())
                .collect();
            vec![(
                "x".to_string(),
                Tensor::from_strings(vec![rows, 2], s).unwrap(),
            )]
        })
        .collect();
    let handles: Vec<_> = xs.iter().map(|x| spawn_run(&f.ex, x.clone())).collect();
    for (h, x) in handles.into_iter().zip(&xs) {
        let y = h.await.unwrap().unwrap();
        assert_eq!(y[0].shape(), x[0].1.shape());
        let want: Vec<Vec<u8>> = x[0]
            .1
            .strings()
            .unwrap()
            .iter()
            .map(|s| [s.as_slice(), s.as_slice()].concat())
            .collect();
        assert_eq!(y[0].strings().unwrap(), want.as_slice());
    }
    let sizes = batch_sizes(&f.seen);
    assert_eq!(sizes.iter().sum::<usize>(), 9);
    assert!(sizes.len() < xs.len(), "nothing was merged: {sizes:?}");
}

#[tokio::test]
async fn requests_whose_caller_left_are_skipped() {
    let f = start(BUSY_MS, BatchingConfig::default());
    let first = spawn_run(&f.ex, input(1, 1, 1.0));
    tokio::time::sleep(PICKUP).await; // first is running
    let gone = tokio::time::timeout(
        Duration::from_millis(5),
        f.ex.run("serving_default", input(1, 1, 666.0), vec!["y".into()]),
    )
    .await;
    assert!(gone.is_err());
    let y =
        f.ex.run("serving_default", input(1, 1, 3.0), vec!["y".into()])
            .await
            .unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![6.0]);
    first.await.unwrap().unwrap();
    let seen = f.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|(_, v)| !v.contains(&666.0)), "{seen:?}");
}

#[tokio::test]
async fn unbatched_outputs_fail_every_request_of_the_batch() {
    let f = start(0, BatchingConfig::default());
    let err =
        f.ex.run("serving_default", input(2, 1, 0.0), vec!["scalar".into()])
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains("0 dimensions"), "{}", err.message);
}

#[tokio::test]
async fn requests_that_cannot_be_batched_run_alone() {
    let f = start(0, BatchingConfig::default());
    // Rank 0: no batch dimension; still served.
    let x = vec![(
        "x".to_string(),
        Tensor::from_slice(vec![], &[4.0f32]).unwrap(),
    )];
    let y =
        f.ex.run("serving_default", x, vec!["y".into()])
            .await
            .unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![8.0]);
}

#[tokio::test]
async fn a_timeout_waits_for_more_requests() {
    let f = start(
        0,
        BatchingConfig {
            max_batch_size: 4,
            batch_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let xs: Vec<_> = (0..4).map(|i| input(1, 1, i as f32)).collect();
    let mut handles = Vec::new();
    for x in &xs {
        handles.push(spawn_run(&f.ex, x.clone()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (h, x) in handles.into_iter().zip(&xs) {
        assert_eq!(
            h.await.unwrap().unwrap()[0].to_vec::<f32>().unwrap(),
            doubled(x)
        );
    }
    // Full at 4 rows, so run before the timeout, as one batch.
    assert_eq!(batch_sizes(&f.seen), vec![4]);
}

#[test]
fn parameters_are_validated_like_tf_serving() {
    let err = BatchingConfig {
        max_batch_size: 8,
        allowed_batch_sizes: vec![2, 4],
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        err.message,
        "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"
    );
    assert!(BatchingConfig {
        max_batch_size: 8,
        allowed_batch_sizes: vec![4, 2, 8],
        ..Default::default()
    }
    .validate()
    .is_err());
    assert!(BatchingConfig::default().validate().is_ok());
    let d = BatchingConfig::default();
    assert_eq!(
        (d.max_batch_size, d.batch_timeout, d.max_enqueued_batches),
        (1000, Duration::ZERO, 10)
    );
}

/// Splitting config: requests of up to 10 rows, session runs of at most 4, padded to 2 or 4.
fn splitting(delay_ms: u64) -> Fixture {
    start(
        delay_ms,
        BatchingConfig {
            max_batch_size: 10,
            enable_large_batch_splitting: true,
            max_execution_batch_size: Some(4),
            allowed_batch_sizes: vec![2, 4],
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn a_large_request_is_split_across_runs_and_reassembled_in_order() {
    let f = splitting(0);
    let x = input(7, 2, 1.0);
    let y =
        f.ex.run("serving_default", x.clone(), vec!["y".into()])
            .await
            .unwrap();
    assert_eq!(y[0].shape(), &[7, 2]);
    assert_eq!(y[0].to_vec::<f32>().unwrap(), doubled(&x));
    let seen = f.seen.lock().unwrap().clone();
    // 4 rows, then the last 3 padded to 4 with the first row of that piece (row 4: 9, 10).
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, vec![4, 2]);
    assert_eq!(seen[0].1, (1..=8).map(|v| v as f32).collect::<Vec<_>>());
    assert_eq!(seen[1].0, vec![4, 2]);
    assert_eq!(&seen[1].1[6..], &[9.0, 10.0]);

    // Still capped at max_batch_size per request.
    let err =
        f.ex.run("serving_default", input(11, 1, 0.0), vec!["y".into()])
            .await
            .unwrap_err();
    assert_eq!(
        err.message,
        "Task size 11 is larger than maximum input batch size 10"
    );
}

#[tokio::test]
async fn a_request_that_does_not_fit_fills_the_batch_and_the_rest_runs_next() {
    let f = splitting(BUSY_MS);
    let first = spawn_run(&f.ex, input(1, 1, 0.0));
    tokio::time::sleep(PICKUP).await; // first is running
    let a = input(3, 1, 10.0);
    let b = input(3, 1, 20.0);
    let ha = spawn_run(&f.ex, a.clone());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let hb = spawn_run(&f.ex, b.clone());
    first.await.unwrap().unwrap();
    assert_eq!(
        ha.await.unwrap().unwrap()[0].to_vec::<f32>().unwrap(),
        doubled(&a)
    );
    assert_eq!(
        hb.await.unwrap().unwrap()[0].to_vec::<f32>().unwrap(),
        doubled(&b)
    );
    let seen = f.seen.lock().unwrap().clone();
    let values: Vec<Vec<f32>> = seen.iter().map(|s| s.1.clone()).collect();
    // [first, padded to 2], [a, b's first row], [b's other two rows].
    assert_eq!(
        values,
        vec![
            vec![0.0, 0.0],
            vec![10.0, 11.0, 12.0, 20.0],
            vec![21.0, 22.0]
        ]
    );
}

#[tokio::test]
async fn an_error_in_any_piece_fails_the_request_and_drops_its_other_pieces() {
    let f = start(
        0,
        BatchingConfig {
            max_batch_size: 6,
            enable_large_batch_splitting: true,
            max_execution_batch_size: Some(2),
            ..Default::default()
        },
    );
    let x = vec![(
        "x".to_string(),
        Tensor::from_slice(vec![6, 1], &[1.0f32, 2.0, 3.0, -1.0, 5.0, 6.0]).unwrap(),
    )];
    let err =
        f.ex.run("serving_default", x, vec!["y".into()])
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert_eq!(err.message, "poisoned row");
    // The third piece was still queued when the second failed: it never ran.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(batch_sizes(&f.seen), vec![2, 2]);
    // The executor goes on serving.
    let y =
        f.ex.run("serving_default", input(3, 1, 1.0), vec!["y".into()])
            .await
            .unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0]);
}

#[tokio::test]
async fn with_splitting_the_queue_holds_max_enqueued_batches_execution_batches() {
    let f = start(
        BUSY_MS,
        BatchingConfig {
            max_batch_size: 10,
            enable_large_batch_splitting: true,
            max_execution_batch_size: Some(2),
            max_enqueued_batches: 2,
            ..Default::default()
        },
    );
    let running = spawn_run(&f.ex, input(1, 1, 0.0));
    tokio::time::sleep(PICKUP).await;
    let err =
        f.ex.run("serving_default", input(5, 1, 0.0), vec!["y".into()])
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert_eq!(
        err.message,
        "The batch scheduling queue to which this task was submitted is full"
    );
    let y =
        f.ex.run("serving_default", input(4, 1, 1.0), vec!["y".into()])
            .await
            .unwrap();
    assert_eq!(y[0].shape(), &[4, 1]);
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn variable_length_inputs_are_padded_with_the_first_element_when_enabled() {
    let f = start(
        BUSY_MS,
        BatchingConfig {
            pad_variable_length_inputs: true,
            ..Default::default()
        },
    );
    let first = spawn_run(&f.ex, input(1, 1, 0.0));
    tokio::time::sleep(PICKUP).await; // first is running
    let short = input(1, 2, 10.0);
    let long = input(2, 3, 20.0);
    let hs = spawn_run(&f.ex, short);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let hl = spawn_run(&f.ex, long.clone());
    first.await.unwrap().unwrap();
    // As in TF Serving, the output keeps the padded non-batch dims.
    let ys = hs.await.unwrap().unwrap();
    assert_eq!(ys[0].shape(), &[1, 3]);
    assert_eq!(ys[0].to_vec::<f32>().unwrap(), vec![20.0, 22.0, 20.0]);
    let yl = hl.await.unwrap().unwrap();
    assert_eq!(yl[0].shape(), &[2, 3]);
    assert_eq!(yl[0].to_vec::<f32>().unwrap(), doubled(&long));
    let seen = f.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].0, vec![3, 3]);
    assert_eq!(&seen[1].1[..3], &[10.0, 11.0, 10.0]);
}

#[tokio::test]
async fn different_ranks_or_dtypes_never_share_a_batch_even_with_padding() {
    let f = start(
        BUSY_MS,
        BatchingConfig {
            pad_variable_length_inputs: true,
            ..Default::default()
        },
    );
    let first = spawn_run(&f.ex, input(1, 1, 0.0));
    tokio::time::sleep(PICKUP).await;
    let rank3 = vec![(
        "x".to_string(),
        Tensor::from_slice(vec![1, 1, 2], &[5.0f32, 6.0]).unwrap(),
    )];
    let strings = vec![(
        "x".to_string(),
        Tensor::from_strings(vec![1, 2], vec![b"a".to_vec(), b"b".to_vec()]).unwrap(),
    )];
    let h1 = spawn_run(&f.ex, input(1, 2, 1.0));
    let h2 = spawn_run(&f.ex, rank3.clone());
    let h3 = spawn_run(&f.ex, strings);
    first.await.unwrap().unwrap();
    assert_eq!(h1.await.unwrap().unwrap()[0].shape(), &[1, 2]);
    let y2 = h2.await.unwrap().unwrap();
    assert_eq!(y2[0].shape(), &[1, 1, 2]);
    assert_eq!(y2[0].to_vec::<f32>().unwrap(), doubled(&rank3));
    h3.await.unwrap().unwrap();
    assert_eq!(batch_sizes(&f.seen), vec![1, 1, 1, 1]);
}

#[test]
fn splitting_parameters_are_validated_like_tf_serving() {
    let err = BatchingConfig {
        max_batch_size: 64,
        enable_large_batch_splitting: true,
        max_execution_batch_size: Some(16),
        allowed_batch_sizes: vec![8, 64],
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        err.message,
        "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; last \
         entry was 64; expected 16"
    );
    let ok = BatchingConfig {
        max_batch_size: 64,
        enable_large_batch_splitting: true,
        max_execution_batch_size: Some(16),
        allowed_batch_sizes: vec![8, 16],
        ..Default::default()
    };
    assert!(ok.validate().is_ok());
    assert_eq!(ok.execution_batch_size(), 16);
    // Without splitting, max_execution_batch_size is ignored, as in TF Serving.
    let ignored = BatchingConfig {
        max_batch_size: 8,
        max_execution_batch_size: Some(2),
        ..Default::default()
    };
    assert!(ignored.validate().is_ok());
    assert_eq!(ignored.execution_batch_size(), 8);
}
