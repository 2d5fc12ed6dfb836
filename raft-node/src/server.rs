//! Running a node: bind its listeners, serve peers and clients, stop cleanly.
//! Used by the `raft-node` binary, the integration tests and the api's demo.

use crate::config::NodeConfig;
use crate::node::{Node, NodeError};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A node with its servers running.
pub struct RunningNode {
    pub node: Node,
    pub peer_addr: SocketAddr,
    pub client_addr: SocketAddr,
    servers: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Opens the node and serves on the given, already bound listeners (tests bind port
    /// 0 first, then write the cluster file with the real addresses).
    pub async fn start(
        config: NodeConfig,
        peer: TcpListener,
        client: TcpListener,
    ) -> Result<RunningNode, NodeError> {
        let peer_addr = peer
            .local_addr()
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let client_addr = client
            .local_addr()
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let node = Node::open(config).await?;
        let peer_server = {
            let shutdown = stopped(node.shutdown_signal());
            let (config, handler, id) = (node.transport_config(), node.peer_handler(), node.id());
            tokio::spawn(async move {
                crate::transport::serve_as_node(peer, config, id, handler, shutdown).await;
            })
        };
        let client_server = {
            let shutdown = stopped(node.shutdown_signal());
            let router = crate::http::router(node.clone());
            // With TLS, clients (api nodes, bookingctl) must present a certificate signed
            // by the cluster CA, like peers.
            let (tls, plain) = match node.tls() {
                Some(tls) => (
                    Some(
                        crate::tls::TlsListener::new(
                            client,
                            tls.server_certificate_optional.clone(),
                            "node-client",
                        )
                        .map_err(|e| NodeError::Storage(e.to_string()))?,
                    ),
                    None,
                ),
                None => {
                    tracing::warn!(
                        node = node.id(),
                        "TLS is off: peers and clients connect in plain TCP"
                    );
                    (None, Some(client))
                }
            };
            tokio::spawn(async move {
                let served = match (tls, plain) {
                    (Some(tls), _) => {
                        let router = router
                            .layer(axum::middleware::from_fn(
                                crate::tls::require_client_certificate,
                            ))
                            .into_make_service_with_connect_info::<crate::tls::PeerAddr>();
                        axum::serve(tls, router)
                            .with_graceful_shutdown(shutdown)
                            .await
                    }
                    (None, Some(plain)) => {
                        // Replies are small and latency matters more than packet count.
                        let plain = axum::serve::ListenerExt::tap_io(plain, |tcp| {
                            let _ = tcp.set_nodelay(true);
                        });
                        axum::serve(plain, router)
                            .with_graceful_shutdown(shutdown)
                            .await
                    }
                    (None, None) => Ok(()),
                };
                if let Err(error) = served {
                    tracing::error!(%error, "client listener failed");
                }
            })
        };
        tracing::info!(node = node.id(), %peer_addr, %client_addr, "raft-node serving");
        Ok(RunningNode {
            node,
            peer_addr,
            client_addr,
            servers: vec![peer_server, client_server],
        })
    }

    /// Binds the addresses the cluster file gives this node, then starts.
    pub async fn bind_and_start(config: NodeConfig) -> Result<RunningNode, NodeError> {
        let entry = config
            .cluster
            .node(config.node_id)
            .cloned()
            .ok_or_else(|| {
                NodeError::Config(crate::config::ConfigError(format!(
                    "node {} is not in the cluster file",
                    config.node_id
                )))
            })?;
        let bind = |addr: String| async move {
            let listen = crate::config::listen_addr(&addr).ok_or_else(|| {
                NodeError::Config(crate::config::ConfigError(format!(
                    "{addr:?} is not host:port"
                )))
            })?;
            TcpListener::bind(&listen)
                .await
                .map_err(|e| NodeError::Storage(format!("cannot listen on {listen} ({addr}): {e}")))
        };
        let peer = bind(entry.peer_addr).await?;
        let client = bind(entry.client_addr).await?;
        RunningNode::start(config, peer, client).await
    }

    /// Stops Raft, then the servers; waits for them.
    pub async fn stop(self) {
        self.node.shutdown().await;
        for server in self.servers {
            let _ = server.await;
        }
    }

    /// Simulates a crash for tests: servers and Raft tasks are aborted without any
    /// orderly shutdown (the in-process analogue of kill -9).
    pub async fn crash(self) {
        for server in &self.servers {
            server.abort();
        }
        self.node.shutdown().await;
    }
}

async fn stopped(mut signal: tokio::sync::watch::Receiver<bool>) {
    while !*signal.borrow_and_update() {
        if signal.changed().await.is_err() {
            return;
        }
    }
}
