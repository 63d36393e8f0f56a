//! TLS on both ports (`--ssl_config_file`, mutual TLS included), graceful shutdown under load,
//! and the per-model in-flight limit, against the real binary. Certificates are made at test
//! time with rcgen.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use aegis_proto::tensorflow::serving::{ModelSpec, PredictRequest, PredictResponse};
use aegis_proto::tensorflow::{tensor_shape_proto::Dim, DataType, TensorProto, TensorShapeProto};
use common::{fixture_model, golden, Server};
use serde_json::{json, Value};
use tokio_rustls::rustls;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const MODEL: &str = "half_plus_two";

// ---------------------------------------------------------------------------------------------
// Certificates and config

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    /// A client certificate signed by a CA the server does not trust.
    rogue_cert: String,
    rogue_key: String,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca = |cn: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA");
        (cert.pem(), Issuer::new(params, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>, names: Vec<String>, usage| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    };
    let (ca_pem, issuer) = ca("Aegis test CA");
    let (server_cert, server_key) = leaf(
        &issuer,
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        &issuer,
        vec!["client".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (_, rogue_issuer) = ca("Rogue CA");
    let (rogue_cert, rogue_key) = leaf(
        &rogue_issuer,
        vec!["client".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        ca: ca_pem,
        server_cert,
        server_key,
        client_cert,
        client_key,
        rogue_cert,
        rogue_key,
    }
}

/// A text-proto string literal.
fn quoted(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aegis-tls-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write_ssl_config(dir: &Path, pki: &Pki, client_verify: bool) -> PathBuf {
    let path = dir.join("ssl.config");
    let text = format!(
        "server_key: {}\nserver_cert: {}\ncustom_ca: {}\nclient_verify: {client_verify}\n",
        quoted(&pki.server_key),
        quoted(&pki.server_cert),
        quoted(&pki.ca)
    );
    std::fs::write(&path, text).expect("ssl config");
    path
}

/// Starts half_plus_two with `--ssl_config_file`; ready when the log says so.
fn start_tls(config: &Path) -> Server {
    let base = fixture_model(MODEL);
    let mut server = Server::spawn_unchecked(&[
        &format!("--model_name={MODEL}"),
        &format!("--model_base_path={}", base.display()),
        &format!("--ssl_config_file={}", config.display()),
    ]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(server.alive(), "aegis exited:\n{}", server.log());
        if server.log().contains("all models available") {
            return server;
        }
        assert!(Instant::now() < deadline, "not ready:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// The golden `doc_example` case: inputs `[3, 1]` and the outputs TensorFlow computed.
fn doc_example() -> (Vec<f32>, Vec<f64>) {
    let g = golden(MODEL);
    let case = g["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == "doc_example")
        .expect("doc_example");
    let values = |v: &Value| -> Vec<f64> {
        v["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    };
    let x = values(&case["inputs"]["x"])
        .iter()
        .map(|&v| v as f32)
        .collect();
    (x, values(&case["outputs"]["y"]))
}

fn rest_predict_body(x: &[f32]) -> Vec<u8> {
    let rows: Vec<Vec<f32>> = x.iter().map(|&v| vec![v]).collect();
    serde_json::to_vec(&json!({ "instances": rows })).expect("json")
}

/// Whether a REST predict answer is complete and correct.
fn rest_answer_ok(status: u16, body: &[u8], want: &[f64]) -> bool {
    if status != 200 {
        return false;
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let got: Option<Vec<f64>> = v["predictions"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r[0].as_f64()).collect());
    got.is_some_and(|g| {
        g.len() == want.len() && g.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6)
    })
}

fn client_tls(pki: &Pki, identity: Option<(&str, &str)>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).expect("ca"))
        .expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// The negotiated ALPN protocol, the status and the body of an HTTPS answer.
type HttpsAnswer = (Option<Vec<u8>>, u16, Vec<u8>);

/// One HTTP/1.1 request over TLS (blocking rustls client, `Connection: close`): the negotiated
/// ALPN protocol, the status and the body. Any TLS or I/O failure is an `Err`.
fn https_request(
    port: u16,
    config: rustls::ClientConfig,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<HttpsAnswer, String> {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    tls.write_all(body).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let read = tls.read_to_end(&mut raw);
    let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    // A server that closes without close_notify after a complete response is fine; a read
    // error before any byte arrived (a rejected handshake) is not.
    if let Err(e) = read {
        if raw.is_empty() {
            return Err(e.to_string());
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no response head: {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    Ok((alpn, status, raw[split + 4..].to_vec()))
}

fn predict_request(x: &[f32]) -> PredictRequest {
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: MODEL.into(),
            ..Default::default()
        }),
        inputs: [(
            "x".to_string(),
            TensorProto {
                dtype: DataType::DtFloat as i32,
                tensor_shape: Some(TensorShapeProto {
                    dim: vec![
                        Dim {
                            size: x.len() as i64,
                            name: String::new(),
                        },
                        Dim {
                            size: 1,
                            name: String::new(),
                        },
                    ],
                    unknown_rank: false,
                }),
                float_val: x.to_vec(),
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

fn grpc_answer_ok(resp: &PredictResponse, want: &[f64]) -> bool {
    resp.outputs.get("y").is_some_and(|y| {
        y.float_val.len() == want.len()
            && y.float_val
                .iter()
                .zip(want)
                .all(|(a, b)| (f64::from(*a) - b).abs() < 1e-6)
    })
}

async fn tls_channel(port: u16, pki: &Pki, identity: bool) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if identity {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Channel::from_shared(format!("https://localhost:{port}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// A TLS connection to `localhost:port`, handshake done.
async fn tls_connect(
    port: u16,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// A gRPC Predict of the doc example over TLS (with the client certificate when `identity`),
/// checked against TensorFlow's outputs.
async fn grpc_predicts_over_tls(port: u16, pki: &Pki, identity: bool) {
    let (x, want) = doc_example();
    let channel = tls_channel(port, pki, identity)
        .await
        .expect("gRPC over TLS");
    let resp = PredictionServiceClient::new(channel)
        .predict(predict_request(&x))
        .await
        .expect("predict")
        .into_inner();
    assert!(grpc_answer_ok(&resp, &want), "{resp:?}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------------------------------------
// TLS

#[test]
fn rest_and_grpc_over_tls() {
    let pki = pki();
    let dir = temp_dir("plain");
    let server = start_tls(&write_ssl_config(&dir, &pki, false));
    let (x, want) = doc_example();

    // REST: HTTP/1.1 over TLS, the server's certificate checked against the test CA.
    let (alpn, status, body) = https_request(
        server.port,
        client_tls(&pki, None, &[b"http/1.1"]),
        "POST",
        &format!("/v1/models/{MODEL}:predict"),
        &rest_predict_body(&x),
    )
    .expect("REST over TLS");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(
        rest_answer_ok(status, &body, &want),
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    // REST also speaks HTTP/2 over TLS when the client offers h2.
    runtime().block_on(async {
        use http_body_util::BodyExt;
        let tls = tls_connect(server.port, client_tls(&pki, None, &[b"h2", b"http/1.1"]))
            .await
            .expect("TLS");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let req = hyper::Request::post(format!("https://localhost/v1/models/{MODEL}:predict"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                rest_predict_body(&x),
            )))
            .expect("request");
        let resp = send.send_request(req).await.expect("h2 predict");
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(rest_answer_ok(status, &body, &want), "{status}");
    });
    // Plain HTTP on the TLS port gets no answer.
    assert!(
        common::try_request(server.port, "GET", "/v2/health/live", &[], &[])
            .map_or(true, |r| r.status != 200)
    );

    // gRPC: ALPN h2 only; a client that offers only http/1.1 is refused.
    let mut h2 = rustls::ClientConnection::new(
        Arc::new(client_tls(&pki, None, &[b"h2"])),
        "localhost".try_into().expect("name"),
    )
    .expect("conn");
    let mut tcp = TcpStream::connect(("127.0.0.1", server.grpc_port)).expect("connect");
    h2.complete_io(&mut tcp).expect("h2 handshake");
    assert_eq!(h2.alpn_protocol(), Some(&b"h2"[..]));
    let http1_only = https_request(
        server.grpc_port,
        client_tls(&pki, None, &[b"http/1.1"]),
        "GET",
        "/",
        b"",
    );
    assert!(http1_only.is_err(), "{http1_only:?}");

    runtime().block_on(grpc_predicts_over_tls(server.grpc_port, &pki, false));
    let _ = std::fs::remove_dir_all(dir);
}

/// Clients that connect and never start their handshake hold at most `MAX_HANDSHAKES` of a
/// port's slots: the next connection waits in the kernel's backlog (its handshake gets no answer)
/// while the other port serves, and the slots free as soon as those clients go.
#[test]
fn stalled_handshakes_are_capped_per_port_and_freed_when_their_clients_go() {
    use aegis_server::tls::MAX_HANDSHAKES;
    let pki = pki();
    let dir = temp_dir("stalled");
    let server = start_tls(&write_ssl_config(&dir, &pki, false));
    let (x, want) = doc_example();
    let handshake = |port: u16| tls_connect(port, client_tls(&pki, None, &[b"h2"]));
    runtime().block_on(async {
        let mut stalled = Vec::new();
        for _ in 0..MAX_HANDSHAKES {
            stalled.push(
                tokio::net::TcpStream::connect(("127.0.0.1", server.grpc_port))
                    .await
                    .expect("connect"),
            );
        }
        // Queued behind all of them in the backlog: no slot, so no answer to its ClientHello.
        let waited =
            tokio::time::timeout(Duration::from_secs(1), handshake(server.grpc_port)).await;
        assert!(
            waited.is_err(),
            "handshake answered past the cap: {waited:?}"
        );
        // The REST port has slots of its own.
        let (_, status, body) = https_request(
            server.port,
            client_tls(&pki, None, &[b"http/1.1"]),
            "POST",
            &format!("/v1/models/{MODEL}:predict"),
            &rest_predict_body(&x),
        )
        .expect("REST over TLS while gRPC's slots are taken");
        assert!(rest_answer_ok(status, &body, &want), "{status}");

        drop(stalled);
        let tls = tokio::time::timeout(Duration::from_secs(5), handshake(server.grpc_port))
            .await
            .expect("slots freed when the stalled clients closed")
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        grpc_predicts_over_tls(server.grpc_port, &pki, false).await;
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    let dir = temp_dir("mtls");
    let server = start_tls(&write_ssl_config(&dir, &pki, true));
    let (x, want) = doc_example();
    let predict = |config| {
        https_request(
            server.port,
            config,
            "POST",
            &format!("/v1/models/{MODEL}:predict"),
            &rest_predict_body(&x),
        )
    };
    // No certificate, or one from another CA: the handshake fails, nothing is served.
    let none = predict(client_tls(&pki, None, &[b"http/1.1"]));
    eprintln!("without a certificate: {none:?}");
    assert!(none.is_err(), "{none:?}");
    let rogue = predict(client_tls(
        &pki,
        Some((&pki.rogue_cert, &pki.rogue_key)),
        &[b"http/1.1"],
    ));
    eprintln!("with a rogue certificate: {rogue:?}");
    assert!(rogue.is_err(), "{rogue:?}");
    // A certificate signed by custom_ca: served.
    let (_, status, body) = predict(client_tls(
        &pki,
        Some((&pki.client_cert, &pki.client_key)),
        &[b"http/1.1"],
    ))
    .expect("REST with a client certificate");
    assert!(rest_answer_ok(status, &body, &want), "{status}");

    runtime().block_on(async {
        // tonic connects lazily enough that the rejection may come with the first call.
        let without = match tls_channel(server.grpc_port, &pki, false).await {
            Err(e) => Err(e),
            Ok(ch) => PredictionServiceClient::new(ch)
                .predict(predict_request(&x))
                .await
                .map_err(|e| e.to_string()),
        };
        assert!(
            without.is_err(),
            "gRPC without a client certificate was served"
        );
        grpc_predicts_over_tls(server.grpc_port, &pki, true).await;
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_ssl_config_fails_start_up_with_one_clear_line() {
    let pki = pki();
    let dir = temp_dir("bad");
    let cases = [
        (
            "garbage cert",
            format!(
                "server_key: {}\nserver_cert: \"not a certificate\"\n",
                quoted(&pki.server_key)
            ),
            "SSLConfig.server_cert",
        ),
        (
            "missing key",
            format!("server_cert: {}\n", quoted(&pki.server_cert)),
            "SSLConfig.server_key is empty",
        ),
        (
            "key of another certificate",
            format!(
                "server_key: {}\nserver_cert: {}\n",
                quoted(&pki.client_key),
                quoted(&pki.server_cert)
            ),
            "does not fit server_cert",
        ),
        (
            "client_verify without a CA",
            format!(
                "server_key: {}\nserver_cert: {}\nclient_verify: true\n",
                quoted(&pki.server_key),
                quoted(&pki.server_cert)
            ),
            "custom_ca is empty",
        ),
        (
            "not a text proto",
            "server_keys: 1".to_string(),
            "Error parsing text-format tensorflow.serving.SSLConfig",
        ),
    ];
    let base = fixture_model(MODEL);
    for (case, text, want) in cases {
        let path = dir.join("ssl.config");
        std::fs::write(&path, text).expect("write");
        let mut server = Server::spawn_unchecked(&[
            &format!("--model_name={MODEL}"),
            &format!("--model_base_path={}", base.display()),
            &format!("--ssl_config_file={}", path.display()),
        ]);
        let status = server
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{case}: aegis did not exit\n{}", server.log()));
        assert!(!status.success(), "{case}");
        let log = server.log();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{case}: {log}");
        assert!(
            errors[0].starts_with("aegis: error: --ssl_config_file=") && errors[0].contains(want),
            "{case}: {log}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    /// Answers that were incomplete or wrong: must stay 0.
    bad: AtomicUsize,
    /// Connection refused / reset without an answer, after the signal: expected.
    refused: AtomicUsize,
    /// Failures before the signal: must stay 0.
    early: AtomicUsize,
}

#[test]
fn sigterm_drains_under_load_and_exits_zero() {
    const DRAIN_SECONDS: u64 = 10;
    let base = fixture_model(MODEL);
    let mut server = Server::start(
        MODEL,
        &base,
        &[
            &format!("--aegis_drain_seconds={DRAIN_SECONDS}"),
            "--aegis_shutdown_delay_seconds=1",
        ],
    );
    let (x, want) = doc_example();
    let (port, grpc_port) = (server.port, server.grpc_port);
    let signalled = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (signalled, done, tally) = (signalled.clone(), done.clone(), tally.clone());
        let (x, want) = (x.clone(), want.clone());
        clients.push(std::thread::spawn(move || {
            let body = rest_predict_body(&x);
            let path = format!("/v1/models/{MODEL}:predict");
            let headers = [("Content-Type", "application/json")];
            while !done.load(Ordering::Acquire) {
                let after = signalled.load(Ordering::Acquire);
                match common::try_request(port, "POST", &path, &headers, &body) {
                    Ok(r) if rest_answer_ok(r.status, &r.body, &want) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        eprintln!("bad REST answer: {} {}", r.status, r.text());
                        tally.bad.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) if after => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => {
                        eprintln!("REST failed before the signal: {e}");
                        tally.early.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        let (signalled, done, tally) = (signalled.clone(), done.clone(), tally.clone());
        let (x, want) = (x.clone(), want.clone());
        clients.push(std::thread::spawn(move || {
            runtime().block_on(async move {
                let mut client: Option<PredictionServiceClient<Channel>> = None;
                while !done.load(Ordering::Acquire) {
                    let after = signalled.load(Ordering::Acquire);
                    if client.is_none() {
                        let endpoint =
                            Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                                .expect("url");
                        match endpoint.connect().await {
                            Ok(ch) => client = Some(PredictionServiceClient::new(ch)),
                            Err(e) => {
                                if after {
                                    tally.refused.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    eprintln!("gRPC connect failed before the signal: {e}");
                                    tally.early.fetch_add(1, Ordering::Relaxed);
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                continue;
                            }
                        }
                    }
                    let Some(c) = client.as_mut() else { continue };
                    match c.predict(predict_request(&x)).await {
                        Ok(r) if grpc_answer_ok(r.get_ref(), &want) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            eprintln!("bad gRPC answer: {r:?}");
                            tally.bad.fetch_add(1, Ordering::Relaxed);
                        }
                        // Transport failures (GOAWAY, connection closed) once shutdown began.
                        Err(s)
                            if after
                                && matches!(
                                    s.code(),
                                    tonic::Code::Unavailable
                                        | tonic::Code::Unknown
                                        | tonic::Code::Cancelled
                                ) =>
                        {
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                            client = None;
                        }
                        Err(s) => {
                            eprintln!("gRPC failed (after signal: {after}): {s:?}");
                            if after {
                                tally.bad.fetch_add(1, Ordering::Relaxed);
                            } else {
                                tally.early.fetch_add(1, Ordering::Relaxed);
                            }
                            client = None;
                        }
                    }
                }
            });
        }));
    }
    // Steady load for a while.
    std::thread::sleep(Duration::from_millis(1500));
    let before = tally.ok.load(Ordering::Relaxed);
    assert!(before > 0, "no request succeeded before the signal");

    signalled.store(true, Ordering::Release);
    let sent = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    // Readiness turns false as soon as the signal is handled (a few ms; `kill` returns when it
    // is sent), while the ports still accept (--aegis_shutdown_delay_seconds).
    loop {
        let ready = common::try_request(port, "GET", "/v2/health/ready", &[], &[])
            .expect("readiness probe right after SIGTERM");
        if ready.status == 503 {
            break;
        }
        assert_eq!(ready.status, 200, "{}", ready.text());
        assert!(
            sent.elapsed() < Duration::from_millis(300),
            "readiness still true {:?} after SIGTERM",
            sent.elapsed()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    runtime().block_on(async {
        use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
        let ch = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
            .expect("url")
            .connect()
            .await
            .expect("gRPC health connect");
        let mut health = HealthClient::new(ch);
        // The gRPC health status is pushed when readiness changes (no polling tick): it is
        // NOT_SERVING by the time a connection is up, give or take a task wake-up.
        let deadline = Instant::now() + Duration::from_millis(250);
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("health")
                .into_inner()
                .status;
            if status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 {
                break;
            }
            assert!(Instant::now() < deadline, "gRPC health still SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let status = server.wait_exit(Duration::from_secs(DRAIN_SECONDS + 5));
    let elapsed = sent.elapsed();
    done.store(true, Ordering::Release);
    for c in clients {
        c.join().expect("client thread");
    }
    let log = server.log();
    let status = status.unwrap_or_else(|| panic!("aegis did not exit after SIGTERM\n{log}"));
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        elapsed < Duration::from_secs(DRAIN_SECONDS + 1),
        "took {elapsed:?}"
    );
    let ok = tally.ok.load(Ordering::Relaxed);
    eprintln!(
        "ok {before} before the signal, {} after; refused after: {}",
        ok - before,
        tally.refused.load(Ordering::Relaxed)
    );
    assert_eq!(
        tally.bad.load(Ordering::Relaxed),
        0,
        "incomplete or wrong answers\n{log}"
    );
    assert_eq!(
        tally.early.load(Ordering::Relaxed),
        0,
        "failures before the signal"
    );
    assert!(ok > before, "nothing was served during the shutdown delay");
    assert!(log.contains("models unloaded"), "{log}");
    assert!(log.contains("version unloaded"), "{log}");
}

/// A server whose batcher holds a lone request for `timeout_micros` waiting for its batch to
/// fill, with `--aegis_drain_seconds=drain_seconds`; and the temporary directory it uses.
fn server_holding_lone_requests(
    name: &str,
    timeout_micros: u64,
    drain_seconds: u64,
) -> (PathBuf, Server) {
    let dir = temp_dir(name);
    let params = dir.join("batching.config");
    std::fs::write(
        &params,
        format!(
            "max_batch_size {{ value: 64 }}\nbatch_timeout_micros {{ value: {timeout_micros} }}\n"
        ),
    )
    .expect("params");
    let base = fixture_model(MODEL);
    let server = Server::start(
        MODEL,
        &base,
        &[
            &format!("--aegis_drain_seconds={drain_seconds}"),
            "--enable_batching",
            &format!("--batching_parameters_file={}", params.display()),
            "--enable_model_warmup=false",
        ],
    );
    (dir, server)
}

#[test]
fn sigterm_lets_slow_requests_in_flight_finish() {
    // A lone request waits 2 s for its batch to fill: it is still in flight when the signal comes.
    let (dir, mut server) = server_holding_lone_requests("slow", 2_000_000, 10);
    let (x, want) = doc_example();
    let (port, grpc_port) = (server.port, server.grpc_port);
    let rest = {
        let body = rest_predict_body(&x);
        std::thread::spawn(move || {
            common::try_request(
                port,
                "POST",
                &format!("/v1/models/{MODEL}:predict"),
                &[("Content-Type", "application/json")],
                &body,
            )
        })
    };
    let grpc = {
        let x = x.clone();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let ch = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                    .expect("url")
                    .connect()
                    .await
                    .expect("connect");
                PredictionServiceClient::new(ch)
                    .predict(predict_request(&x))
                    .await
                    .map(tonic::Response::into_inner)
            })
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    let sent = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    // Without a shutdown delay the ports close at once, while the two requests still run.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "REST port still open"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", grpc_port)).is_err(),
        "gRPC port still open"
    );
    assert!(server.alive(), "exited with requests in flight");

    let r = rest.join().expect("REST thread").expect("REST answer");
    assert!(
        rest_answer_ok(r.status, &r.body, &want),
        "{} {}",
        r.status,
        r.text()
    );
    let g = grpc.join().expect("gRPC thread").expect("gRPC answer");
    assert!(grpc_answer_ok(&g, &want), "{g:?}");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit\n{}", server.log()));
    assert_eq!(status.code(), Some(0), "{}", server.log());
    let elapsed = sent.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1200) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_exits_zero_at_the_drain_deadline_with_a_request_stuck() {
    // The request waits 20 s for its batch: longer than the 1 s drain deadline.
    let (dir, mut server) = server_holding_lone_requests("stuck", 20_000_000, 1);
    let (x, _) = doc_example();
    let port = server.port;
    let body = rest_predict_body(&x);
    let stuck = std::thread::spawn(move || {
        common::try_request(
            port,
            "POST",
            &format!("/v1/models/{MODEL}:predict"),
            &[("Content-Type", "application/json")],
            &body,
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let sent = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = server
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit at the drain deadline\n{}", server.log()));
    let elapsed = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(server.log().contains("drain deadline passed"));
    // The cut request got no answer rather than a truncated one.
    assert!(stuck.join().expect("thread").is_err());
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn in_flight_limit_answers_429_and_resource_exhausted_at_once() {
    let dir = temp_dir("limit");
    let params = dir.join("batching.config");
    // A lone request waits 3 s for its batch to fill: slow enough to hold the model's one place.
    std::fs::write(
        &params,
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 3000000 }\n",
    )
    .expect("params");
    let base = fixture_model(MODEL);
    let server = Server::start(
        MODEL,
        &base,
        &[
            "--aegis_max_inflight_per_model=1",
            "--enable_batching",
            &format!("--batching_parameters_file={}", params.display()),
            "--enable_model_warmup=false",
        ],
    );
    let (x, want) = doc_example();
    let port = server.port;
    let body = rest_predict_body(&x);
    let path = format!("/v1/models/{MODEL}:predict");
    let slow = {
        let (body, path) = (body.clone(), path.clone());
        std::thread::spawn(move || {
            common::request(
                port,
                "POST",
                &path,
                &[("Content-Type", "application/json")],
                &body,
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let refused = server.post(&path, &body);
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(started.elapsed() < Duration::from_secs(1));
    let message = refused.error();
    assert!(
        message.contains(MODEL) && message.contains("in flight"),
        "{message}"
    );

    runtime().block_on(async {
        let ch = Channel::from_shared(format!("http://127.0.0.1:{}", server.grpc_port))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let started = Instant::now();
        let status = PredictionServiceClient::new(ch)
            .predict(predict_request(&x))
            .await
            .expect_err("second request while one is in flight");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains(MODEL));
        assert!(started.elapsed() < Duration::from_secs(1));
    });

    let first = slow.join().expect("slow request");
    assert!(
        rest_answer_ok(first.status, &first.body, &want),
        "{}",
        first.text()
    );
    // The place is free again.
    let again = server.post(&path, &body);
    assert!(rest_answer_ok(again.status, &again.body, &want));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gzip_bodies_are_inflated_within_the_body_limit() {
    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }
    let base = fixture_model(MODEL);
    let server = Server::start(MODEL, &base, &["--aegis_max_request_bytes=4096"]);
    let (x, want) = doc_example();
    let path = format!("/v1/models/{MODEL}:predict");
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
    ];
    let r = common::request(
        server.port,
        "POST",
        &path,
        &headers,
        &gzip(&rest_predict_body(&x)),
    );
    assert!(
        rest_answer_ok(r.status, &r.body, &want),
        "{} {}",
        r.status,
        r.text()
    );
    // Small on the wire, over the limit once inflated.
    let padded = format!("{{\"instances\": [[1.0]]{}}}", " ".repeat(8192));
    let small = gzip(padded.as_bytes());
    assert!(small.len() < 4096);
    let r = common::request(server.port, "POST", &path, &headers, &small);
    assert_eq!(r.status, 413, "{}", r.text());
    let r = common::request(server.port, "POST", &path, &headers, b"not gzip");
    assert_eq!(r.status, 400, "{}", r.text());
}
