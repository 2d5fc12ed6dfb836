//! The nodes' admin API as bookingctl sees it: `/admin/status` of every node, and
//! posts to the admin endpoints with errors that name the node and what to do.

use raft_node::client::ClusterClient;
use raft_node::http::{NodeStatus, ShardStatus};
use raft_node::types::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct Admin {
    http: reqwest::Client,
    /// Mutual TLS to the nodes (when they run with TLS).
    pub tls: Option<raft_node::tls::ClusterTls>,
    scheme: &'static str,
    /// Who runs this, for the audit trail of cluster operations (`--operator`, else
    /// `$USER`).
    pub operator: String,
    pub nodes: BTreeMap<NodeId, String>,
    pub timeout: Duration,
}

/// What every reachable node said, and the problem with each unreachable one.
pub struct ClusterView {
    pub nodes: BTreeMap<NodeId, Result<NodeStatus, String>>,
}

impl ClusterView {
    pub fn reachable(&self) -> impl Iterator<Item = &NodeStatus> {
        self.nodes.values().filter_map(|n| n.as_ref().ok())
    }

    /// Every shard name any reachable node hosts.
    pub fn shard_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .reachable()
            .flat_map(|n| n.shards.iter().map(|s| s.shard.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The replica that leads `shard` in the highest term, as it reports itself.
    pub fn leader(&self, shard: &str) -> Option<(NodeId, &ShardStatus)> {
        self.reachable()
            .filter_map(|n| {
                n.shards
                    .iter()
                    .find(|s| s.shard == shard && s.state == "Leader")
                    .map(|s| (n.node, s))
            })
            .max_by_key(|(_, s)| s.term)
    }

    /// Each reachable node's replica of `shard`.
    pub fn replicas<'a>(
        &'a self,
        shard: &'a str,
    ) -> impl Iterator<Item = (NodeId, &'a ShardStatus)> {
        self.reachable().filter_map(move |n| {
            n.shards
                .iter()
                .find(|s| s.shard == shard)
                .map(|s| (n.node, s))
        })
    }
}

impl Admin {
    /// Resolves node ids (asking nodes given without one) and checks the list.
    pub async fn connect(
        list: Vec<(Option<NodeId>, String)>,
        timeout: Duration,
        tls: Option<raft_node::tls::ClusterTls>,
    ) -> Result<Admin, String> {
        let mut http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(1).min(timeout));
        if let Some(tls) = &tls {
            http = http.use_preconfigured_tls((*tls.client).clone());
        }
        let http = http
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut admin = Admin {
            http,
            tls,
            scheme,
            operator: std::env::var("USER").unwrap_or_else(|_| "unnamed".into()),
            nodes: BTreeMap::new(),
            timeout,
        };
        for (id, addr) in list {
            let id = match id {
                Some(id) => id,
                None => {
                    admin
                        .status_at(&addr, false)
                        .await
                        .map_err(|e| {
                            format!(
                                "{e}; to go on without it, name it with its id: --nodes ID={addr}"
                            )
                        })?
                        .node
                }
            };
            if let Some(previous) = admin.nodes.insert(id, addr.clone()) {
                if previous != addr {
                    return Err(format!(
                        "node {id} is given twice, as {previous} and {addr}: fix --nodes/--cluster"
                    ));
                }
            }
        }
        Ok(admin)
    }

    pub fn addr(&self, node: NodeId) -> Result<&str, String> {
        self.nodes.get(&node).map(String::as_str).ok_or_else(|| {
            format!(
                "node {node} is not among the nodes given ({}); add it to --nodes",
                self.nodes
                    .keys()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    pub fn client(&self) -> ClusterClient {
        match &self.tls {
            Some(tls) => ClusterClient::with_tls(self.nodes.clone(), tls)
                .unwrap_or_else(|_| ClusterClient::new(BTreeMap::new())),
            None => ClusterClient::new(self.nodes.clone()),
        }
    }

    async fn status_at(&self, addr: &str, digest: bool) -> Result<NodeStatus, String> {
        let url = if digest {
            format!("{}://{addr}/admin/status?digest=true", self.scheme)
        } else {
            format!("{}://{addr}/admin/status", self.scheme)
        };
        let response = self
            .http
            .get(&url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("cannot reach {addr}: {}", plain(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{addr}: reading /admin/status: {e}"))?;
        if !status.is_success() {
            return Err(format!("{addr}: /admin/status answered {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| {
            format!("{addr}: /admin/status is not what this bookingctl understands ({e}); use the bookingctl of the nodes' version")
        })
    }

    pub async fn status(&self, node: NodeId, digest: bool) -> Result<NodeStatus, String> {
        let status = self.status_at(self.addr(node)?, digest).await?;
        if status.node != node {
            return Err(format!(
                "{} says it is node {}, not {node}: fix --nodes/--cluster",
                self.addr(node)?,
                status.node
            ));
        }
        Ok(status)
    }

    pub async fn view(&self, digest: bool) -> ClusterView {
        let calls = self
            .nodes
            .keys()
            .map(|&id| async move { (id, self.status(id, digest).await) });
        ClusterView {
            nodes: futures_util::future::join_all(calls)
                .await
                .into_iter()
                .collect(),
        }
    }

    /// POSTs a JSON body to a node's admin endpoint; an error carries the node's reason.
    pub async fn post(
        &self,
        node: NodeId,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let addr = self.addr(node)?;
        let response = self
            .http
            .post(format!("{}://{addr}{path}", self.scheme))
            .header(raft_node::audit::OPERATOR_HEADER, &self.operator)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("node {node} ({addr}) {path}: {}", plain(&e)))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
        if !status.is_success() {
            let reason = value
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
                .unwrap_or(text);
            return Err(format!("node {node} {path}: {status}: {reason}"));
        }
        Ok(value)
    }
}

fn plain(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out (is the node overloaded or cut off?)".into()
    } else if error.is_connect() {
        "connection refused or unreachable (is the node running, and is this its client address?)"
            .into()
    } else {
        error.to_string()
    }
}
