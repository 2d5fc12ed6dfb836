//! Authenticated, multiplexed peer RPC over TCP: opaque request bytes in, opaque response
//! bytes out.
//!
//! This module owns the peer listener loop ([`serve`]), the client side ([`PeerClient`]: one
//! TCP connection per target node, shared by every shard and caller of the process), framing,
//! the cluster-secret handshake, request multiplexing, per-call timeouts and reconnect backoff.
//! It must not know Raft: it never looks inside a payload, never interprets a shard name or a
//! method code, and never retries a call (whether a retry is safe is the caller's decision).
//! Callers pick `u8` method codes and route on `(shard, method)` in their [`RequestHandler`].
//!
//! # Frame layout
//!
//! Every frame is a big-endian `u32` length followed by that many body bytes (tokio-util's
//! [`LengthDelimitedCodec`]). A length above the configured `frame_bytes_max` (default
//! [`FRAME_BYTES_MAX`]) is refused before its body is buffered. The body is the bincode
//! (standard configuration) encoding of one private `Frame` value:
//!
//! - `Challenge { nonce }`, server to client, first frame of a connection;
//! - `Hello { cluster_id, node_id, nonce, proof }`, client to server;
//! - `HelloOk { node_id, proof }` or `Refused { reason }`, server to client;
//! - then any number of `Request { id, shard, method, payload }` (client to server) and
//!   `Response { id, result }` (server to client), in any order; responses are matched to
//!   requests by `id`, so a slow request never holds up a fast one behind it.
//!
//! # Handshake
//!
//! Both sides derive a key with `blake3::derive_key("seat-ledger peer v1", secret)`. The
//! server opens with a fresh random nonce; the client answers with its node id, its own nonce
//! and a keyed BLAKE3 MAC over both nonces, its node id and the cluster id. Because the MAC
//! covers the server's fresh nonce, a recorded `Hello` cannot be replayed. The server answers
//! with a MAC over the same nonces in the other direction (with a different role label, so a
//! MAC can never be reflected back), which proves to the client that the server knows the
//! secret too; when the server was started with [`serve_as_node`] it also names its node id,
//! and a client that reached the wrong node refuses the connection. MACs are compared as
//! [`blake3::Hash`] values, whose equality is constant-time.
//!
//! Until the peer has authenticated, frames are limited to a few KiB, so an unauthenticated
//! connection can make the server buffer next to nothing.
//!
//! A wrong secret or cluster id, a malformed or oversized frame, a first frame that is not
//! `Hello`, or a handshake slower than `handshake_timeout` makes the server log a warning with
//! the peer's address and the reason and close the connection. Nothing from an
//! unauthenticated connection ever reaches the [`RequestHandler`].
//!
//! # Concurrency and back-pressure
//!
//! The server handles the requests of one connection concurrently (one task each, at most
//! `max_in_flight_per_connection` at once; beyond that it stops reading the socket), and one
//! writer task per connection sends responses as they complete. It accepts at most
//! `max_connections` connections; extra ones are closed at once. The client sends through one
//! writer task per connection and a reader task routes responses to waiting calls.
//!
//! # Failure semantics
//!
//! When a client connection fails or closes, every call waiting on it fails with
//! [`TransportError::Closed`]; the next call reconnects. A failed connection attempt fails
//! with [`TransportError::Unreachable`] (or [`TransportError::Rejected`] when the handshake
//! was refused) and starts an exponential backoff (`reconnect_backoff_min` doubling up to
//! `reconnect_backoff_max`); until it expires, calls to that node fail fast with
//! `Unreachable`. A call whose request may already have been sent can fail with `Closed` or
//! `Timeout` even though the handler ran: the transport gives at-most-once delivery.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::{Encoder, FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

/// Default limit on one frame's body, in bytes. Snapshots travel as one request, so this
/// bounds the largest snapshot a shard can ship as well as the memory one frame may claim.
pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest `frame_bytes_max` that [`TransportConfig::validate`] accepts. It also bounds what
/// the bincode decoder may claim, as a second line of defence behind the frame limit.
pub const FRAME_BYTES_CEILING: usize = 1 << 30;

/// Smallest `frame_bytes_max` that [`TransportConfig::validate`] accepts; handshake frames
/// must always fit.
pub const FRAME_BYTES_MIN: usize = 4096;

/// Shortest cluster secret that [`TransportConfig::validate`] accepts.
pub const SECRET_BYTES_MIN: usize = 16;

/// Limit on frames before the peer has authenticated; far below the general limit so that
/// unauthenticated connections cannot make the server buffer much.
const HANDSHAKE_FRAME_BYTES_MAX: usize = FRAME_BYTES_MIN;

/// Longest cluster id that [`TransportConfig::validate`] accepts.
pub const CLUSTER_ID_BYTES_MAX: usize = 256;

/// Context string of the key derivation; changing it makes old and new nodes incompatible.
const KEY_CONTEXT: &str = "seat-ledger peer v1";

/// Frames queued for one connection's writer before senders wait.
const WRITE_QUEUE_FRAMES: usize = 1024;

/// The writer coalesces queued frames into one write up to about this many bytes.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// How long the accept loop pauses after an accept error (for example, out of file
/// descriptors) so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Settings shared by the server and the client side of the transport.
///
/// All nodes of a cluster must use the same `cluster_id`, `secret` and, in practice, the same
/// `frame_bytes_max` (a frame one side may send and the other may not read closes the
/// connection).
#[derive(Clone)]
pub struct TransportConfig {
    /// Name of the cluster; a peer of another cluster is refused even with the same secret.
    pub cluster_id: String,
    /// Shared cluster secret, at least [`SECRET_BYTES_MIN`] bytes.
    pub secret: Vec<u8>,
    /// Largest frame body, in bytes, accepted or sent.
    pub frame_bytes_max: usize,
    /// Limit on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Limit on the whole handshake, on both sides.
    pub handshake_timeout: Duration,
    /// Connections the server holds at once, authenticated or not.
    pub max_connections: usize,
    /// Requests of one connection the server handles at once.
    pub max_in_flight_per_connection: usize,
    /// First delay after a failed connection attempt.
    pub reconnect_backoff_min: Duration,
    /// Cap of the doubling delay after repeated failed connection attempts.
    pub reconnect_backoff_max: Duration,
    /// Mutual TLS against the cluster CA (both sides present CA-signed certificates);
    /// `None` is plain TCP, still authenticated by the cluster secret.
    pub tls: Option<crate::tls::ClusterTls>,
}

impl TransportConfig {
    /// The default settings for a cluster: 64 MiB frames, 3 s connect and 5 s handshake
    /// timeouts, 256 connections, 1024 requests in flight per connection, and a reconnect
    /// backoff from 50 ms doubling to 2 s.
    pub fn new(cluster_id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        TransportConfig {
            cluster_id: cluster_id.into(),
            secret: secret.into(),
            frame_bytes_max: FRAME_BYTES_MAX,
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            max_connections: 256,
            max_in_flight_per_connection: 1024,
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            tls: None,
        }
    }

    /// Checks the settings, naming the first one that is unusable.
    pub fn validate(&self) -> Result<(), TransportConfigError> {
        let fail = |message: String| Err(TransportConfigError(message));
        if self.cluster_id.is_empty() {
            return fail("cluster_id must not be empty".into());
        }
        if self.cluster_id.len() > CLUSTER_ID_BYTES_MAX {
            return fail(format!(
                "cluster_id is {} bytes, at most {CLUSTER_ID_BYTES_MAX} are allowed",
                self.cluster_id.len()
            ));
        }
        if self.secret.len() < SECRET_BYTES_MIN {
            return fail(format!(
                "the cluster secret is {} bytes, at least {SECRET_BYTES_MIN} are required",
                self.secret.len()
            ));
        }
        if !(FRAME_BYTES_MIN..=FRAME_BYTES_CEILING).contains(&self.frame_bytes_max) {
            return fail(format!(
                "frame_bytes_max is {}, it must be between {FRAME_BYTES_MIN} and \
                 {FRAME_BYTES_CEILING}",
                self.frame_bytes_max
            ));
        }
        let durations = [
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
            ("reconnect_backoff_max", self.reconnect_backoff_max),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return fail(format!("{name} must be greater than zero"));
            }
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return fail("reconnect_backoff_min must not exceed reconnect_backoff_max".into());
        }
        // Semaphore::new panics above MAX_PERMITS, so both counts are bounded here.
        let counts = [
            ("max_connections", self.max_connections),
            (
                "max_in_flight_per_connection",
                self.max_in_flight_per_connection,
            ),
        ];
        for (name, value) in counts {
            if value == 0 {
                return fail(format!("{name} must be greater than zero"));
            }
            if value > Semaphore::MAX_PERMITS {
                return fail(format!("{name} must be at most {}", Semaphore::MAX_PERMITS));
            }
        }
        Ok(())
    }

    /// The MAC key; derived rather than used raw so that the secret can serve other purposes
    /// under other derivation contexts without the MACs of one helping to forge the other.
    fn key(&self) -> [u8; 32] {
        blake3::derive_key(KEY_CONTEXT, &self.secret)
    }
}

impl fmt::Debug for TransportConfig {
    /// Never prints the secret, so that configs can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportConfig")
            .field("cluster_id", &self.cluster_id)
            .field(
                "secret",
                &format_args!("<{} bytes redacted>", self.secret.len()),
            )
            .field("frame_bytes_max", &self.frame_bytes_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_connections", &self.max_connections)
            .field(
                "max_in_flight_per_connection",
                &self.max_in_flight_per_connection,
            )
            .field("reconnect_backoff_min", &self.reconnect_backoff_min)
            .field("reconnect_backoff_max", &self.reconnect_backoff_max)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// An unusable [`TransportConfig`], with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport config: {0}")]
pub struct TransportConfigError(pub String);

/// Why a [`PeerClient::call`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection to the node could be made, or the node is in reconnect backoff after
    /// such a failure. The request was not sent.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No response arrived within the call's timeout. The request may have been handled.
    #[error("peer call timed out")]
    Timeout,
    /// The connection closed before the response arrived. The request may have been handled.
    #[error("peer connection closed before the response arrived")]
    Closed,
    /// The remote handler returned this error.
    #[error("peer handler failed: {0}")]
    Remote(String),
    /// The request would exceed the frame limit, so it was not sent.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { size: usize, max: usize },
    /// The peer refused the handshake (wrong secret or cluster id, or the address belongs to
    /// another node), or could not prove that it knows the cluster secret.
    #[error("peer handshake rejected: {0}")]
    Rejected(String),
    /// This client's own [`TransportConfig`] is unusable, so nothing can be sent.
    #[error("{0}")]
    InvalidConfig(TransportConfigError),
}

/// Serves requests that arrive over authenticated peer connections.
///
/// `from_node` is the node id the peer proved with the cluster secret; `shard`, `method` and
/// `payload` are exactly what the caller passed to [`PeerClient::call`]. An `Err` travels back
/// to the caller as [`TransportError::Remote`]. A panic in the handler is caught and reported
/// the same way. The handler is called concurrently, also for requests of one connection.
pub trait RequestHandler: Send + Sync + 'static {
    fn handle(
        &self,
        from_node: u64,
        shard: String,
        method: u8,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>>;
}

/// One frame body. Private: the wire format is this module's business alone.
#[derive(bincode::Encode, bincode::Decode)]
enum Frame {
    Challenge {
        nonce: [u8; 32],
    },
    Hello {
        cluster_id: String,
        node_id: u64,
        nonce: [u8; 32],
        proof: [u8; 32],
    },
    HelloOk {
        node_id: Option<u64>,
        proof: [u8; 32],
    },
    Refused {
        reason: String,
    },
    Request {
        id: u64,
        shard: String,
        method: u8,
        payload: Vec<u8>,
    },
    Response {
        id: u64,
        result: Result<Vec<u8>, String>,
    },
}

impl Frame {
    /// The frame's name, for log messages that must not dump payloads.
    fn kind(&self) -> &'static str {
        match self {
            Frame::Challenge { .. } => "Challenge",
            Frame::Hello { .. } => "Hello",
            Frame::HelloOk { .. } => "HelloOk",
            Frame::Refused { .. } => "Refused",
            Frame::Request { .. } => "Request",
            Frame::Response { .. } => "Response",
        }
    }
}

/// The two halves of a peer connection: plain TCP, or a TLS session over it.
type PeerRead = Box<dyn AsyncRead + Send + Unpin>;
type PeerWrite = Box<dyn AsyncWrite + Send + Unpin>;
type FrameReader = FramedRead<PeerRead, LengthDelimitedCodec>;

/// Splits a stream into boxed halves.
fn split_stream<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
    stream: S,
) -> (PeerRead, PeerWrite) {
    let (read, write) = tokio::io::split(stream);
    (Box::new(read), Box::new(write))
}

fn frame_codec(frame_bytes_max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(frame_bytes_max)
        .new_codec()
}

/// Encodes a frame body, refusing one that the peer would refuse to read anyway.
fn encode_body(frame: &Frame, frame_bytes_max: usize) -> Result<Bytes, TransportError> {
    let body = bincode::encode_to_vec(frame, bincode::config::standard())
        .map_err(|e| TransportError::Unreachable(format!("cannot encode a frame: {e}")))?;
    if body.len() > frame_bytes_max {
        return Err(TransportError::FrameTooLarge {
            size: body.len(),
            max: frame_bytes_max,
        });
    }
    Ok(Bytes::from(body))
}

/// Decodes a frame body; any bytes left over mean the peer speaks another protocol.
fn decode_body(body: &[u8]) -> Result<Frame, String> {
    let config = bincode::config::standard().with_limit::<FRAME_BYTES_CEILING>();
    let (frame, used) = bincode::decode_from_slice::<Frame, _>(body, config)
        .map_err(|e| format!("malformed frame: {e}"))?;
    if used != body.len() {
        return Err(format!(
            "malformed frame: {} trailing bytes",
            body.len() - used
        ));
    }
    Ok(frame)
}

/// The kind of the frame `body` decodes to, for the fuzz targets (`crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn frame_kind(body: &[u8]) -> Result<&'static str, String> {
    decode_body(body).map(|frame| frame.kind())
}

/// One encoded body of each frame kind, the fuzz targets' seed corpus.
#[cfg(feature = "fuzzing")]
pub(crate) fn sample_frame_bodies() -> Vec<Vec<u8>> {
    let frames = [
        Frame::Challenge { nonce: [7; 32] },
        Frame::Hello {
            cluster_id: "demo".into(),
            node_id: 2,
            nonce: [1; 32],
            proof: [2; 32],
        },
        Frame::HelloOk {
            node_id: Some(1),
            proof: [3; 32],
        },
        Frame::Refused {
            reason: "wrong cluster".into(),
        },
        Frame::Request {
            id: 9,
            shard: "mumbai".into(),
            method: 2,
            payload: vec![0, 1, 2],
        },
        Frame::Response {
            id: 9,
            result: Err("not leader".into()),
        },
    ];
    frames
        .iter()
        .filter_map(|frame| encode_body(frame, FRAME_BYTES_CEILING).ok())
        .map(|body| body.to_vec())
        .collect()
}

/// Reads the next frame; `Ok(None)` is a clean close between frames.
async fn read_frame(reader: &mut FrameReader) -> Result<Option<Frame>, String> {
    match reader.next().await {
        None => Ok(None),
        // The codec reports an oversized length prefix here, before buffering the body.
        Some(Err(e)) => Err(format!("unreadable frame: {e}")),
        Some(Ok(body)) => decode_body(&body).map(Some),
    }
}

/// Writes one handshake frame directly, before the writer task exists.
async fn write_frame(writer: &mut PeerWrite, frame: &Frame) -> Result<(), String> {
    let body = encode_body(frame, HANDSHAKE_FRAME_BYTES_MAX).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(body.len() + 4);
    frame_codec(HANDSHAKE_FRAME_BYTES_MAX)
        .encode(body, &mut buf)
        .map_err(|e| format!("cannot frame: {e}"))?;
    writer
        .write_all(&buf)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    // A TLS session may hold records back until flushed.
    writer
        .flush()
        .await
        .map_err(|e| format!("write failed: {e}"))
}

/// Sends encoded frame bodies from `queue` until the queue closes or `stop` fires, coalescing
/// frames that are already queued into one write so that a busy connection makes few system
/// calls.
async fn write_loop(
    mut writer: PeerWrite,
    mut queue: mpsc::Receiver<Bytes>,
    frame_bytes_max: usize,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut codec = frame_codec(frame_bytes_max);
    let mut buf = BytesMut::new();
    loop {
        let body = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            body = queue.recv() => match body {
                Some(body) => body,
                None => return Ok(()),
            },
        };
        codec
            .encode(body, &mut buf)
            .map_err(|e| format!("cannot frame: {e}"))?;
        while buf.len() < WRITE_BATCH_BYTES {
            match queue.try_recv() {
                Ok(body) => codec
                    .encode(body, &mut buf)
                    .map_err(|e| format!("cannot frame: {e}"))?,
                Err(_) => break,
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            written = async {
                writer.write_all(&buf).await?;
                writer.flush().await
            } => {
                written.map_err(|e| format!("write failed: {e}"))?;
            }
        }
        buf.clear();
        // One snapshot-sized frame should not pin its buffer for the connection's lifetime.
        if buf.capacity() > 4 * WRITE_BATCH_BYTES {
            buf = BytesMut::new();
        }
    }
}

/// A fresh 32-byte nonce: a keyed BLAKE3 of a counter and the time, keyed by a per-process
/// seed from the operating system's random source. BLAKE3 in keyed mode is a PRF, so nonces
/// are unpredictable without the seed and never repeat within a process.
fn fresh_nonce() -> [u8; 32] {
    static SEED: OnceLock<[u8; 32]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(|| {
        let mut hasher = blake3::Hasher::new_derive_key("seat-ledger peer nonce seed v1");
        let mut os_random = [0u8; 32];
        match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut os_random)) {
            Ok(()) => {
                hasher.update(&os_random);
            }
            Err(e) => warn!(error = %e, "no OS random source; handshake nonces are weaker"),
        }
        hasher.update(&unix_nanos().to_le_bytes());
        hasher.update(&std::process::id().to_le_bytes());
        hasher.update(format!("{:?}", std::thread::current().id()).as_bytes());
        *hasher.finalize().as_bytes()
    });
    let mut hasher = blake3::Hasher::new_keyed(seed);
    hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hasher.update(&unix_nanos().to_le_bytes());
    *hasher.finalize().as_bytes()
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The client's MAC: proves the secret, bound to the server's fresh nonce.
fn client_proof(
    key: &[u8; 32],
    cluster_id: &str,
    server_nonce: &[u8; 32],
    client_nonce: &[u8; 32],
    client_node: u64,
) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(b"client");
    hasher.update(server_nonce);
    hasher.update(client_nonce);
    hasher.update(&client_node.to_be_bytes());
    hasher.update(cluster_id.as_bytes());
    hasher.finalize()
}

/// The server's MAC: proves the secret, bound to the client's fresh nonce and to the node id
/// the server claims.
fn server_proof(
    key: &[u8; 32],
    cluster_id: &str,
    server_nonce: &[u8; 32],
    client_nonce: &[u8; 32],
    client_node: u64,
    server_node: Option<u64>,
) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(b"server");
    hasher.update(client_nonce);
    hasher.update(server_nonce);
    hasher.update(&client_node.to_be_bytes());
    match server_node {
        Some(id) => hasher.update(&[1]).update(&id.to_be_bytes()),
        None => hasher.update(&[0]),
    };
    hasher.update(cluster_id.as_bytes());
    hasher.finalize()
}

/// Locks a mutex even if a panicking thread poisoned it: every critical section in this
/// module leaves its data consistent at each step, so the data is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ------------------------------------------------------------------------------------------
// Server
// ------------------------------------------------------------------------------------------

/// Counters of one server, for tests that must see how many connections clients made.
#[derive(Default)]
struct ServerStats {
    accepted: AtomicU64,
    authenticated: AtomicU64,
}

/// What every connection task of one server needs.
struct ServerContext {
    cluster_id: String,
    key: [u8; 32],
    node_id: Option<u64>,
    frame_bytes_max: usize,
    handshake_timeout: Duration,
    max_in_flight: usize,
    handler: Arc<dyn RequestHandler>,
    stats: Arc<ServerStats>,
    /// Mutual TLS against the cluster CA, when configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves peer requests on `listener` until `shutdown` completes, then closes every
/// connection and returns. Handlers already running are not cancelled (a handler may be
/// midway through work that should finish); their responses are discarded.
///
/// The server does not name its node id in the handshake, so clients cannot detect that an
/// address belongs to another node; prefer [`serve_as_node`]. An invalid `config` is logged
/// as an error and the function returns at once (check [`TransportConfig::validate`] first).
pub async fn serve(
    listener: TcpListener,
    config: TransportConfig,
    handler: Arc<dyn RequestHandler>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let stats = Arc::new(ServerStats::default());
    serve_inner(listener, config, None, handler, shutdown, stats).await;
}

/// Like [`serve`], and the server proves to each client that it is node `my_node_id`, so a
/// client that dialled an address now used by another node refuses the connection instead
/// of delivering that node's messages to the wrong process.
pub async fn serve_as_node(
    listener: TcpListener,
    config: TransportConfig,
    my_node_id: u64,
    handler: Arc<dyn RequestHandler>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let stats = Arc::new(ServerStats::default());
    serve_inner(listener, config, Some(my_node_id), handler, shutdown, stats).await;
}

async fn serve_inner(
    listener: TcpListener,
    config: TransportConfig,
    node_id: Option<u64>,
    handler: Arc<dyn RequestHandler>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stats: Arc<ServerStats>,
) {
    if let Err(e) = config.validate() {
        error!(error = %e, "peer transport server not started");
        return;
    }
    let context = Arc::new(ServerContext {
        key: config.key(),
        cluster_id: config.cluster_id.clone(),
        node_id,
        frame_bytes_max: config.frame_bytes_max,
        handshake_timeout: config.handshake_timeout,
        max_in_flight: config.max_in_flight_per_connection,
        handler,
        stats,
        tls: config.tls.as_ref().map(|tls| tls.acceptor()),
    });
    let connection_slots = Arc::new(Semaphore::new(config.max_connections));
    let stop = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    context.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    // Refusing at once, rather than waiting for a slot, keeps a flood of idle
                    // connections from stalling the accept loop for genuine peers.
                    let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
                        warn!(%peer, limit = config.max_connections,
                            "refused peer connection: too many connections");
                        continue;
                    };
                    let (context, stop) = (context.clone(), stop.child_token());
                    connections.spawn(async move {
                        serve_connection(stream, peer, context, stop).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "peer listener accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    debug!("peer transport server shutting down");
    stop.cancel();
    connections.shutdown().await;
}

/// Runs one server-side connection: the handshake, then requests until either side closes.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<ServerContext>,
    stop: CancellationToken,
) {
    // Small requests and responses (votes, heartbeats) must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    // With TLS, the peer must first present a certificate signed by the cluster CA; only
    // then does the cluster-secret handshake run, inside the TLS session.
    let (read_half, mut write_half) = match &context.tls {
        Some(acceptor) => {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = tokio::time::timeout(context.handshake_timeout, acceptor.accept(stream)) => accepted,
            };
            match accepted {
                Ok(Ok(tls)) => split_stream(tls),
                Ok(Err(error)) => {
                    crate::tls::handshake_failed("peer", peer, &error);
                    return;
                }
                Err(_) => {
                    crate::tls::refused("peer", peer, "TLS handshake timed out");
                    return;
                }
            }
        }
        None => split_stream(stream),
    };
    // Until the peer has proved the secret it may not make us buffer more than a handshake.
    let mut reader = FramedRead::new(read_half, frame_codec(HANDSHAKE_FRAME_BYTES_MAX));
    let handshake = tokio::select! {
        _ = stop.cancelled() => return,
        result = tokio::time::timeout(
            context.handshake_timeout,
            server_handshake(&mut reader, &mut write_half, &context),
        ) => result,
    };
    let from_node = match handshake {
        Ok(Ok(node)) => node,
        Ok(Err(reason)) => {
            warn!(%peer, %reason, "refused peer connection");
            return;
        }
        Err(_) => {
            warn!(%peer, reason = "handshake timed out", "refused peer connection");
            return;
        }
    };
    reader
        .decoder_mut()
        .set_max_frame_length(context.frame_bytes_max);
    context.stats.authenticated.fetch_add(1, Ordering::Relaxed);
    debug!(%peer, from_node, "peer connected");

    let (queue, queued) = mpsc::channel::<Bytes>(WRITE_QUEUE_FRAMES);
    let writer = tokio::spawn({
        let stop = stop.clone();
        let frame_bytes_max = context.frame_bytes_max;
        async move {
            let result = write_loop(write_half, queued, frame_bytes_max, stop.clone()).await;
            // A dead writer means the connection is unusable: stop reading too.
            stop.cancel();
            result
        }
    });
    let in_flight = Arc::new(Semaphore::new(context.max_in_flight));
    let outcome: Result<&str, String> = loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => break Ok("connection stopped"),
            frame = read_frame(&mut reader) => frame,
        };
        let (id, shard, method, payload) = match frame {
            Ok(Some(Frame::Request {
                id,
                shard,
                method,
                payload,
            })) => (id, shard, method, payload),
            Ok(Some(other)) => break Err(format!("unexpected {} frame", other.kind())),
            Ok(None) => break Ok("closed by peer"),
            Err(reason) => break Err(reason),
        };
        // Waiting for a permit stops reading the socket, which pushes back on the client.
        let permit = tokio::select! {
            _ = stop.cancelled() => break Ok("connection stopped"),
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break Ok("connection stopped"),
            },
        };
        let (handler, queue) = (context.handler.clone(), queue.clone());
        let frame_bytes_max = context.frame_bytes_max;
        tokio::spawn(async move {
            // Calling `handle` inside the guarded future also catches a panic that happens
            // before the handler's future is built.
            let handled =
                AssertUnwindSafe(
                    async move { handler.handle(from_node, shard, method, payload).await },
                )
                .catch_unwind()
                .await;
            let result = handled.unwrap_or_else(|_| Err("peer request handler panicked".into()));
            if let Some(body) = response_body(id, result, frame_bytes_max) {
                // An error means the connection is gone; the caller sees Closed or Timeout.
                let _ = queue.send(body).await;
            }
            drop(permit);
        });
    };
    stop.cancel();
    drop(queue);
    let written = writer.await;
    match (outcome, written) {
        (Err(reason), _) => warn!(%peer, from_node, %reason, "closed peer connection"),
        (Ok(_), Ok(Err(reason))) => debug!(%peer, from_node, %reason, "peer connection lost"),
        (Ok(reason), _) => debug!(%peer, from_node, %reason, "peer connection closed"),
    }
}

/// Server side of the handshake; returns the authenticated node id of the client.
async fn server_handshake(
    reader: &mut FrameReader,
    writer: &mut PeerWrite,
    context: &ServerContext,
) -> Result<u64, String> {
    let server_nonce = fresh_nonce();
    write_frame(
        writer,
        &Frame::Challenge {
            nonce: server_nonce,
        },
    )
    .await?;
    let (cluster_id, node_id, client_nonce, proof) = match read_frame(reader).await? {
        Some(Frame::Hello {
            cluster_id,
            node_id,
            nonce,
            proof,
        }) => (cluster_id, node_id, nonce, proof),
        Some(other) => {
            let reason = format!("first frame was {} instead of Hello", other.kind());
            return Err(refuse(writer, reason).await);
        }
        None => return Err("closed before Hello".into()),
    };
    if cluster_id != context.cluster_id {
        let reason = "cluster id mismatch".to_string();
        return Err(refuse(writer, reason).await);
    }
    let expected = client_proof(
        &context.key,
        &cluster_id,
        &server_nonce,
        &client_nonce,
        node_id,
    );
    if blake3::Hash::from(proof) != expected {
        let reason = format!("authentication failed for claimed node {node_id}");
        return Err(refuse(writer, reason).await);
    }
    let proof = server_proof(
        &context.key,
        &cluster_id,
        &server_nonce,
        &client_nonce,
        node_id,
        context.node_id,
    );
    let ok = Frame::HelloOk {
        node_id: context.node_id,
        proof: *proof.as_bytes(),
    };
    write_frame(writer, &ok).await?;
    Ok(node_id)
}

/// Tells the client why it is refused (best effort) and returns the reason for the log.
async fn refuse(writer: &mut PeerWrite, reason: String) -> String {
    let _ = write_frame(
        writer,
        &Frame::Refused {
            reason: reason.clone(),
        },
    )
    .await;
    reason
}

/// Encodes a response, replacing one too large for a frame with an error the caller can see.
fn response_body(id: u64, result: Result<Vec<u8>, String>, max: usize) -> Option<Bytes> {
    match encode_body(&Frame::Response { id, result }, max) {
        Ok(body) => Some(body),
        Err(e) => {
            let message = format!("response not sent: {e}");
            warn!(request = id, %message, "peer response dropped");
            encode_body(
                &Frame::Response {
                    id,
                    result: Err(message),
                },
                max,
            )
            .ok()
        }
    }
}

// ------------------------------------------------------------------------------------------
// Client
// ------------------------------------------------------------------------------------------

type Reply = Result<Vec<u8>, TransportError>;

/// The state one connection's reader, writer and callers share.
struct ConnShared {
    /// Calls waiting for a response, by request id; `None` once the connection is closed, so
    /// that a call registering after the close fails instead of waiting forever.
    pending: Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>,
    closed: CancellationToken,
}

impl ConnShared {
    fn register(&self, id: u64) -> Result<oneshot::Receiver<Reply>, TransportError> {
        let mut pending = lock(&self.pending);
        let map = pending.as_mut().ok_or(TransportError::Closed)?;
        let (sender, receiver) = oneshot::channel();
        map.insert(id, sender);
        Ok(receiver)
    }

    fn complete(&self, id: u64, reply: Reply) {
        let sender = lock(&self.pending).as_mut().and_then(|map| map.remove(&id));
        match sender {
            // The caller may have given up meanwhile; then nobody wants the reply.
            Some(sender) => {
                let _ = sender.send(reply);
            }
            None => debug!(
                request = id,
                "response for a call that is no longer waiting"
            ),
        }
    }

    fn forget(&self, id: u64) {
        if let Some(map) = lock(&self.pending).as_mut() {
            map.remove(&id);
        }
    }

    /// Fails every waiting call and stops the connection's tasks.
    fn close(&self, error: TransportError) {
        let drained = lock(&self.pending).take();
        self.closed.cancel();
        for (_, sender) in drained.into_iter().flatten() {
            let _ = sender.send(Err(error.clone()));
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    #[cfg(test)]
    fn pending_count(&self) -> usize {
        lock(&self.pending).as_ref().map_or(0, HashMap::len)
    }
}

/// One established connection to a peer. Dropping the last handle closes the writer's
/// queue, which ends the writer and then the connection.
struct Conn {
    addr: String,
    queue: mpsc::Sender<Bytes>,
    shared: Arc<ConnShared>,
}

/// Removes a call's pending entry when the call ends in any way, including by its timeout
/// or by the caller dropping the call's future.
struct PendingGuard<'a> {
    shared: &'a ConnShared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.forget(self.id);
    }
}

/// The connection to one target node, or the backoff after failing to make one.
#[derive(Default)]
struct PeerState {
    conn: Option<Arc<Conn>>,
    failures: u32,
    retry_at: Option<Instant>,
    failed_addr: String,
    last_error: String,
}

#[derive(Default)]
struct PeerSlot {
    /// An async mutex, held while connecting, so that concurrent callers share one attempt.
    state: tokio::sync::Mutex<PeerState>,
}

struct ClientInner {
    config: TransportConfig,
    invalid: Option<TransportConfigError>,
    key: [u8; 32],
    my_node_id: u64,
    next_id: AtomicU64,
    peers: Mutex<HashMap<u64, Arc<PeerSlot>>>,
}

/// Calls [`RequestHandler`]s of other nodes. Cheap to clone; all clones share one connection
/// per target node.
#[derive(Clone)]
pub struct PeerClient {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClient")
            .field("my_node_id", &self.inner.my_node_id)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    /// A client that authenticates as `my_node_id`. Connections are made lazily, on the
    /// first call to each node. With an invalid `config` every call fails with
    /// [`TransportError::InvalidConfig`]; use [`PeerClient::try_new`] to find out up front.
    pub fn new(config: TransportConfig, my_node_id: u64) -> Self {
        let invalid = config.validate().err();
        if let Some(e) = &invalid {
            error!(error = %e, "peer transport client cannot send");
        }
        PeerClient {
            inner: Arc::new(ClientInner {
                key: config.key(),
                config,
                invalid,
                my_node_id,
                next_id: AtomicU64::new(1),
                peers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Like [`PeerClient::new`], but refuses an invalid `config`.
    pub fn try_new(config: TransportConfig, my_node_id: u64) -> Result<Self, TransportConfigError> {
        config.validate()?;
        Ok(PeerClient::new(config, my_node_id))
    }

    /// The node id this client authenticates as.
    pub fn node_id(&self) -> u64 {
        self.inner.my_node_id
    }

    /// Sends one request to `target_node` at `addr` and waits for its response.
    ///
    /// `timeout` bounds the whole call, including connecting. The connection to
    /// `target_node` is shared with every other caller; if `addr` differs from the address
    /// of the current connection, that connection is closed and a new one made.
    pub async fn call(
        &self,
        target_node: u64,
        addr: &str,
        shard: &str,
        method: u8,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        if let Some(e) = &self.inner.invalid {
            return Err(TransportError::InvalidConfig(e.clone()));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Frame::Request {
            id,
            shard: shard.to_owned(),
            method,
            payload,
        };
        // Encoding before connecting means an oversized request never disturbs the
        // connection that other shards share.
        let body = encode_body(&request, self.inner.config.frame_bytes_max)?;
        drop(request);
        match tokio::time::timeout(timeout, self.send_and_wait(target_node, addr, id, body)).await {
            Ok(reply) => reply,
            Err(_) => Err(TransportError::Timeout),
        }
    }

    /// Closes the connection to `target_node` (failing its waiting calls with `Closed`) and
    /// forgets its backoff; for nodes that left the cluster.
    pub fn disconnect(&self, target_node: u64) {
        let slot = lock(&self.inner.peers).remove(&target_node);
        if let Some(slot) = slot {
            if let Ok(state) = slot.state.try_lock() {
                if let Some(conn) = &state.conn {
                    conn.shared.close(TransportError::Closed);
                }
            }
        }
    }

    async fn send_and_wait(
        &self,
        target_node: u64,
        addr: &str,
        id: u64,
        body: Bytes,
    ) -> Result<Vec<u8>, TransportError> {
        let conn = self.connection(target_node, addr).await?;
        let reply = conn.shared.register(id)?;
        let _guard = PendingGuard {
            shared: &conn.shared,
            id,
        };
        conn.queue
            .send(body)
            .await
            .map_err(|_| TransportError::Closed)?;
        // The sender disappears without a reply only if the connection closed.
        reply.await.unwrap_or(Err(TransportError::Closed))
    }

    /// The live connection to `target_node` at `addr`, made now if needed and allowed.
    async fn connection(&self, target_node: u64, addr: &str) -> Result<Arc<Conn>, TransportError> {
        let slot = lock(&self.inner.peers)
            .entry(target_node)
            .or_default()
            .clone();
        let mut state = slot.state.lock().await;
        if let Some(conn) = &state.conn {
            if conn.addr == addr && !conn.shared.is_closed() {
                return Ok(conn.clone());
            }
        }
        if let Some(old) = state.conn.take() {
            if old.addr != addr {
                debug!(target_node, old = %old.addr, new = addr, "peer address changed");
                old.shared.close(TransportError::Closed);
            }
        }
        // A new address deserves a fresh attempt: the backoff was about the old one.
        if state.failed_addr != addr {
            state.failures = 0;
            state.retry_at = None;
        }
        if let Some(retry_at) = state.retry_at {
            if Instant::now() < retry_at {
                return Err(TransportError::Unreachable(format!(
                    "node {target_node} at {addr} is in reconnect backoff after: {}",
                    state.last_error
                )));
            }
        }
        match self.connect(target_node, addr).await {
            Ok(conn) => {
                state.conn = Some(conn.clone());
                state.failures = 0;
                state.retry_at = None;
                Ok(conn)
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let delay = backoff_delay(&self.inner.config, state.failures);
                state.retry_at = Some(Instant::now() + delay);
                state.failed_addr = addr.to_owned();
                state.last_error = e.to_string();
                if matches!(e, TransportError::Rejected(_)) {
                    warn!(target_node, addr, error = %e, "peer refused our handshake");
                } else {
                    debug!(target_node, addr, error = %e, ?delay, "cannot connect to peer");
                }
                Err(e)
            }
        }
    }

    /// Connects, runs the handshake and starts the connection's reader and writer tasks.
    async fn connect(&self, target_node: u64, addr: &str) -> Result<Arc<Conn>, TransportError> {
        let config = &self.inner.config;
        let stream =
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => {
                    return Err(TransportError::Unreachable(format!(
                        "connecting to {addr} timed out"
                    )))
                }
                Ok(Err(e)) => {
                    return Err(TransportError::Unreachable(format!(
                        "cannot connect to {addr}: {e}"
                    )))
                }
                Ok(Ok(stream)) => stream,
            };
        let _ = stream.set_nodelay(true);
        let (read_half, mut write_half) = match &config.tls {
            Some(tls) => {
                let name = crate::tls::server_name(addr).map_err(TransportError::Unreachable)?;
                let connect = tls.connector().connect(name, stream);
                match tokio::time::timeout(config.handshake_timeout, connect).await {
                    Ok(Ok(session)) => split_stream(session),
                    Ok(Err(e)) => {
                        return Err(TransportError::Rejected(format!(
                            "TLS handshake with {addr} failed: {e}"
                        )))
                    }
                    Err(_) => {
                        return Err(TransportError::Unreachable(format!(
                            "TLS handshake with {addr} timed out"
                        )))
                    }
                }
            }
            None => split_stream(stream),
        };
        // Until the server has proved the secret it may not make us buffer much either.
        let mut reader = FramedRead::new(read_half, frame_codec(HANDSHAKE_FRAME_BYTES_MAX));
        let handshake = self.client_handshake(&mut reader, &mut write_half, target_node);
        match tokio::time::timeout(config.handshake_timeout, handshake).await {
            Err(_) => {
                return Err(TransportError::Unreachable(format!(
                    "handshake with {addr} timed out"
                )))
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => {}
        }
        reader
            .decoder_mut()
            .set_max_frame_length(config.frame_bytes_max);
        debug!(target_node, addr, "connected to peer");

        let shared = Arc::new(ConnShared {
            pending: Mutex::new(Some(HashMap::new())),
            closed: CancellationToken::new(),
        });
        let (queue, queued) = mpsc::channel::<Bytes>(WRITE_QUEUE_FRAMES);
        let frame_bytes_max = config.frame_bytes_max;
        tokio::spawn({
            let shared = shared.clone();
            async move {
                let result =
                    write_loop(write_half, queued, frame_bytes_max, shared.closed.clone()).await;
                if let Err(reason) = result {
                    debug!(target_node, %reason, "peer connection writer failed");
                }
                shared.close(TransportError::Closed);
            }
        });
        tokio::spawn(client_read_loop(reader, shared.clone(), target_node));
        Ok(Arc::new(Conn {
            addr: addr.to_owned(),
            queue,
            shared,
        }))
    }

    /// Client side of the handshake; see the module documentation.
    async fn client_handshake(
        &self,
        reader: &mut FrameReader,
        writer: &mut PeerWrite,
        target_node: u64,
    ) -> Result<(), TransportError> {
        let config = &self.inner.config;
        let my_node_id = self.inner.my_node_id;
        let server_nonce = match read_frame(reader).await {
            Ok(Some(Frame::Challenge { nonce })) => nonce,
            other => return Err(handshake_failure(other, "Challenge")),
        };
        let client_nonce = fresh_nonce();
        let proof = client_proof(
            &self.inner.key,
            &config.cluster_id,
            &server_nonce,
            &client_nonce,
            my_node_id,
        );
        let hello = Frame::Hello {
            cluster_id: config.cluster_id.clone(),
            node_id: my_node_id,
            nonce: client_nonce,
            proof: *proof.as_bytes(),
        };
        write_frame(writer, &hello)
            .await
            .map_err(TransportError::Unreachable)?;
        let (server_node, proof) = match read_frame(reader).await {
            Ok(Some(Frame::HelloOk { node_id, proof })) => (node_id, proof),
            other => return Err(handshake_failure(other, "HelloOk")),
        };
        let expected = server_proof(
            &self.inner.key,
            &config.cluster_id,
            &server_nonce,
            &client_nonce,
            my_node_id,
            server_node,
        );
        if blake3::Hash::from(proof) != expected {
            return Err(TransportError::Rejected(
                "the server could not prove that it knows the cluster secret".into(),
            ));
        }
        match server_node {
            Some(node) if node != target_node => Err(TransportError::Rejected(format!(
                "the address belongs to node {node}, not node {target_node}"
            ))),
            _ => Ok(()),
        }
    }
}

/// Turns whatever arrived instead of the expected handshake frame into an error.
fn handshake_failure(got: Result<Option<Frame>, String>, expected: &str) -> TransportError {
    match got {
        Ok(Some(Frame::Refused { reason })) => TransportError::Rejected(reason),
        Ok(Some(other)) => {
            TransportError::Rejected(format!("expected {expected}, got {}", other.kind()))
        }
        Ok(None) => TransportError::Unreachable("connection closed during the handshake".into()),
        Err(reason) => TransportError::Rejected(reason),
    }
}

/// Routes responses to waiting calls until the connection ends, then fails the rest.
async fn client_read_loop(mut reader: FrameReader, shared: Arc<ConnShared>, target_node: u64) {
    let reason = loop {
        let frame = tokio::select! {
            _ = shared.closed.cancelled() => break "closed locally".to_string(),
            frame = read_frame(&mut reader) => frame,
        };
        match frame {
            Ok(Some(Frame::Response { id, result })) => {
                shared.complete(id, result.map_err(TransportError::Remote));
            }
            Ok(Some(other)) => break format!("unexpected {} frame", other.kind()),
            Ok(None) => break "closed by peer".to_string(),
            Err(reason) => break reason,
        }
    };
    debug!(target_node, %reason, "peer connection ended");
    shared.close(TransportError::Closed);
}

/// `min` doubled for each further consecutive failure, capped at `max`.
fn backoff_delay(config: &TransportConfig, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    config
        .reconnect_backoff_min
        .saturating_mul(1u32 << doublings)
        .min(config.reconnect_backoff_max)
}

#[cfg(test)]
impl PeerClient {
    /// Calls still waiting on the connection to `target_node`.
    async fn pending_count(&self, target_node: u64) -> usize {
        let slot = lock(&self.inner.peers).get(&target_node).cloned();
        match slot {
            Some(slot) => slot
                .state
                .lock()
                .await
                .conn
                .as_ref()
                .map_or(0, |c| c.shared.pending_count()),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpSocket;
    use tokio::task::JoinHandle;

    const SECRET: &[u8] = b"correct horse battery staple";
    const ECHO: u8 = 1;
    const FAIL: u8 = 2;
    const SLEEP: u8 = 3;
    const PANIC: u8 = 4;
    const BIG_RESPONSE: u8 = 5;
    const JITTER_ECHO: u8 = 6;

    /// Every test runs under this bound, so a hang fails instead of stalling the suite.
    async fn bounded<F: Future>(test: F) -> F::Output {
        // Shows the transport's warnings when a test runs with --nocapture.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::DEBUG)
            .try_init();
        match tokio::time::timeout(Duration::from_secs(60), test).await {
            Ok(output) => output,
            Err(_) => panic!("test exceeded its time bound"),
        }
    }

    fn config(secret: &[u8]) -> TransportConfig {
        let mut config = TransportConfig::new("test-cluster", secret.to_vec());
        config.connect_timeout = Duration::from_secs(2);
        config.handshake_timeout = Duration::from_secs(1);
        config
    }

    /// Echoes `from_node|shard|payload`; other methods fail, sleep, panic or return big data.
    #[derive(Default)]
    struct TestHandler {
        calls: AtomicU64,
    }

    fn echo_of(from_node: u64, shard: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = format!("{from_node}|{shard}|").into_bytes();
        out.extend_from_slice(payload);
        out
    }

    impl RequestHandler for TestHandler {
        fn handle(
            &self,
            from_node: u64,
            shard: String,
            method: u8,
            payload: Vec<u8>,
        ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                match method {
                    ECHO => Ok(echo_of(from_node, &shard, &payload)),
                    FAIL => Err(format!("boom in {shard}")),
                    SLEEP => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok(Vec::new())
                    }
                    PANIC => panic!("handler panic requested by the test"),
                    BIG_RESPONSE => {
                        let mut size = [0u8; 8];
                        size.copy_from_slice(payload.get(..8).ok_or("short payload")?);
                        Ok(vec![7u8; u64::from_be_bytes(size) as usize])
                    }
                    JITTER_ECHO => {
                        let delay = payload.first().copied().unwrap_or(0) % 4;
                        tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
                        Ok(echo_of(from_node, &shard, &payload))
                    }
                    other => Err(format!("unknown method {other}")),
                }
            })
        }
    }

    struct TestServer {
        addr: SocketAddr,
        stats: Arc<ServerStats>,
        handler: Arc<TestHandler>,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<()>,
    }

    impl TestServer {
        async fn start(config: TransportConfig, node_id: Option<u64>) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            TestServer::start_on(listener, config, node_id)
        }

        fn start_on(
            listener: TcpListener,
            config: TransportConfig,
            node_id: Option<u64>,
        ) -> TestServer {
            let addr = listener.local_addr().unwrap();
            let stats = Arc::new(ServerStats::default());
            let handler = Arc::new(TestHandler::default());
            let (stop, stopped) = oneshot::channel::<()>();
            let shutdown = async move {
                let _ = stopped.await;
            };
            let task = tokio::spawn(serve_inner(
                listener,
                config,
                node_id,
                handler.clone(),
                shutdown,
                stats.clone(),
            ));
            TestServer {
                addr,
                stats,
                handler,
                stop: Some(stop),
                task,
            }
        }

        fn addr(&self) -> String {
            self.addr.to_string()
        }

        fn authenticated(&self) -> u64 {
            self.stats.authenticated.load(Ordering::Relaxed)
        }

        fn handler_calls(&self) -> u64 {
            self.handler.calls.load(Ordering::Relaxed)
        }

        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            (&mut self.task).await.unwrap();
        }
    }

    const CALL_TIMEOUT: Duration = Duration::from_secs(5);

    async fn echo(client: &PeerClient, node: u64, addr: &str, shard: &str, payload: &[u8]) {
        let reply = client
            .call(node, addr, shard, ECHO, payload.to_vec(), CALL_TIMEOUT)
            .await;
        let expected = echo_of(client.node_id(), shard, payload);
        assert_eq!(reply, Ok(expected));
    }

    /// Reads until the server closes the connection; fails if it stays open.
    async fn expect_closed_by_server(mut stream: TcpStream) {
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink));
        // Either a clean end of stream or a reset is a close; only a timeout is a failure.
        assert!(read.await.is_ok(), "the server kept a bad connection open");
    }

    #[tokio::test]
    async fn transport_echo_round_trip() {
        bounded(async {
            let server = TestServer::start(config(SECRET), Some(1)).await;
            let client = PeerClient::new(config(SECRET), 2);
            echo(&client, 1, &server.addr(), "paris", b"hello").await;
            echo(&client, 1, &server.addr(), "paris", b"").await;
            let big = vec![42u8; 3 * 1024 * 1024];
            echo(&client, 1, &server.addr(), "paris", &big).await;
            assert_eq!(server.authenticated(), 1);
            server.stop().await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transport_many_concurrent_calls_share_one_connection() {
        bounded(async {
            let server = TestServer::start(config(SECRET), Some(1)).await;
            let client = PeerClient::new(config(SECRET), 9);
            let addr = server.addr();
            let mut tasks = JoinSet::new();
            for task in 0..8u32 {
                let (client, addr) = (client.clone(), addr.clone());
                tasks.spawn(async move {
                    for call in 0..100u32 {
                        let shard = if (task + call) % 2 == 0 {
                            "alpha"
                        } else {
                            "beta"
                        };
                        let mut payload = vec![(call % 251) as u8];
                        payload.extend_from_slice(format!("task {task} call {call}").as_bytes());
                        let reply = client
                            .call(1, &addr, shard, JITTER_ECHO, payload.clone(), CALL_TIMEOUT)
                            .await;
                        assert_eq!(reply, Ok(echo_of(9, shard, &payload)));
                    }
                });
            }
            while let Some(joined) = tasks.join_next().await {
                joined.unwrap();
            }
            assert_eq!(server.handler_calls(), 800);
            assert_eq!(server.stats.accepted.load(Ordering::Relaxed), 1);
            assert_eq!(server.authenticated(), 1);
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn transport_wrong_secret_is_rejected_and_server_keeps_serving() {
        bounded(async {
            let server = TestServer::start(config(SECRET), Some(1)).await;
            let intruder = PeerClient::new(config(b"an entirely wrong secret"), 2);
            let reply = intruder
                .call(1, &server.addr(), "s", ECHO, vec![1], CALL_TIMEOUT)
                .await;
            assert!(
                matches!(reply, Err(TransportError::Rejected(_))),
                "{reply:?}"
            );
            // Within its backoff the refused client fails fast instead of knocking again.
            let reply = intruder
                .call(1, &server.addr(), "s", ECHO, vec![1], CALL_TIMEOUT)
                .await;
            match reply {
                Err(TransportError::Unreachable(message)) => {
                    assert!(message.contains("backoff"), "{message}")
                }
                other => panic!("expected a fast failure, got {other:?}"),
            }

            let mut other_cluster = config(SECRET);
            other_cluster.cluster_id = "another-cluster".into();
            let stranger = PeerClient::new(other_cluster, 3);
            let reply = stranger
                .call(1, &server.addr(), "s", ECHO, vec![1], CALL_TIMEOUT)
                .await;
            assert_eq!(
                reply,
                Err(TransportError::Rejected("cluster id mismatch".into()))
            );

            let good = PeerClient::new(config(SECRET), 4);
            echo(&good, 1, &server.addr(), "s", b"still serving").await;
            assert_eq!(server.handler_calls(), 1);
            server.stop().await;
        })
        .await;
    }

    fn tls_config(ca: &crate::tls::dev::DevCa, name: &str, secret: &[u8]) -> TransportConfig {
        let issued = ca.issue(name, &["127.0.0.1"]).unwrap();
        let mut config = config(secret);
        config.tls = Some(
            crate::tls::ClusterTls::from_pem(
                ca.cert_pem().as_bytes(),
                issued.cert_pem.as_bytes(),
                issued.key_pem.as_bytes(),
            )
            .unwrap(),
        );
        config
    }

    fn tls_refusals(listener: &str) -> u64 {
        let rendered = crate::http::prometheus().render();
        let prefix = format!(
            "seat_ledger_tls_handshake_failures_total{{listener=\"{listener}\",kind=\"refused\"}} "
        );
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    }

    #[tokio::test]
    async fn transport_tls_round_trip_and_refusals() {
        bounded(async {
            crate::http::prometheus();
            let ca = crate::tls::dev::DevCa::new("cluster CA").unwrap();
            let server = TestServer::start(tls_config(&ca, "node-1", SECRET), Some(1)).await;
            // A peer of the same CA with the secret: served, inside TLS.
            let peer = PeerClient::new(tls_config(&ca, "node-2", SECRET), 2);
            echo(&peer, 1, &server.addr(), "s", b"over tls").await;
            let refused_before = tls_refusals("peer");

            // A certificate from another CA is refused even with the right secret.
            let rogue_ca = crate::tls::dev::DevCa::new("rogue CA").unwrap();
            let rogue = PeerClient::new(tls_config(&rogue_ca, "node-3", SECRET), 3);
            let reply = rogue
                .call(1, &server.addr(), "s", ECHO, vec![1], CALL_TIMEOUT)
                .await;
            assert!(
                matches!(reply, Err(TransportError::Rejected(_))),
                "{reply:?}"
            );

            // The right CA but the wrong secret is refused by the secret handshake.
            let no_secret =
                PeerClient::new(tls_config(&ca, "node-4", b"an entirely wrong secret"), 4);
            let reply = no_secret
                .call(1, &server.addr(), "s", ECHO, vec![1], CALL_TIMEOUT)
                .await;
            assert!(
                matches!(reply, Err(TransportError::Rejected(_))),
                "{reply:?}"
            );

            // Plain TCP (with the secret) to a TLS peer listener is refused.
            let plain = PeerClient::new(config(SECRET), 5);
            let reply = plain
                .call(1, &server.addr(), "s", ECHO, vec![1], CALL_TIMEOUT)
                .await;
            assert!(
                reply.is_err(),
                "plain text reached a TLS listener: {reply:?}"
            );

            // A TLS client must not accept a server from another CA either.
            let rogue_server =
                TestServer::start(tls_config(&rogue_ca, "node-9", SECRET), Some(9)).await;
            let reply = peer
                .call(9, &rogue_server.addr(), "s", ECHO, vec![1], CALL_TIMEOUT)
                .await;
            assert!(
                matches!(reply, Err(TransportError::Rejected(_))),
                "{reply:?}"
            );

            assert_eq!(
                server.handler_calls(),
                1,
                "only the genuine peer was served"
            );
            // The server counts a refusal in its own task, possibly after the client has
            // seen it; give it a bounded moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while tls_refusals("peer") < refused_before + 2 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                tls_refusals("peer") >= refused_before + 2,
                "refused handshakes are counted"
            );
            echo(&peer, 1, &server.addr(), "s", b"still serving").await;
            rogue_server.stop().await;
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn transport_client_refuses_server_without_the_secret() {
        bounded(async {
            // A fake server that accepts any Hello and answers with a proof it cannot make.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let fake = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let (read_half, mut write_half) = split_stream(stream);
                let mut reader = FramedRead::new(read_half, frame_codec(HANDSHAKE_FRAME_BYTES_MAX));
                let challenge = Frame::Challenge { nonce: [3; 32] };
                write_frame(&mut write_half, &challenge).await.unwrap();
                let hello = read_frame(&mut reader).await.unwrap();
                assert!(matches!(hello, Some(Frame::Hello { node_id: 2, .. })));
                let ok = Frame::HelloOk {
                    node_id: Some(1),
                    proof: [0; 32],
                };
                write_frame(&mut write_half, &ok).await.unwrap();
                // Keep the connection open until the client gives up on it.
                let _ = read_frame(&mut reader).await;
            });
            let client = PeerClient::new(config(SECRET), 2);
            let reply = client.call(1, &addr, "s", ECHO, vec![], CALL_TIMEOUT).await;
            match reply {
                Err(TransportError::Rejected(message)) => {
                    assert!(message.contains("prove"), "{message}")
                }
                other => panic!("expected Rejected, got {other:?}"),
            }
            fake.await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn transport_wrong_node_at_address_is_rejected() {
        bounded(async {
            let server = TestServer::start(config(SECRET), Some(1)).await;
            let client = PeerClient::new(config(SECRET), 2);
            let reply = client
                .call(3, &server.addr(), "s", ECHO, vec![], CALL_TIMEOUT)
                .await;
            match reply {
                Err(TransportError::Rejected(message)) => {
                    assert!(message.contains("node 1"), "{message}")
                }
                other => panic!("expected Rejected, got {other:?}"),
            }
            // A server that does not name itself is accepted for any target.
            let anonymous = TestServer::start(config(SECRET), None).await;
            echo(&client, 5, &anonymous.addr(), "s", b"x").await;
            server.stop().await;
            anonymous.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn transport_garbage_and_oversized_frames_are_refused() {
        bounded(async {
            let server = TestServer::start(config(SECRET), Some(1)).await;

            // A length prefix far above the frame limit.
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream
                .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
                .await
                .unwrap();
            expect_closed_by_server(stream).await;

            // A length within the general limit but above the handshake limit is refused at
            // once, long before the handshake timeout, without waiting for its body.
            let started = Instant::now();
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
            expect_closed_by_server(stream).await;
            assert!(started.elapsed() < Duration::from_millis(900));

            // A well-formed length with a body that is not a frame.
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream
                .write_all(&[0, 0, 0, 8, 0xfe, 0xfe, 0xfe, 0xfe, 9, 9, 9, 9])
                .await
                .unwrap();
            expect_closed_by_server(stream).await;

            // Pseudo-random bytes (xorshift), whatever the server makes of them.
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let garbage: Vec<u8> = (0..4096)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            let _ = stream.write_all(&garbage).await;
            expect_closed_by_server(stream).await;

            // A valid frame, but a Request before any Hello.
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            let request = Frame::Request {
                id: 1,
                shard: "s".into(),
                method: ECHO,
                payload: vec![1],
            };
            let body = encode_body(&request, FRAME_BYTES_MAX).unwrap();
            let mut framed = BytesMut::new();
            frame_codec(FRAME_BYTES_MAX)
                .encode(body, &mut framed)
                .unwrap();
            stream.write_all(&framed).await.unwrap();
            expect_closed_by_server(stream).await;

            // Silence: the handshake timeout closes the connection.
            let stream = TcpStream::connect(server.addr).await.unwrap();
            expect_closed_by_server(stream).await;

            assert_eq!(server.handler_calls(), 0);
            assert_eq!(server.authenticated(), 0);
            let client = PeerClient::new(config(SECRET), 2);
            echo(&client, 1, &server.addr(), "s", b"after the garbage").await;
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn transport_connection_limit_refuses_extra_connections() {
        bounded(async {
            let mut limited = config(SECRET);
            limited.max_connections = 1;
            let server = TestServer::start(limited, Some(1)).await;
            // A silent connection holds the only slot until its handshake times out.
            let silent = TcpStream::connect(server.addr).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let client = PeerClient::new(config(SECRET), 2);
            let reply = client
                .call(1, &server.addr(), "s", ECHO, vec![], CALL_TIMEOUT)
                .await;
            assert!(
                matches!(reply, Err(TransportError::Unreachable(_))),
                "{reply:?}"
            );
            expect_closed_by_server(silent).await;
            let started = Instant::now();
            loop {
                let reply = client
                    .call(1, &server.addr(), "s", ECHO, vec![], CALL_TIMEOUT)
                    .await;
                match reply {
                    Ok(_) => break,
                    Err(TransportError::Unreachable(_)) => {
                        assert!(started.elapsed() < Duration::from_secs(10), "no reconnect");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn transport_oversized_frames_after_the_handshake() {
        bounded(async {
            let mut small = config(SECRET);
            small.frame_bytes_max = 64 * 1024;
            let server = TestServer::start(small.clone(), Some(1)).await;
            let addr = server.addr();

            // The client refuses to send what its own limit forbids.
            let client = PeerClient::new(small, 2);
            let reply = client.call(1, &addr, "s", ECHO, vec![0; 100_000], CALL_TIMEOUT);
            match reply.await {
                Err(TransportError::FrameTooLarge { size, max }) => {
                    assert!(size > 100_000);
                    assert_eq!(max, 64 * 1024);
                }
                other => panic!("expected FrameTooLarge, got {other:?}"),
            }

            // A client with a larger limit sends it; the server closes that connection.
            let mut large = config(SECRET);
            large.frame_bytes_max = 1024 * 1024;
            let client = PeerClient::new(large, 3);
            let reply = client.call(1, &addr, "s", ECHO, vec![0; 100_000], CALL_TIMEOUT);
            assert_eq!(reply.await, Err(TransportError::Closed));
            // The next call reconnects at once: a closed connection is not a failed attempt.
            echo(&client, 1, &addr, "s", b"small").await;

            // A response over the server's limit becomes an error for the caller.
            let size = (200_000u64).to_be_bytes().to_vec();
            let reply = client.call(1, &addr, "s", BIG_RESPONSE, size, CALL_TIMEOUT);
            match reply.await {
                Err(TransportError::Remote(message)) => {
                    assert!(message.contains("exceeds"), "{message}")
                }
                other => panic!("expected Remote, got {other:?}"),
            }
            assert_eq!(server.handler_calls(), 2);
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn transport_handler_errors_and_panics_come_back_as_remote() {
        bounded(async {
            let server = TestServer::start(config(SECRET), Some(1)).await;
            let client = PeerClient::new(config(SECRET), 2);
            let reply = client
                .call(1, &server.addr(), "lyon", FAIL, vec![], CALL_TIMEOUT)
                .await;
            assert_eq!(reply, Err(TransportError::Remote("boom in lyon".into())));
            let reply = client
                .call(1, &server.addr(), "lyon", PANIC, vec![], CALL_TIMEOUT)
                .await;
            assert!(matches!(reply, Err(TransportError::Remote(_))), "{reply:?}");
            echo(&client, 1, &server.addr(), "lyon", b"fine").await;
            assert_eq!(server.authenticated(), 1);
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn transport_call_timeout_removes_the_pending_call() {
        bounded(async {
            let server = TestServer::start(config(SECRET), Some(1)).await;
            let client = PeerClient::new(config(SECRET), 2);
            let started = Instant::now();
            let short = Duration::from_millis(200);
            let reply = client
                .call(1, &server.addr(), "s", SLEEP, vec![], short)
                .await;
            assert_eq!(reply, Err(TransportError::Timeout));
            assert!(started.elapsed() < Duration::from_secs(2));
            assert_eq!(client.pending_count(1).await, 0);
            // The connection is still good for other calls.
            echo(&client, 1, &server.addr(), "s", b"next").await;
            assert_eq!(client.pending_count(1).await, 0);
            assert_eq!(server.authenticated(), 1);
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn transport_reconnects_after_server_restart() {
        bounded(async {
            let mut config = config(SECRET);
            config.reconnect_backoff_min = Duration::from_millis(300);
            config.reconnect_backoff_max = Duration::from_millis(600);
            let server = TestServer::start(config.clone(), Some(1)).await;
            let addr = server.addr;
            let target = addr.to_string();
            let client = PeerClient::new(config.clone(), 2);
            echo(&client, 1, &target, "s", b"before").await;
            server.stop().await;

            // The first calls see the closed connection or a refused connect; then the
            // client is in backoff and fails fast.
            let mut saw_backoff = false;
            for _ in 0..3 {
                let started = Instant::now();
                let reply = client.call(1, &target, "s", ECHO, vec![], CALL_TIMEOUT);
                match reply.await {
                    Err(TransportError::Closed) => {}
                    Err(TransportError::Unreachable(message)) => {
                        if message.contains("backoff") {
                            saw_backoff = true;
                            assert!(started.elapsed() < Duration::from_millis(250));
                        }
                    }
                    other => panic!("expected a failure, got {other:?}"),
                }
            }
            assert!(saw_backoff, "the client never entered backoff");

            // Restart on the same port; SO_REUSEADDR lets the port be bound again at once.
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            socket.bind(addr).unwrap();
            let server = TestServer::start_on(socket.listen(128).unwrap(), config, Some(1));
            let started = Instant::now();
            loop {
                let reply = client.call(1, &target, "s", ECHO, b"after".to_vec(), CALL_TIMEOUT);
                match reply.await {
                    Ok(reply) => {
                        assert_eq!(reply, echo_of(2, "s", b"after"));
                        break;
                    }
                    Err(TransportError::Unreachable(_)) => {
                        assert!(started.elapsed() < Duration::from_secs(10), "no reconnect");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
            assert_eq!(server.authenticated(), 1);
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn transport_address_change_reconnects() {
        bounded(async {
            let first = TestServer::start(config(SECRET), Some(1)).await;
            let second = TestServer::start(config(SECRET), Some(1)).await;
            let client = PeerClient::new(config(SECRET), 2);
            echo(&client, 1, &first.addr(), "s", b"one").await;
            echo(&client, 1, &second.addr(), "s", b"two").await;
            echo(&client, 1, &second.addr(), "t", b"three").await;
            assert_eq!((first.authenticated(), second.authenticated()), (1, 1));
            assert_eq!(second.handler_calls(), 2);
            first.stop().await;
            second.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn transport_unreachable_address_fails_fast_then_backs_off() {
        bounded(async {
            // Bind and drop a listener to get a port that refuses connections.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            drop(listener);
            let client = PeerClient::new(config(SECRET), 2);
            let reply = client.call(1, &addr, "s", ECHO, vec![], CALL_TIMEOUT).await;
            assert!(
                matches!(reply, Err(TransportError::Unreachable(_))),
                "{reply:?}"
            );
            let mut state = TransportConfig::new("c", SECRET);
            state.reconnect_backoff_min = Duration::from_millis(50);
            state.reconnect_backoff_max = Duration::from_secs(2);
            let delays: Vec<_> = (1..=8).map(|n| backoff_delay(&state, n)).collect();
            let millis: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
            assert_eq!(millis, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
            assert_eq!(backoff_delay(&state, u32::MAX), Duration::from_secs(2));
        })
        .await;
    }

    #[test]
    fn transport_config_validation() {
        assert_eq!(TransportConfig::new("c", SECRET).validate(), Ok(()));
        let refused = |config: TransportConfig, needle: &str| match config.validate() {
            Err(TransportConfigError(message)) => {
                assert!(message.contains(needle), "{message} lacks {needle}")
            }
            Ok(()) => panic!("{config:?} was accepted"),
        };
        refused(TransportConfig::new("c", Vec::new()), "secret");
        refused(TransportConfig::new("c", b"short".to_vec()), "secret");
        refused(TransportConfig::new("", SECRET), "cluster_id");
        let mut config = TransportConfig::new("c", SECRET);
        config.frame_bytes_max = 0;
        refused(config, "frame_bytes_max");
        let mut config = TransportConfig::new("c", SECRET);
        config.max_connections = 0;
        refused(config, "max_connections");
        let mut config = TransportConfig::new("c", SECRET);
        config.max_in_flight_per_connection = 0;
        refused(config, "max_in_flight_per_connection");
        let mut config = TransportConfig::new("c", SECRET);
        config.handshake_timeout = Duration::ZERO;
        refused(config, "handshake_timeout");
        let config = TransportConfig::new("c", SECRET);
        assert!(
            !format!("{config:?}").contains("horse"),
            "Debug leaks the secret"
        );
        assert!(PeerClient::try_new(TransportConfig::new("c", b"short".to_vec()), 1).is_err());
    }

    #[tokio::test]
    async fn transport_invalid_client_config_fails_calls() {
        let client = PeerClient::new(TransportConfig::new("c", b"short".to_vec()), 1);
        let reply = client
            .call(1, "127.0.0.1:1", "s", ECHO, vec![], CALL_TIMEOUT)
            .await;
        assert!(
            matches!(reply, Err(TransportError::InvalidConfig(_))),
            "{reply:?}"
        );
    }

    #[test]
    fn transport_frames_round_trip_and_reject_trailing_bytes() {
        let frame = Frame::Hello {
            cluster_id: "c".into(),
            node_id: 7,
            nonce: [1; 32],
            proof: [2; 32],
        };
        let mut body = encode_body(&frame, FRAME_BYTES_MAX).unwrap().to_vec();
        assert!(matches!(
            decode_body(&body),
            Ok(Frame::Hello { node_id: 7, .. })
        ));
        body.push(0);
        assert!(decode_body(&body).is_err());
        assert!(decode_body(&[]).is_err());
        assert!(decode_body(&[0xff; 16]).is_err());
    }
}
