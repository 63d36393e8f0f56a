//! TLS for both listeners, configured as TF Serving configures gRPC: a text-format `SSLConfig`
//! (`--ssl_config_file`) holding the server key, the server certificate chain and, for mutual
//! TLS, the CA that client certificates must chain to, all as inline PEM.
//!
//! TF Serving secures only gRPC; Aegis secures the REST port with the same config, since a
//! server that must not leak requests on one port must not leak them on the other. gRPC offers
//! ALPN `h2` only (gRPC needs HTTP/2); REST offers `h2` and `http/1.1`.
//!
//! rustls runs with the `ring` provider, which needs nothing but a C compiler to build.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost_reflect::{DescriptorPool, DynamicMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once on one port. Past it, new connections wait in the kernel's
/// accept backlog instead of in the server: clients that connect and never finish their
/// handshake hold at most this many sessions, each for at most [`HANDSHAKE_TIMEOUT`].
pub const MAX_HANDSHAKES: usize = 256;

/// TF Serving's `SSLConfig`, parsed but not yet checked.
#[derive(Clone, Default)]
pub struct SslConfig {
    pub server_key: String,
    pub server_cert: String,
    pub custom_ca: String,
    pub client_verify: bool,
}

impl std::fmt::Debug for SslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("SslConfig")
            .field("client_verify", &self.client_verify)
            .finish_non_exhaustive()
    }
}

impl SslConfig {
    /// Parses a text-format `tensorflow.serving.SSLConfig`.
    pub fn parse_text(text: &str) -> Result<SslConfig, String> {
        let pool =
            DescriptorPool::decode(aegis_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())?;
        let desc = pool
            .get_message_by_name("tensorflow.serving.SSLConfig")
            .ok_or("SSLConfig descriptor missing")?;
        let msg = DynamicMessage::parse_text_format(desc, text)
            .map_err(|e| format!("Error parsing text-format tensorflow.serving.SSLConfig: {e}"))?;
        let c: aegis_proto::tensorflow::serving::SslConfig =
            msg.transcode_to().map_err(|e| e.to_string())?;
        Ok(SslConfig {
            server_key: c.server_key,
            server_cert: c.server_cert,
            custom_ca: c.custom_ca,
            client_verify: c.client_verify,
        })
    }
}

/// The TLS side of both listeners, built from one [`SslConfig`].
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub rest: TlsAcceptor,
    pub grpc: TlsAcceptor,
}

impl ServerTls {
    /// Checks the config (PEM contents, key against certificate, CA when clients are verified).
    pub fn new(config: &SslConfig) -> Result<ServerTls, String> {
        Ok(ServerTls {
            rest: TlsAcceptor::new(config, Alpn::Rest)?,
            grpc: TlsAcceptor::new(config, Alpn::Grpc)?,
        })
    }
}

/// Accepts TLS connections for one listener.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    /// The port's handshake slots (clones share them).
    handshakes: Arc<Semaphore>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

/// Which ALPN protocols a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: `h2` only.
    Grpc,
    /// REST: `h2` and `http/1.1`.
    Rest,
}

impl TlsAcceptor {
    /// Checks `config` and builds the rustls server config. Errors name the field at fault.
    pub fn new(config: &SslConfig, alpn: Alpn) -> Result<TlsAcceptor, String> {
        let certs = certificates("server_cert", &config.server_cert)?;
        if config.server_key.trim().is_empty() {
            return Err("SSLConfig.server_key is empty".into());
        }
        let key = PrivateKeyDer::from_pem_slice(config.server_key.as_bytes())
            .map_err(|e| format!("SSLConfig.server_key holds no usable PEM private key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if config.client_verify {
            if config.custom_ca.trim().is_empty() {
                return Err(
                    "SSLConfig.client_verify is true but custom_ca is empty: client \
                            certificates need a CA to be checked against"
                        .into(),
                );
            }
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates("custom_ca", &config.custom_ca)? {
                roots
                    .add(ca)
                    .map_err(|e| format!("SSLConfig.custom_ca: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("SSLConfig.custom_ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut server = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("SSLConfig.server_key does not fit server_cert: {e}"))?;
        server.alpn_protocols = match alpn {
            Alpn::Grpc => vec![b"h2".to_vec()],
            Alpn::Rest => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        Ok(TlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
        })
    }

    /// Waits for one of the port's [`MAX_HANDSHAKES`] handshake slots. Take it before accepting
    /// the connection it is for, so that the wait happens in the kernel's backlog.
    pub async fn slot(&self) -> HandshakeSlot {
        // The semaphore is never closed, so the permit is always there once acquired.
        let permit = Arc::clone(&self.handshakes).acquire_owned().await.ok();
        HandshakeSlot {
            inner: self.inner.clone(),
            _permit: permit,
        }
    }
}

/// The right to run one handshake; the slot frees when the handshake ends, however it ends.
pub struct HandshakeSlot {
    inner: tokio_rustls::TlsAcceptor,
    _permit: Option<OwnedSemaphorePermit>,
}

impl HandshakeSlot {
    /// Runs the server side of the handshake, within [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.inner.accept(tcp)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}

fn certificates(field: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("SSLConfig.{field} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("SSLConfig.{field} holds no PEM certificate"));
    }
    Ok(certs)
}

/// A listener that hands out connections whose TLS handshake has completed, for `axum::serve`.
/// Handshakes run in their own tasks so that a slow client never holds up the others; the
/// socket closes when the listener is dropped.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: TlsAcceptor) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(async move {
            loop {
                let slot = tls.slot().await;
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "REST accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set");
                }
                let tx = tx.clone();
                tokio::spawn(async move {
                    match slot.accept(tcp).await {
                        Ok(stream) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tf_serving_text_format() {
        let c = SslConfig::parse_text(
            "server_key: \"-----BEGIN PRIVATE KEY-----\\nabc\\n\"\n\
             server_cert: \"cert\" custom_ca: \"ca\"\nclient_verify: true\n",
        )
        .unwrap();
        assert_eq!(c.server_key, "-----BEGIN PRIVATE KEY-----\nabc\n");
        assert_eq!(c.server_cert, "cert");
        assert_eq!(c.custom_ca, "ca");
        assert!(c.client_verify);
        assert!(SslConfig::parse_text("server_kye: \"x\"").is_err());
    }

    #[test]
    fn bad_pem_is_a_clear_error() {
        let c = SslConfig {
            server_cert: "not pem".into(),
            ..Default::default()
        };
        let e = TlsAcceptor::new(&c, Alpn::Grpc).unwrap_err();
        assert!(e.contains("server_cert"), "{e}");
    }
}
