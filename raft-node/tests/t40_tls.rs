//! The certificates `deploy/dev-ca.sh` makes (openssl) work with the node's rustls
//! configuration: two peers of one CA talk mutual TLS on the peer transport, and a peer
//! whose certificate comes from another run of the script (another CA) is refused.

use futures_util::future::BoxFuture;
use raft_node::tls::{ClusterTls, TlsFiles};
use raft_node::transport::{
    serve_as_node, PeerClient, RequestHandler, TransportConfig, TransportError,
};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &[u8] = b"a cluster secret for the tls test";

struct Echo;

impl RequestHandler for Echo {
    fn handle(
        &self,
        from_node: u64,
        _shard: String,
        _method: u8,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let mut out = format!("{from_node}:").into_bytes();
            out.extend(payload);
            Ok(out)
        })
    }
}

fn dev_ca(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev-ca.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .env("NODES", "1 2")
        .output()
        .expect("run deploy/dev-ca.sh (needs bash and openssl)");
    assert!(
        output.status.success(),
        "dev-ca.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn config(dir: &Path, party: &str) -> TransportConfig {
    let mut config = TransportConfig::new("tls-test", SECRET.to_vec());
    config.handshake_timeout = Duration::from_secs(2);
    config.tls = Some(
        ClusterTls::from_files(&TlsFiles {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join(format!("{party}.pem")),
            key_file: dir.join(format!("{party}.key")),
        })
        .expect("the script's files load"),
    );
    config
}

#[tokio::test]
async fn dev_ca_certificates_carry_mutual_tls_and_another_ca_is_refused() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    dev_ca(ours.path());
    dev_ca(theirs.path());
    // Running it again keeps the CA (and says so).
    dev_ca(ours.path());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_as_node(
        listener,
        config(ours.path(), "raft-node-1"),
        1,
        Arc::new(Echo),
        async move {
            let _ = stopped.await;
        },
    ));
    let peer = PeerClient::new(config(ours.path(), "raft-node-2"), 2);
    let reply = peer
        .call(
            1,
            &addr,
            "global",
            1,
            b"hello".to_vec(),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(reply, Ok(b"2:hello".to_vec()));

    let stranger = PeerClient::new(config(theirs.path(), "raft-node-2"), 2);
    let reply = stranger
        .call(
            1,
            &addr,
            "global",
            1,
            b"hello".to_vec(),
            Duration::from_secs(5),
        )
        .await;
    assert!(
        matches!(reply, Err(TransportError::Rejected(_))),
        "a certificate of another CA was accepted: {reply:?}"
    );
    let _ = stop.send(());
    server.await.unwrap();
}

/// A secret passed as a flag value is refused before anything starts, with the
/// variable or file to use instead; TLS options must come as a set.
#[test]
fn secrets_on_the_command_line_are_refused() {
    let node = env!("CARGO_BIN_EXE_raft-node");
    for args in [
        vec!["--cluster-secret", "0123456789abcdef0123"],
        vec!["--cluster-secret=0123456789abcdef0123"],
    ] {
        let output = Command::new(node)
            .args(&args)
            .args([
                "--node-id",
                "1",
                "--cluster",
                "/nonexistent",
                "--data-dir",
                "/nonexistent",
            ])
            .env_remove("SEAT_LEDGER_CLUSTER_SECRET")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("never taken from the command line")
                && stderr.contains("SEAT_LEDGER_CLUSTER_SECRET"),
            "{stderr}"
        );
    }
    let output = Command::new(node)
        .args([
            "--node-id",
            "1",
            "--cluster",
            "/nonexistent",
            "--data-dir",
            "/x",
        ])
        .args(["--tls-cert-file", "/x.pem"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// Prints what TLS costs on the peer transport: sequential round trips and a
/// concurrent burst of 1 KiB calls, plain TCP vs mutual TLS (figures only, no timing
/// asserts). `cargo test -p raft-node --test t40_tls -- --nocapture` shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cost_on_the_peer_transport_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    dev_ca(dir.path());
    for tls in [false, true] {
        let (server_config, client_config) = if tls {
            (
                config(dir.path(), "raft-node-1"),
                config(dir.path(), "raft-node-2"),
            )
        } else {
            let plain = TransportConfig::new("tls-test", SECRET.to_vec());
            (plain.clone(), plain)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_as_node(
            listener,
            server_config,
            1,
            Arc::new(Echo),
            async move {
                let _ = stopped.await;
            },
        ));
        let client = PeerClient::new(client_config, 2);
        let payload = vec![7u8; 1024];
        let started = std::time::Instant::now();
        client
            .call(1, &addr, "s", 1, payload.clone(), Duration::from_secs(5))
            .await
            .unwrap();
        let connect = started.elapsed();
        const SEQUENTIAL: u32 = 2_000;
        let started = std::time::Instant::now();
        for _ in 0..SEQUENTIAL {
            let reply = client
                .call(1, &addr, "s", 1, payload.clone(), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(reply.len(), payload.len() + 2);
        }
        let sequential = started.elapsed();
        const CONCURRENT: usize = 10_000;
        let started = std::time::Instant::now();
        let calls = (0..CONCURRENT).map(|_| {
            let (client, addr, payload) = (client.clone(), addr.clone(), payload.clone());
            tokio::spawn(async move {
                client
                    .call(1, &addr, "s", 1, payload, Duration::from_secs(30))
                    .await
            })
        });
        for call in futures_util::future::join_all(calls).await {
            call.unwrap().unwrap();
        }
        let burst = started.elapsed();
        println!(
            "peer transport ({}): first call with handshake {:.2} ms; {SEQUENTIAL} sequential \
             1 KiB calls {:.1} us each; {CONCURRENT} concurrent calls {:.0} calls/s",
            if tls { "mutual TLS" } else { "plain TCP" },
            connect.as_secs_f64() * 1e3,
            sequential.as_secs_f64() * 1e6 / f64::from(SEQUENTIAL),
            CONCURRENT as f64 / burst.as_secs_f64(),
        );
        let _ = stop.send(());
        server.await.unwrap();
    }
}
