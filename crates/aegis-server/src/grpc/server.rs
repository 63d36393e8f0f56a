//! The gRPC listener: HTTP/2 connections served by hyper, routed by tonic to
//! `tensorflow.serving.PredictionService`, `tensorflow.serving.ModelService`, KServe v2's
//! `inference.GRPCInferenceService`, `grpc.health.v1.Health` and server reflection (v1 and
//! v1alpha).
//!
//! The accept loop is ours rather than `tonic::transport::Server`'s because tonic's server
//! enforces `grpc-timeout` itself and answers CANCELLED when it passes; TF Serving answers
//! DEADLINE_EXCEEDED, which the handlers do (see [`super::within`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aegis_models::ModelManager;
use aegis_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use aegis_proto::tensorflow::serving::model_service_server::ModelServiceServer;
use aegis_proto::tensorflow::serving::prediction_service_server::PredictionServiceServer;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::Instrument;

use super::kserve::KServe;
use super::model_service::Models;
use super::prediction::Prediction;
use super::GrpcOptions;
use crate::metrics::{self, Protocol};
use crate::request_id;

/// TF Serving lets messages be as large as protobuf allows (`INT32_MAX` bytes) both ways;
/// requests are limited by [`GrpcOptions::max_message_bytes`].
const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// The names the health service reports: the server as a whole, TF Serving's two services and
/// KServe v2's.
const HEALTH_NAMES: [&str; 4] = [
    "",
    <PredictionServiceServer<Prediction> as NamedService>::NAME,
    <ModelServiceServer<Models> as NamedService>::NAME,
    <GrpcInferenceServiceServer<KServe> as NamedService>::NAME,
];

/// A bound gRPC listener, ready to serve.
pub struct GrpcServer {
    listener: TcpListener,
    routes: Routes,
    health: HealthReporter,
    manager: Arc<ModelManager>,
    tls: Option<crate::tls::TlsAcceptor>,
}

impl GrpcServer {
    /// Binds `addr` (an unspecified IPv6 address falls back to IPv4) and builds the services.
    pub async fn bind(
        addr: SocketAddr,
        manager: Arc<ModelManager>,
        options: GrpcOptions,
    ) -> io::Result<GrpcServer> {
        let listener = crate::bind(addr).await?;
        // A request message's limit, on the wire and again once decompressed (tonic checks both).
        let max_in = options.max_message_bytes;
        let prediction =
            PredictionServiceServer::new(Prediction::new(Arc::clone(&manager), options))
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_in)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let models = ModelServiceServer::new(Models::new(Arc::clone(&manager)))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_in)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let kserve = GrpcInferenceServiceServer::new(KServe::new(Arc::clone(&manager), options))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_in)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(aegis_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(io::Error::other)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(io::Error::other)?;
        let routes = Routes::new(prediction)
            .add_service(models)
            .add_service(kserve)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .prepare();
        Ok(GrpcServer {
            listener,
            routes,
            health,
            manager,
            tls: None,
        })
    }

    /// Serves TLS (ALPN `h2`) instead of plain TCP.
    pub fn with_tls(mut self, tls: Option<crate::tls::TlsAcceptor>) -> GrpcServer {
        self.tls = tls;
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` resolves, then reports NOT_SERVING, stops accepting, asks every
    /// connection to finish (HTTP/2 GOAWAY) and returns once the in-flight calls are done.
    pub async fn serve(self, stop: impl Future<Output = ()>) -> io::Result<()> {
        let GrpcServer {
            listener,
            routes,
            health,
            manager,
            tls,
        } = self;
        // SERVING once every configured model has an available version (readiness), as the
        // REST `/v2/health/ready` probe reports it; pushed to watchers as soon as it changes.
        set_health(&health, ServingStatus::NotServing).await;
        let readiness = {
            let health = health.clone();
            let mut changes = manager.readiness_changes();
            tokio::spawn(async move {
                let mut ready = false;
                loop {
                    let now = manager.all_available();
                    if now != ready {
                        ready = now;
                        let status = if ready {
                            ServingStatus::Serving
                        } else {
                            ServingStatus::NotServing
                        };
                        set_health(&health, status).await;
                    }
                    if changes.changed().await.is_err() {
                        break; // the manager is gone
                    }
                }
            })
        };
        let builder = http2::Builder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        tokio::pin!(stop);
        loop {
            // With TLS, a handshake slot first (see `tls::MAX_HANDSHAKES`).
            let slot = match &tls {
                None => None,
                Some(tls) => tokio::select! {
                    () = &mut stop => break,
                    slot = tls.slot() => Some(slot),
                },
            };
            let accepted = tokio::select! {
                () = &mut stop => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Responses are written whole; Nagle's algorithm would only add latency.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
            let routes = routes.clone();
            let service = hyper::service::service_fn(move |req| call(routes.clone(), req));
            let (builder, watcher) = (builder.clone(), graceful.watcher());
            let open = metrics::ConnectionGuard::open("grpc");
            tokio::spawn(async move {
                let _open = open;
                // With TLS, the handshake runs in the connection's task, not in the accept loop.
                let ended: Result<(), Box<dyn std::error::Error + Send + Sync>> = match slot {
                    None => watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                        .map_err(Into::into),
                    Some(slot) => match slot.accept(stream).await {
                        Ok(stream) => watcher
                            .watch(builder.serve_connection(TokioIo::new(stream), service))
                            .await
                            .map_err(Into::into),
                        Err(e) => Err(e.into()),
                    },
                };
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "gRPC connection ended with an error");
                }
            });
        }
        drop(listener);
        readiness.abort();
        set_health(&health, ServingStatus::NotServing).await;
        graceful.shutdown().await;
        Ok(())
    }
}

/// One call: its id (the client's `x-request-id` or a new one) goes back in the response
/// metadata and on the span the call runs in; calls of the TF Serving and KServe v2 services are
/// recorded once in the metrics, their outcome read from the `grpc-status` the handler answered
/// with (tonic answers a failed unary call with a trailers-only response, whose headers carry it).
async fn call(
    mut routes: Routes,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<tonic::body::Body>, std::convert::Infallible> {
    let id = request_id::of(req.headers());
    let span = request_id::span(&id);
    let observed = api_of(req.uri().path());
    let work = routes.call(req);
    let result = match observed {
        Some((protocol, api)) => {
            metrics::observe(protocol, api, work, |r| match r {
                Ok(resp) => grpc_error(resp.headers()),
                Err(never) => match *never {},
            })
            .instrument(span)
            .await
        }
        None => work.instrument(span).await,
    };
    result.map(|mut resp| {
        resp.headers_mut().insert(request_id::HEADER, id);
        resp
    })
}

/// The error kind of a response whose headers carry a non-zero `grpc-status`.
fn grpc_error(headers: &hyper::HeaderMap) -> Option<aegis_core::ErrorKind> {
    let code: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    (code != 0).then(|| aegis_core::ErrorKind::from_code(code))
}

/// The protocol and `api` label (the method name) of a call to one of the inference services;
/// `None` for health checks, reflection and unknown paths.
fn api_of(path: &str) -> Option<(Protocol, &'static str)> {
    const TFS: [&str; 7] = [
        "Predict",
        "Classify",
        "Regress",
        "MultiInference",
        "GetModelMetadata",
        "GetModelStatus",
        "HandleReloadConfigRequest",
    ];
    const V2: [&str; 11] = [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStatistics",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
        "ModelStreamInfer",
    ];
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let (protocol, names): (Protocol, &[&'static str]) = match service {
        "tensorflow.serving.PredictionService" | "tensorflow.serving.ModelService" => {
            (Protocol::TfsGrpc, &TFS)
        }
        "inference.GRPCInferenceService" => (Protocol::V2Grpc, &V2),
        _ => return None,
    };
    let api = names
        .iter()
        .find(|n| **n == method)
        .copied()
        .unwrap_or("other");
    Some((protocol, api))
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_NAMES {
        health.set_service_status(name, status).await;
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
