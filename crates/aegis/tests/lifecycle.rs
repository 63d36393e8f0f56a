//! Model lifecycle against the real binary: version policies, labels, config reload, failed and
//! half-written versions, warmup, readiness, and version churn under load with zero failures.
//!
//! Versions are copies of the `versioned` fixture: its version 1 computes `x + 1` and version 2
//! `x * 10` (TensorFlow's values in fixtures/golden/versioned.json), so an answer tells which
//! content served it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fixture_model, Server};
use serde_json::Value;

const FAST: [&str; 2] = [
    "--file_system_poll_wait_seconds=0.1",
    "--aegis_version_settle_seconds=0.2",
];

/// A scratch directory removed on drop.
struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "aegis-lifecycle-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Adds version `version` to `base` with the content of fixture version `content` (1 or 2),
/// staged under a non-numeric name and renamed in, as writers should.
fn add_version(base: &Path, version: i64, content: i64) {
    let staging = base.join(format!(".staging-{version}"));
    copy_tree(
        &fixture_model("versioned").join(content.to_string()),
        &staging,
    );
    std::fs::rename(&staging, base.join(version.to_string())).expect("rename");
}

fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

fn model_entry(name: &str, base: &Path, extra: &str) -> String {
    format!(
        "config {{ name: '{name}' base_path: '{}' model_platform: 'tensorflow' {extra} }}\n",
        base.display()
    )
}

fn config_text(entries: &[String]) -> String {
    format!("model_config_list {{\n{}}}\n", entries.concat())
}

fn start_config(config: &Path, extra: &[&str]) -> Server {
    let mut args = vec![format!("--model_config_file={}", config.display())];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_ready(&args)
}

/// Which fixture content answered: 1 (x + 1) or 2 (x * 10), from TensorFlow's golden values.
fn content_of(predictions: &Value) -> Option<i64> {
    let got: Vec<f64> = predictions
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    common::versioned_content(&got)
}

const BODY: &str = r#"{"instances": [1.0, 2.0, 3.5]}"#;

fn answer(server: &Server, path: &str) -> Result<i64, String> {
    let resp = server.post(path, BODY);
    if resp.status != 200 {
        return Err(format!("{path}: {} {}", resp.status, resp.text()));
    }
    content_of(&resp.json()["predictions"])
        .ok_or_else(|| format!("{path}: unexpected {}", resp.text()))
}

fn states(server: &Server, model: &str) -> Vec<(i64, String)> {
    let resp = server.get(&format!("/v1/models/{model}"));
    if resp.status != 200 {
        return Vec::new();
    }
    resp.json()["model_version_status"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    (
                        v["version"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(-1),
                        v["state"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn available(server: &Server, model: &str) -> Vec<i64> {
    let mut v: Vec<i64> = states(server, model)
        .into_iter()
        .filter(|(_, s)| s == "AVAILABLE")
        .map(|(v, _)| v)
        .collect();
    v.sort();
    v
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn version_policies_latest_all_specific() {
    let scratch = Scratch::new("policies");
    let base = scratch.path().join("m");
    std::fs::create_dir_all(&base).expect("mkdir");
    add_version(&base, 1, 1);
    add_version(&base, 2, 2);
    add_version(&base, 3, 1);
    let config = scratch.path().join("models.config");
    write_config(
        &config,
        &config_text(&[
            model_entry(
                "latest2",
                &base,
                "model_version_policy { latest { num_versions: 2 } }",
            ),
            model_entry("all", &base, "model_version_policy { all {} }"),
            model_entry(
                "specific",
                &base,
                "model_version_policy { specific { versions: 1 versions: 3 } }",
            ),
            model_entry("default", &base, ""),
        ]),
    );
    let server = start_config(&config, &FAST);
    assert_eq!(available(&server, "latest2"), vec![2, 3]);
    assert_eq!(available(&server, "all"), vec![1, 2, 3]);
    assert_eq!(available(&server, "specific"), vec![1, 3]);
    assert_eq!(available(&server, "default"), vec![3]);
    assert_eq!(answer(&server, "/v1/models/all/versions/2:predict"), Ok(2));
    assert_eq!(
        answer(&server, "/v1/models/specific/versions/1:predict"),
        Ok(1)
    );
    assert_eq!(answer(&server, "/v1/models/latest2:predict"), Ok(1)); // version 3 holds content 1
    let resp = server.post("/v1/models/specific/versions/2:predict", BODY);
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.error(),
        "Servable not found for request: Specific(specific, 2)"
    );

    // The listing shows every model and its versions.
    let list = server.get("/v1/models").json();
    let names: Vec<&str> = list["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, vec!["all", "default", "latest2", "specific"]);
}

#[test]
fn labels_follow_tf_serving_rules() {
    let scratch = Scratch::new("labels");
    let base = scratch.path().join("m");
    std::fs::create_dir_all(&base).expect("mkdir");
    add_version(&base, 1, 1);
    add_version(&base, 2, 2);
    let config = scratch.path().join("models.config");
    let with_labels = |stable: i64, canary: i64| {
        config_text(&[model_entry(
            "m",
            &base,
            &format!(
                "model_version_policy {{ all {{}} }} version_labels {{ key: 'stable' value: {stable} }} \
                 version_labels {{ key: 'canary' value: {canary} }}"
            ),
        )])
    };
    write_config(&config, &with_labels(1, 2));

    // At start-up no version is available yet, so labels need the flag, as in TF Serving.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aegis"))
        .arg("serve")
        .arg(format!("--rest_api_port={}", common::free_port()))
        .arg("--port=0")
        .arg(format!("--model_config_file={}", config.display()))
        .args(FAST)
        .output()
        .expect("run aegis");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Request to assign label to version")
            && stderr.contains("of model m, which is not currently available for inference"),
        "{stderr}"
    );

    let mut args = vec![
        "--allow_version_labels_for_unavailable_models",
        "--model_config_file_poll_wait_seconds=0.2",
    ];
    args.extend(FAST);
    let server = start_config(&config, &args);
    assert_eq!(answer(&server, "/v1/models/m/labels/stable:predict"), Ok(1));
    assert_eq!(answer(&server, "/v1/models/m/labels/canary:predict"), Ok(2));
    let resp = server.post("/v1/models/m/labels/beta:predict", BODY);
    assert_eq!(
        (resp.status, resp.error()),
        (400, "Unrecognized servable version label: beta".to_string())
    );

    // Moving a label to an available version takes effect on the next config poll.
    write_config(&config, &with_labels(2, 2));
    wait_for(
        "stable to move to version 2",
        Duration::from_secs(20),
        || answer(&server, "/v1/models/m/labels/stable:predict") == Ok(2),
    );
    // Moving it to a version that is not available is refused; the old labels stay.
    write_config(&config, &with_labels(2, 7));
    wait_for("the refusal in the log", Duration::from_secs(20), || {
        server
            .log()
            .contains("Request to assign label to version 7 of model m")
    });
    assert_eq!(answer(&server, "/v1/models/m/labels/canary:predict"), Ok(2));
}

#[test]
fn config_reload_adds_and_removes_models() {
    let scratch = Scratch::new("reload");
    let base1 = scratch.path().join("one");
    let base2 = scratch.path().join("two");
    for (b, content) in [(&base1, 1), (&base2, 2)] {
        std::fs::create_dir_all(b).expect("mkdir");
        add_version(b, 1, content);
    }
    let config = scratch.path().join("models.config");
    write_config(&config, &config_text(&[model_entry("one", &base1, "")]));
    let mut args = vec!["--model_config_file_poll_wait_seconds=0.2"];
    args.extend(FAST);
    let server = start_config(&config, &args);
    assert_eq!(answer(&server, "/v1/models/one:predict"), Ok(1));

    write_config(
        &config,
        &config_text(&[
            model_entry("one", &base1, ""),
            model_entry("two", &base2, ""),
        ]),
    );
    wait_for("model two", Duration::from_secs(20), || {
        answer(&server, "/v1/models/two:predict") == Ok(2)
    });

    write_config(&config, &config_text(&[model_entry("two", &base2, "")]));
    wait_for("model one to go", Duration::from_secs(20), || {
        server.post("/v1/models/one:predict", BODY).status == 404
    });
    assert_eq!(answer(&server, "/v1/models/two:predict"), Ok(2));
    let list = server.get("/v1/models").json();
    assert_eq!(list["models"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_failed_load_keeps_the_old_version_serving() {
    let scratch = Scratch::new("failed");
    let base = scratch.path().join("m");
    std::fs::create_dir_all(&base).expect("mkdir");
    add_version(&base, 1, 1);
    let base_s = base.display().to_string();
    let mut args = vec![
        "--model_name=m".to_string(),
        format!("--model_base_path={base_s}"),
    ];
    args.extend(FAST.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_ready(&args);
    assert_eq!(answer(&server, "/v1/models/m:predict"), Ok(1));

    // Version 2 is not a SavedModel TensorFlow can read.
    let staging = base.join(".staging-2");
    std::fs::create_dir_all(&staging).expect("mkdir");
    std::fs::write(staging.join("saved_model.pb"), b"not a protobuf").expect("write");
    std::fs::rename(&staging, base.join("2")).expect("rename");
    wait_for("version 2 to fail", Duration::from_secs(20), || {
        states(&server, "m").contains(&(2, "END".into()))
    });
    let status = server.get("/v1/models/m/versions/2").json();
    let err = &status["model_version_status"][0]["status"];
    assert_ne!(err["error_code"], "OK");
    assert!(
        !err["error_message"].as_str().unwrap_or("").is_empty(),
        "{status}"
    );
    assert_eq!(available(&server, "m"), vec![1]);
    assert_eq!(answer(&server, "/v1/models/m:predict"), Ok(1));

    // Replacing the broken files earns a new attempt, which succeeds; then version 1 retires.
    std::fs::remove_dir_all(base.join("2")).expect("rm");
    add_version(&base, 2, 2);
    wait_for("version 2 to serve", Duration::from_secs(20), || {
        answer(&server, "/v1/models/m:predict") == Ok(2)
    });
    wait_for("version 1 to end", Duration::from_secs(20), || {
        states(&server, "m").contains(&(1, "END".into()))
    });
}

#[test]
fn a_half_written_version_is_not_loaded() {
    let scratch = Scratch::new("halfwritten");
    let base = scratch.path().join("m");
    std::fs::create_dir_all(&base).expect("mkdir");
    add_version(&base, 1, 1);
    let base_s = base.display().to_string();
    let args = [
        "--model_name=m".to_string(),
        format!("--model_base_path={base_s}"),
        "--file_system_poll_wait_seconds=0.1".to_string(),
        "--aegis_version_settle_seconds=1".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_ready(&args);

    // Written in place (no rename), a file at a time, slower than the poll.
    let v2 = base.join("2");
    let src = fixture_model("versioned").join("2");
    std::fs::create_dir_all(v2.join("variables")).expect("mkdir");
    std::fs::copy(src.join("saved_model.pb"), v2.join("saved_model.pb")).expect("copy");
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(300));
        // Still being written: never loaded, never failed.
        assert_eq!(states(&server, "m"), vec![(1, "AVAILABLE".to_string())]);
        std::fs::write(v2.join("upload-progress"), format!("{:?}", Instant::now())).expect("touch");
    }
    for name in ["variables.index", "variables.data-00000-of-00001"] {
        std::fs::copy(
            src.join("variables").join(name),
            v2.join("variables").join(name),
        )
        .expect("copy");
    }
    std::fs::copy(src.join("fingerprint.pb"), v2.join("fingerprint.pb")).expect("copy");
    wait_for("version 2 once written", Duration::from_secs(20), || {
        answer(&server, "/v1/models/m:predict") == Ok(2)
    });
    assert!(!server.log().contains("failed to load"), "{}", server.log());
}

#[test]
fn warmup_runs_before_the_version_is_available() {
    let scratch = Scratch::new("warmup");
    let base = scratch.path().join("half_plus_two");
    copy_tree(&fixture_model("half_plus_two"), &base);
    let extra = base.join("00000123/assets.extra");
    std::fs::create_dir_all(&extra).expect("mkdir");
    let warmup = common::repo_root().join("fixtures/warmup/tf_serving_warmup_requests");
    std::fs::copy(&warmup, extra.join("tf_serving_warmup_requests")).expect("copy");
    let server = Server::start("half_plus_two", &base, &FAST);
    let log = server.log();
    assert!(
        log.contains("warmup done") && log.contains("records=3"),
        "{log}"
    );

    // A corrupt warmup file fails the load, with the reason.
    let bytes = std::fs::read(&warmup).expect("read");
    std::fs::write(
        extra.join("tf_serving_warmup_requests"),
        &bytes[..bytes.len() - 3],
    )
    .expect("write");
    let args = [
        "serve".to_string(),
        format!("--rest_api_port={}", common::free_port()),
        "--port=0".to_string(),
        "--model_name=half_plus_two".to_string(),
        format!("--model_base_path={}", base.display()),
    ];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args(&args)
        .args(FAST)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Please verify your warmup data is in TFRecord format"),
        "{stderr}"
    );
}

#[test]
fn readiness_is_false_while_loading_and_true_after() {
    let scratch = Scratch::new("ready");
    let base = scratch.path().join("m");
    std::fs::create_dir_all(&base).expect("mkdir");
    add_version(&base, 1, 1); // just written: it settles only after 2 s
    let base_s = base.display().to_string();
    let args = [
        "--model_name=m".to_string(),
        format!("--model_base_path={base_s}"),
        "--file_system_poll_wait_seconds=0.1".to_string(),
        "--aegis_version_settle_seconds=2".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_listening(&args);
    assert_eq!(server.get("/v2/health/live").status, 200);
    assert_eq!(server.get("/v2/health/ready").status, 503);
    assert_eq!(server.get("/v2/models/m/ready").status, 503);
    wait_for("readiness", Duration::from_secs(30), || {
        server.get("/v2/health/ready").status == 200
    });
    assert_eq!(server.get("/v2/models/m/ready").status, 200);
    assert_eq!(server.get("/v2/models/nope/ready").status, 503);
    assert_eq!(answer(&server, "/v1/models/m:predict"), Ok(1));
}

/// (version, fixture content, available from, available until).
type Availability = (i64, i64, Instant, Option<Instant>);

/// Eight clients (REST and gRPC, latest and a label) run while 50 versions come and go and the
/// label moves. No request may fail, and each answer must come from a version that was
/// available while the request ran.
#[test]
fn version_churn_under_load_has_zero_failed_requests() {
    let scratch = Scratch::new("churn");
    let base = scratch.path().join("m");
    std::fs::create_dir_all(&base).expect("mkdir");
    add_version(&base, 1, 1);
    add_version(&base, 2, 2);
    let config = scratch.path().join("models.config");
    let cfg = |label: i64| {
        config_text(&[model_entry(
            "m",
            &base,
            &format!("model_version_policy {{ all {{}} }} version_labels {{ key: 'stable' value: {label} }}"),
        )])
    };
    write_config(&config, &cfg(1));
    let mut args = vec![
        "--allow_version_labels_for_unavailable_models",
        "--model_config_file_poll_wait_seconds=0.1",
    ];
    args.extend(FAST);
    let server = Arc::new(start_config(&config, &args));

    // When each version was available: (version, content, from, until).
    let timeline: Arc<Mutex<Vec<Availability>>> = Arc::new(Mutex::new(vec![
        (1, 1, Instant::now(), None),
        (2, 2, Instant::now(), None),
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (server, stop, failures, served, timeline) = (
            Arc::clone(&server),
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&served),
            Arc::clone(&timeline),
        );
        clients.push(std::thread::spawn(move || {
            let grpc = i % 2 == 1;
            let path = if i % 4 < 2 { "/v1/models/m:predict" } else { "/v1/models/m/labels/stable:predict" };
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = if grpc { common::grpc_predict_versioned(server.grpc_port, i % 4 >= 2) } else {
                    answer(&server, path).map(|c| (None, c))
                };
                let ended = Instant::now();
                match result {
                    Err(e) => failures.lock().expect("lock").push(e),
                    Ok((version, content)) => {
                        served.fetch_add(1, Ordering::Relaxed);
                        let t = timeline.lock().expect("lock");
                        let ok = t.iter().any(|(v, c, from, until)| {
                            *c == content
                                && version.is_none_or(|sv| sv == *v)
                                && *from <= ended
                                && until.is_none_or(|u| u >= started)
                        });
                        if !ok {
                            failures.lock().expect("lock").push(format!(
                                "client {i}: answer {content} (version {version:?}) from no available version"
                            ));
                        }
                    }
                }
            }
        }));
    }

    for n in 3..53i64 {
        let content = if n % 2 == 0 { 2 } else { 1 };
        // No request can be answered by version n before its directory exists.
        timeline
            .lock()
            .expect("lock")
            .push((n, content, Instant::now(), None));
        add_version(&base, n, content);
        wait_for("the new version", Duration::from_secs(30), || {
            available(&server, "m").contains(&n)
        });
        // Move the label to the new version, then retire the version before the previous one.
        write_config(&config, &cfg(n));
        wait_for("the label to move", Duration::from_secs(30), || {
            server.get("/v1/models").json()["models"][0]["version_labels"]["stable"]
                == n.to_string().as_str()
        });
        let old = n - 2;
        // Marked unavailable before the directory goes: a request that started after this
        // instant must not be answered by it.
        for entry in timeline.lock().expect("lock").iter_mut() {
            if entry.0 == old {
                entry.3 = Some(Instant::now() + Duration::from_secs(3600));
            }
        }
        std::fs::remove_dir_all(base.join(old.to_string())).expect("rm");
        wait_for("the old version to unload", Duration::from_secs(30), || {
            !available(&server, "m").contains(&old)
        });
        for entry in timeline.lock().expect("lock").iter_mut() {
            if entry.0 == old {
                entry.3 = Some(Instant::now());
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let failures = failures.lock().expect("lock");
    let total = served.load(Ordering::Relaxed);
    println!("{total} requests served during 50 version swaps");
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 400, "clients were not busy: {total} requests");

    // The status lists the versions on disk and the ten newest that ended with their directory
    // gone, not all fifty that came and went (TF Serving's grows with every rollout).
    let want: Vec<(i64, String)> = [(52, "AVAILABLE"), (51, "AVAILABLE")]
        .into_iter()
        .chain((41..=50).rev().map(|v| (v, "END")))
        .map(|(v, s)| (v, s.to_string()))
        .collect();
    wait_for(
        "ended versions to be forgotten",
        Duration::from_secs(10),
        || states(&server, "m") == want,
    );
}

/// `ModelService/HandleReloadConfigRequest` adds and removes models like a changed config file,
/// answering once the new model is available, and refuses a label on an unavailable version.
#[test]
fn reload_config_through_model_service() {
    use aegis_proto::tensorflow::serving::model_service_client::ModelServiceClient;
    use aegis_proto::tensorflow::serving::{
        model_server_config, ModelConfig, ModelConfigList, ModelServerConfig, ReloadConfigRequest,
    };

    let scratch = Scratch::new("reload-rpc");
    let base1 = scratch.path().join("one");
    let base2 = scratch.path().join("two");
    for (b, content) in [(&base1, 1), (&base2, 2)] {
        std::fs::create_dir_all(b).expect("mkdir");
        add_version(b, 1, content);
    }
    let config = scratch.path().join("models.config");
    write_config(&config, &config_text(&[model_entry("one", &base1, "")]));
    let server = start_config(&config, &FAST);
    let model = |name: &str, base: &Path, labels: &[(&str, i64)]| ModelConfig {
        name: name.into(),
        base_path: base.display().to_string(),
        model_platform: "tensorflow".into(),
        version_labels: labels.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ..Default::default()
    };
    let request = |models: Vec<ModelConfig>| ReloadConfigRequest {
        config: Some(ModelServerConfig {
            config: Some(model_server_config::Config::ModelConfigList(
                ModelConfigList { config: models },
            )),
        }),
        metric_names: vec![],
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut client =
            ModelServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc_port))
                .await
                .expect("connect");
        let resp = client
            .handle_reload_config_request(request(vec![
                model("one", &base1, &[]),
                model("two", &base2, &[]),
            ]))
            .await
            .expect("reload")
            .into_inner();
        assert_eq!(resp.status.map(|s| s.error_code), Some(0));
        // Answered only once "two" is available.
        assert_eq!(answer(&server, "/v1/models/two:predict"), Ok(2));

        let err = client
            .handle_reload_config_request(request(vec![model("two", &base2, &[("stable", 9)])]))
            .await
            .expect_err("label on a missing version");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message()
                .contains("Request to assign label to version 9 of model two"),
            "{}",
            err.message()
        );
        assert_eq!(answer(&server, "/v1/models/one:predict"), Ok(1)); // nothing changed

        client
            .handle_reload_config_request(request(vec![model("two", &base2, &[("stable", 1)])]))
            .await
            .expect("reload");
    });
    wait_for("model one to go", Duration::from_secs(20), || {
        server.post("/v1/models/one:predict", BODY).status == 404
    });
    assert_eq!(
        answer(&server, "/v1/models/two/labels/stable:predict"),
        Ok(2)
    );
}

/// A model whose base path disappears keeps what it serves and does not stop the others from
/// updating (TF Serving abandons the whole poll in that case).
#[test]
fn a_missing_base_path_does_not_stop_other_models() {
    let scratch = Scratch::new("missing-base");
    let base1 = scratch.path().join("one");
    let base2 = scratch.path().join("two");
    for (b, content) in [(&base1, 1), (&base2, 2)] {
        std::fs::create_dir_all(b).expect("mkdir");
        add_version(b, 1, content);
    }
    let config = scratch.path().join("models.config");
    write_config(
        &config,
        &config_text(&[
            model_entry("one", &base1, ""),
            model_entry("two", &base2, ""),
        ]),
    );
    let server = start_config(&config, &FAST);
    std::fs::remove_dir_all(&base2).expect("rm base two");
    add_version(&base1, 2, 2);
    wait_for(
        "model one to move to version 2",
        Duration::from_secs(20),
        || answer(&server, "/v1/models/one:predict") == Ok(2),
    );
    assert_eq!(answer(&server, "/v1/models/two:predict"), Ok(2));
    assert!(
        server.log().contains("cannot scan base path"),
        "{}",
        server.log()
    );
}
