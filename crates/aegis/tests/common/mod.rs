//! Test harness: starts the real `aegis` binary on free ports and talks to it over real sockets
//! with a minimal HTTP/1.1 client (one request per connection, like `curl`).
#![allow(dead_code)]

pub mod golden;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub fn fixture_model(name: &str) -> PathBuf {
    repo_root().join("fixtures/models").join(name)
}

/// A golden file written by `fixtures/make_fixtures.py` from TensorFlow's own outputs.
pub fn golden(model: &str) -> Value {
    let path = repo_root()
        .join("fixtures/golden")
        .join(format!("{model}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden JSON")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `aegis serve`, killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    /// The gRPC port (`--port`) the server was started with.
    pub grpc_port: u16,
    log: PathBuf,
}

impl Server {
    /// Serves `base_path` as model `name` in single-model mode, with extra flags.
    pub fn start(name: &str, base_path: &Path, extra: &[&str]) -> Server {
        let mut args = vec![
            format!("--model_name={name}"),
            format!("--model_base_path={}", base_path.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::try_start(name, &args, &[])
            .unwrap_or_else(|log| panic!("aegis did not start:\n{log}"))
    }

    /// Starts `aegis serve` with only the port flags, `args` and extra environment variables;
    /// `name` is the model whose status tells that the server is ready.
    pub fn start_with(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Self::try_start(name, &args, envs)
            .unwrap_or_else(|log| panic!("aegis did not start:\n{log}"))
    }

    /// Returns the server's log when it exits before serving.
    pub fn try_start(name: &str, args: &[String], envs: &[(&str, &str)]) -> Result<Server, String> {
        let mut last = String::new();
        for _attempt in 0..3 {
            let mut server = Self::spawn(args, envs);
            match server.wait_ready(name) {
                Ok(()) => return Ok(server),
                Err(text) if text.contains("Address already in use") => last = text,
                Err(text) => return Err(text),
            }
        }
        Err(last)
    }

    /// Spawns `aegis serve` on fresh REST and gRPC ports with `args` and returns at once, for
    /// tests that decide themselves when it is ready (TLS, start-up failures).
    pub fn spawn_unchecked(args: &[&str]) -> Server {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Self::spawn(&args, &[])
    }

    /// The process id, to send signals to.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Spawns `aegis serve` on fresh REST and gRPC ports with `args`.
    fn spawn(args: &[String], envs: &[(&str, &str)]) -> Server {
        let port = free_port();
        let grpc = free_port();
        let log =
            std::env::temp_dir().join(format!("aegis-test-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_aegis"))
            .arg("serve")
            .arg(format!("--rest_api_port={port}"))
            .arg(format!("--port={grpc}"))
            .args(args)
            .envs(envs.iter().copied())
            .env("NO_COLOR", "1")
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn aegis");
        Server {
            child,
            port,
            grpc_port: grpc,
            log,
        }
    }

    /// Waits until `probe` answers 200 (the listeners open before models load, so readiness
    /// comes from the health paths, not from the port).
    fn wait_for_path(&mut self, probe: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.log());
            }
            if let Ok(r) = try_request(self.port, "GET", probe, &[], &[]) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("timed out waiting for {probe}\n{}", self.log()))
    }

    fn wait_ready(&mut self, name: &str) -> Result<(), String> {
        if name.is_empty() {
            self.wait_for_path("/v2/health/ready")
        } else {
            self.wait_for_path(&format!("/v2/models/{name}/ready"))
        }
    }

    /// Starts `aegis serve` with the port flags and `args` and waits until every configured
    /// model is available (`/v2/health/ready`).
    pub fn start_ready(args: &[&str]) -> Server {
        Self::start_with("", args, &[])
    }

    /// Starts `aegis serve` and returns as soon as it answers liveness, models loaded or not.
    pub fn start_listening(args: &[&str]) -> Server {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut last = String::new();
        for _ in 0..3 {
            let mut server = Self::spawn(&args, &[]);
            match server.wait_for_path("/v2/health/live") {
                Ok(()) => return server,
                Err(text) if text.contains("Address already in use") => last = text,
                Err(text) => panic!("aegis did not start:\n{text}"),
            }
        }
        panic!("aegis did not start:\n{last}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Serves `base_path` as model `name` over gRPC only (`--rest_api_port=0`); ready once the
    /// gRPC port accepts connections and the log reports every model available.
    pub fn start_grpc_only(name: &str, base_path: &Path) -> Server {
        let mut last = String::new();
        for _attempt in 0..3 {
            let grpc = free_port();
            let log = std::env::temp_dir()
                .join(format!("aegis-test-{}-grpc-{grpc}.log", std::process::id()));
            let file = std::fs::File::create(&log).expect("log file");
            let child = Command::new(env!("CARGO_BIN_EXE_aegis"))
                .arg("serve")
                .arg("--rest_api_port=0")
                .arg(format!("--port={grpc}"))
                .arg(format!("--model_name={name}"))
                .arg(format!("--model_base_path={}", base_path.display()))
                .current_dir(repo_root())
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log"))
                .stderr(file)
                .spawn()
                .expect("spawn aegis");
            let mut server = Server {
                child,
                port: 0,
                grpc_port: grpc,
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if let Ok(Some(_)) = server.child.try_wait() {
                    last = server.log();
                    break;
                }
                // The port opens before the model loads; the log says when all are available.
                if TcpStream::connect(("127.0.0.1", grpc)).is_ok()
                    && server.log().contains("all models available")
                {
                    return server;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for the gRPC port\n{}",
                    server.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            if !last.contains("Address already in use") {
                break;
            }
        }
        panic!("aegis did not start:\n{last}");
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.port, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: impl AsRef<[u8]>) -> Response {
        request(
            self.port,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_ref(),
        )
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        self.post(path, serde_json::to_vec(body).expect("json"))
    }

    /// The server process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON. TF Serving writes NaN and ±Infinity as bare tokens, which standard JSON
    /// lacks: they are turned into the strings "NaN", "Infinity", "-Infinity" first (the goldens
    /// use the same spelling).
    pub fn json(&self) -> Value {
        let text = self.text();
        let fixed = quote_non_finite(&text);
        serde_json::from_str(&fixed)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` member of a TF Serving error body.
    pub fn error(&self) -> String {
        match self.json().get("error") {
            Some(Value::String(s)) => s.clone(),
            _ => panic!("no error member in {}", self.text()),
        }
    }
}

fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push('"');
            out.push_str(t);
            out.push('"');
            rest = &rest[t.len()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"))
}

pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "unparsable response: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A channel to the server's gRPC port, retried for up to 10 s (the port may be bound a moment
/// after the REST port the harness waits on).
pub async fn grpc_channel(port: u16) -> tonic::transport::Channel {
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..200 {
        match tonic::transport::Channel::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
        {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gRPC port {port} never answered: {last:?}");
}

/// One gRPC Predict of `[1.0, 2.0, 3.5]` on model `m` (latest, or label `stable`): the version
/// that served (from the echoed `model_spec`) and which `versioned` fixture content answered
/// (1: x + 1, 2: x * 10). For lifecycle tests that call from plain threads.
pub fn grpc_predict_versioned(port: u16, label: bool) -> Result<(Option<i64>, i64), String> {
    use aegis_proto::tensorflow::serving::model_spec::VersionChoice;
    use aegis_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
    use aegis_proto::tensorflow::serving::{ModelSpec, PredictRequest};
    use aegis_proto::tensorflow::{tensor_shape_proto::Dim, TensorProto, TensorShapeProto};

    type Client = PredictionServiceClient<tonic::transport::Channel>;
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        static CLIENT: std::cell::RefCell<Option<Client>> = const { std::cell::RefCell::new(None) };
    }
    let request = PredictRequest {
        model_spec: Some(ModelSpec {
            name: "m".into(),
            signature_name: String::new(),
            version_choice: label.then(|| VersionChoice::VersionLabel("stable".into())),
        }),
        inputs: [(
            "x".to_string(),
            TensorProto {
                dtype: 1,
                tensor_shape: Some(TensorShapeProto {
                    dim: vec![Dim {
                        size: 3,
                        name: String::new(),
                    }],
                    unknown_rank: false,
                }),
                float_val: vec![1.0, 2.0, 3.5],
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    RT.with(|rt| {
        rt.block_on(async {
            let mut client = match CLIENT.with(|c| c.borrow().clone()) {
                Some(c) => c,
                None => {
                    let c = Client::connect(format!("http://127.0.0.1:{port}"))
                        .await
                        .map_err(|e| format!("connect: {e}"))?;
                    CLIENT.with(|slot| *slot.borrow_mut() = Some(c.clone()));
                    c
                }
            };
            let resp = client
                .predict(request)
                .await
                .map_err(|s| format!("gRPC {:?}: {}", s.code(), s.message()))?
                .into_inner();
            let version = match resp.model_spec.and_then(|s| s.version_choice) {
                Some(VersionChoice::Version(v)) => Some(v),
                _ => None,
            };
            let y = resp
                .outputs
                .get("y")
                .map(|t| t.float_val.clone())
                .unwrap_or_default();
            let y: Vec<f64> = y.into_iter().map(f64::from).collect();
            let content =
                versioned_content(&y).ok_or_else(|| format!("unexpected gRPC answer {y:?}"))?;
            Ok((version, content))
        })
    })
}

/// Which `versioned` fixture version computed `y` for the input `[1.0, 2.0, 3.5]`, judged
/// against TensorFlow's golden outputs (version 1: x + 1, version 2: x * 10).
pub fn versioned_content(y: &[f64]) -> Option<i64> {
    let g = golden::cases(&self::golden("versioned"));
    g.iter().find_map(|case| {
        let want: Vec<f64> = case.outputs[0]
            .1
            .values
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        let close = want.len() == y.len()
            && want
                .iter()
                .zip(y)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(1.0));
        close.then_some(case.version)
    })
}

/// The MLP fixture in every format, each with the platform that serves it.
pub const MLP_FORMATS: [(&str, &str); 5] = [
    ("mlp", "tensorflow"),
    ("mlp_tflite", "tflite"),
    ("mlp_tflite_f16", "tflite"),
    ("mlp_tflite_int8", "tflite"),
    ("mlp_onnx", "onnx"),
];

/// Writes a models.config serving every MLP format and returns its path (in `dir`).
pub fn write_mlp_formats_config(dir: &Path) -> PathBuf {
    let mut text = String::from("model_config_list {\n");
    for (model, platform) in MLP_FORMATS {
        text.push_str(&format!(
            "  config {{ name: '{model}' base_path: '{}' model_platform: '{platform}' }}\n",
            fixture_model(model).display()
        ));
    }
    text.push_str("}\n");
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join("models.config");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Starts one server on every MLP format (SavedModel, TFLite f32/f16/int8, ONNX).
pub fn start_mlp_formats(tag: &str, envs: &[(&str, &str)]) -> Server {
    let dir = std::env::temp_dir().join(format!("aegis-formats-{tag}-{}", std::process::id()));
    let config = write_mlp_formats_config(&dir);
    let arg = format!("--model_config_file={}", config.display());
    Server::start_with("", &[&arg], envs)
}
