//! TLS (rustls, ring as the one crypto provider) for the cluster's connections:
//!
//! - between raft-nodes on the peer transport: mutual TLS, each side presenting a
//!   certificate signed by the cluster CA and refusing a peer whose certificate is not,
//!   in addition to (inside the TLS session) the cluster-secret handshake;
//! - from the api (and `bookingctl`) to a node's client listener: mutual TLS against the
//!   same CA for the client protocol and the admin API ([`require_client_certificate`]);
//!   `/health/*` and `/metrics` also answer clients without a certificate (probes,
//!   Prometheus), while a presented certificate must always be the CA's;
//! - on the api's public listener: server-side TLS with a certificate from files.
//!
//! Certificates and keys come from PEM files named in the configuration
//! (`deploy/dev-ca.sh` makes a development CA; [`dev`] makes one in memory for tests and
//! `api demo --tls`). A refused handshake is logged with the peer's address and the
//! reason and counted in `seat_ledger_tls_handshake_failures_total{listener, kind}`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The rustls crate, so users of these configurations name its types without a
/// dependency of their own.
pub use rustls;

/// A TLS handshake slower than this is abandoned (and counted as refused).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once per listener; beyond it new connections are closed.
const HANDSHAKES_MAX: usize = 256;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The PEM files of one party of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA's certificate: peers must present certificates it signed.
    pub ca_file: PathBuf,
    /// This party's certificate (chain), signed by the CA.
    pub cert_file: PathBuf,
    /// This party's private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key_file: PathBuf,
}

/// Mutual TLS settings of one party: a server side that requires a client certificate
/// signed by the cluster CA, and a client side that trusts only the cluster CA and
/// presents this party's certificate.
#[derive(Clone)]
pub struct ClusterTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    /// Like `server`, but a client may also come without a certificate (a presented one
    /// must still be signed by the CA): the node's client listener, where probes and
    /// Prometheus reach `/health/*` and `/metrics` and everything else demands one.
    pub server_certificate_optional: Arc<ServerConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls { .. }")
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS {what}: not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("TLS {what}: no certificate in the PEM"));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("TLS key: not a PEM private key: {e}"))
}

fn roots(ca_pem: &[u8]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem, "CA")? {
        roots
            .add(cert)
            .map_err(|e| format!("TLS CA certificate refused: {e}"))?;
    }
    Ok(Arc::new(roots))
}

impl ClusterTls {
    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<ClusterTls, String> {
        let roots = roots(ca_pem)?;
        let chain = certs(cert_pem, "certificate")?;
        let server_with = |optional: bool| -> Result<ServerConfig, String> {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
            let verifier = if optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            }
            .build()
            .map_err(|e| format!("TLS client verifier: {e}"))?;
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS versions: {e}"))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key(key_pem)?)
                .map_err(|e| format!("TLS certificate and key do not fit: {e}"))
        };
        let server = server_with(false)?;
        let server_certificate_optional = server_with(true)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key(key_pem)?)
            .map_err(|e| format!("TLS certificate and key do not fit: {e}"))?;
        Ok(ClusterTls {
            server: Arc::new(server),
            client: Arc::new(client),
            server_certificate_optional: Arc::new(server_certificate_optional),
        })
    }

    pub fn from_files(files: &TlsFiles) -> Result<ClusterTls, String> {
        ClusterTls::from_pem(
            &read(&files.ca_file, "CA file")?,
            &read(&files.cert_file, "certificate file")?,
            &read(&files.key_file, "key file")?,
        )
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server.clone())
    }

    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.client.clone())
    }
}

/// A server-only TLS configuration (no client certificates): the api's public listener.
pub fn public_server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, String> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs(cert_pem, "certificate")?, key(key_pem)?)
        .map_err(|e| format!("TLS certificate and key do not fit: {e}"))?;
    Ok(Arc::new(config))
}

/// The name a client checks the server's certificate against: the host of `host:port`
/// (an IP address or a DNS name).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let (host, _) =
        crate::config::split_host_port(addr).ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?} is no TLS name: {e}"))
}

/// Counts and logs a refused TLS handshake (`kind="refused"`: plain text, a certificate
/// the CA did not sign, no certificate, a timeout).
pub fn refused(listener: &'static str, peer: SocketAddr, reason: &str) {
    metrics::counter!("seat_ledger_tls_handshake_failures_total", "listener" => listener, "kind" => "refused")
        .increment(1);
    tracing::warn!(listener, %peer, reason, "refused TLS connection");
}

/// A failed server-side handshake: a client that closed before finishing (a peer whose
/// call timed out while this node was still starting) is counted as `kind="aborted"`
/// and logged at debug level; anything else is [`refused`].
pub fn handshake_failed(listener: &'static str, peer: SocketAddr, error: &std::io::Error) {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        metrics::counter!("seat_ledger_tls_handshake_failures_total", "listener" => listener, "kind" => "aborted")
            .increment(1);
        tracing::debug!(listener, %peer, %error, "TLS client left during the handshake");
    } else {
        refused(listener, peer, &error.to_string());
    }
}

/// A TLS client as axum's `ConnectInfo` of a [`TlsListener`]: its address, and whether
/// it presented a certificate (which the handshake then verified against the CA).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr {
    pub addr: SocketAddr,
    pub certified: bool,
}

/// A listener for `axum::serve` that completes TLS handshakes in their own tasks (a slow
/// or hostile client never stalls the accept loop) and hands over only established
/// sessions. Plain text and certificates the configuration refuses never reach the app.
pub struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, PeerAddr)>,
    local: SocketAddr,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// `name` labels the metric and log lines (`api`, `node-client`).
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        name: &'static str,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (sender, ready) = mpsc::channel(64);
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, listener = name, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    refused(name, peer, "too many TLS handshakes in progress");
                    continue;
                };
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let certified = tls.get_ref().1.peer_certificates().is_some();
                            let _ = sender
                                .send((
                                    tls,
                                    PeerAddr {
                                        addr: peer,
                                        certified,
                                    },
                                ))
                                .await;
                        }
                        Ok(Err(error)) => handshake_failed(name, peer, &error),
                        Err(_) => refused(name, peer, "TLS handshake timed out"),
                    }
                    drop(slot);
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some((io, peer)) => (io, peer),
            // The acceptor task ended (it only does when aborted): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(PeerAddr {
            addr: self.local,
            certified: false,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> PeerAddr {
        *stream.remote_addr()
    }
}

/// Paths a TLS client without a certificate may reach on a node's client listener:
/// probes and Prometheus.
pub const OPEN_PATHS: &[&str] = &["/health/live", "/health/ready", "/metrics"];

/// Middleware of a node's TLS client listener: the client protocol and the admin API
/// need a client certificate signed by the cluster CA (verified in the handshake);
/// health and metrics do not. Refusals answer 403 and are counted as
/// `seat_ledger_tls_handshake_failures_total{listener="node-client",kind="no-certificate"}`.
pub async fn require_client_certificate(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<PeerAddr>>()
        .map(|info| info.0);
    let certified = peer.is_some_and(|peer| peer.certified);
    if certified || OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    metrics::counter!("seat_ledger_tls_handshake_failures_total", "listener" => "node-client", "kind" => "no-certificate")
        .increment(1);
    tracing::warn!(peer = ?peer.map(|p| p.addr), path = request.uri().path(), "refused a request without a client certificate");
    (
        axum::http::StatusCode::FORBIDDEN,
        "this listener serves the client protocol and the admin API only to clients with a \
         certificate signed by the cluster CA",
    )
        .into_response()
}

/// Development certificates made in memory (tests, `api demo --tls`); `deploy/dev-ca.sh`
/// makes the same kind of files with openssl.
pub mod dev {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };

    /// A certificate authority.
    pub struct DevCa {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    /// A certificate and its key, as PEM.
    #[derive(Clone, Debug)]
    pub struct Issued {
        pub cert_pem: String,
        pub key_pem: String,
    }

    impl DevCa {
        pub fn new(name: &str) -> Result<DevCa, String> {
            let key = KeyPair::generate().map_err(|e| e.to_string())?;
            let mut params =
                CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
            Ok(DevCa { cert, key })
        }

        pub fn cert_pem(&self) -> String {
            self.cert.pem()
        }

        /// A certificate for `common_name`, valid as server and client, for the DNS
        /// names and IP addresses in `names`.
        pub fn issue(&self, common_name: &str, names: &[&str]) -> Result<Issued, String> {
            let key = KeyPair::generate().map_err(|e| e.to_string())?;
            let mut params =
                CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            for name in names {
                params.subject_alt_names.push(match name.parse() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(
                        (*name)
                            .try_into()
                            .map_err(|e: rcgen::Error| e.to_string())?,
                    ),
                });
            }
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params
                .signed_by(&key, &self.cert, &self.key)
                .map_err(|e| e.to_string())?;
            Ok(Issued {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_build_from_dev_certificates_and_bad_pem_is_named() {
        let ca = dev::DevCa::new("test CA").unwrap();
        let node = ca.issue("node-1", &["127.0.0.1", "localhost"]).unwrap();
        ClusterTls::from_pem(
            ca.cert_pem().as_bytes(),
            node.cert_pem.as_bytes(),
            node.key_pem.as_bytes(),
        )
        .unwrap();
        public_server_config(node.cert_pem.as_bytes(), node.key_pem.as_bytes()).unwrap();
        let error = ClusterTls::from_pem(b"nonsense", node.cert_pem.as_bytes(), b"x").unwrap_err();
        assert!(error.contains("CA"), "{error}");
        let other = ca.issue("node-2", &["127.0.0.1"]).unwrap();
        let error = ClusterTls::from_pem(
            ca.cert_pem().as_bytes(),
            node.cert_pem.as_bytes(),
            other.key_pem.as_bytes(),
        )
        .unwrap_err();
        assert!(error.contains("do not fit"), "{error}");
        assert!(server_name("127.0.0.1:7000").is_ok());
        assert!(server_name("raft-node-0.raft-node:7000").is_ok());
        assert!(server_name("nowhere").is_err());
    }
}
