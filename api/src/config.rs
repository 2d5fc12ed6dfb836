//! The api node's configuration: where the raft-nodes are, which shard serves which
//! city, its own region, JWT keys, and limits. Validated before the node serves.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: String,
    /// This api node's region; reads prefer replicas here.
    #[serde(default)]
    pub region: String,
    pub nodes: Vec<NodeAddr>,
    /// Cities and the shard of each.
    pub cities: Vec<City>,
    /// The shard of users, roles and refresh tokens.
    #[serde(default = "global_shard")]
    pub global_shard: String,
    #[serde(default)]
    pub limits: ApiLimits,
    #[serde(default)]
    pub jwt: JwtConfig,
    /// TLS on the public listener and mutual TLS to the nodes; absent: no TLS (the api
    /// says so when it starts).
    #[serde(default)]
    pub tls: Option<ApiTls>,
    #[serde(default)]
    pub payment: PaymentConfig,
}

/// The api's TLS files (paths only; the keys stay in files, see `raft_node::secrets`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    /// The public listener's certificate and key.
    #[serde(default)]
    pub listener: Option<ListenerTls>,
    /// The cluster CA and this api's client certificate for the nodes.
    #[serde(default)]
    pub cluster: Option<raft_node::tls::TlsFiles>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// The payment gateway and the booking saga's timing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentConfig {
    /// Base URL of the gateway's API (`sandbox-gateway` or a provider speaking its
    /// API); empty: a sandbox gateway inside this process, on a loopback port.
    pub gateway_url: String,
    /// Files holding the gateway API key and the webhook signing secret.
    pub api_key_file: Option<String>,
    pub webhook_secret_file: Option<String>,
    /// This api node's base URL as the gateway reaches it, for webhooks
    /// (default `http://<listen>`).
    pub public_url: Option<String>,
    /// How often the reconciliation poller visits open payments.
    pub reconcile_interval_ms: u64,
    /// Open payments younger than this are left to their live request or webhook.
    pub reconcile_min_age_ms: u64,
    /// How long `POST .../payment` waits for the result before answering `pending`.
    pub wait_ms: u64,
    /// A pending payment is cancelled once its lock is this long past its expiry.
    pub lock_grace_ms: u64,
    /// Webhooks signed further than this from now are refused (replay window).
    pub webhook_tolerance_ms: u64,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            gateway_url: String::new(),
            api_key_file: None,
            webhook_secret_file: None,
            public_url: None,
            reconcile_interval_ms: 2_000,
            reconcile_min_age_ms: 1_000,
            wait_ms: 3_000,
            lock_grace_ms: 1_000,
            webhook_tolerance_ms: crate::payment::WEBHOOK_TOLERANCE_MS,
        }
    }
}

fn global_shard() -> String {
    "global".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddr {
    pub id: u64,
    pub client_addr: String,
    #[serde(default)]
    pub region: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct City {
    pub id: String,
    pub name: String,
    pub shard: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiLimits {
    /// Requests per second per user (or per IP when anonymous), and the burst.
    pub requests_per_second: u32,
    pub burst: u32,
    pub body_bytes_max: usize,
    /// A request's whole deadline, including retries against the cluster.
    pub request_timeout_ms: u64,
    /// How far (in log entries it has committed but not applied) a replica may lag and
    /// still answer a stale read; beyond it the read is retried as linearizable. This
    /// bounds staleness by apply lag, not by wall-clock age.
    pub stale_lag_entries_max: u64,
    /// Login brute-force throttle (`login_guard`): failed logins allowed per account and
    /// per client IP before each further one waits a delay that starts at
    /// `login_backoff_base_ms` and doubles per failure up to the cap; failures are
    /// forgotten `login_failures_forget_ms` after the last one.
    pub login_failures_free_per_account: u32,
    pub login_failures_free_per_ip: u32,
    pub login_backoff_base_ms: u64,
    pub login_backoff_account_max_ms: u64,
    pub login_backoff_ip_max_ms: u64,
    pub login_failures_forget_ms: u64,
    /// Rendered seat maps kept to answer unchanged maps without rendering them again
    /// (`seat_maps`), in bytes of JSON; 0 keeps none.
    pub seat_map_cache_bytes: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            requests_per_second: 50,
            burst: 100,
            body_bytes_max: 64 * 1024,
            request_timeout_ms: 5_000,
            stale_lag_entries_max: 1_000,
            login_failures_free_per_account: 5,
            login_failures_free_per_ip: 20,
            login_backoff_base_ms: 1_000,
            login_backoff_account_max_ms: 60_000,
            login_backoff_ip_max_ms: 300_000,
            login_failures_forget_ms: 15 * 60_000,
            seat_map_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// JWT settings. Keys come from files (or, in the demo, are generated at start).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub signing_key_file: Option<String>,
    /// `kid` -> public key PEM file; several allow key rotation.
    pub verifying_key_files: BTreeMap<String, String>,
    /// A directory of public keys named `<kid>.pub.pem` (a mounted Kubernetes Secret or
    /// a Vault agent's output); added to `verifying_key_files`. Overridden by the
    /// environment variable `SEAT_LEDGER_JWT_VERIFYING_KEYS_DIR`.
    pub verifying_keys_dir: Option<String>,
    pub signing_kid: String,
    pub access_ttl_s: u64,
    pub refresh_ttl_s: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            issuer: "seat-ledger".into(),
            audience: "seat-ledger-clients".into(),
            signing_key_file: None,
            verifying_key_files: BTreeMap::new(),
            verifying_keys_dir: None,
            signing_kid: "k1".into(),
            access_ttl_s: 900,
            refresh_ttl_s: 30 * 86_400,
        }
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!("listen {:?} is not host:port", self.listen));
        }
        if self.nodes.is_empty() {
            return Err("nodes: name at least one raft-node client address".into());
        }
        if self.cities.is_empty() {
            return Err("cities: name at least one city and its shard".into());
        }
        let p = &self.payment;
        if p.reconcile_interval_ms == 0 || p.webhook_tolerance_ms == 0 || p.wait_ms > 60_000 {
            return Err(
                "payment: reconcile interval and webhook tolerance must be positive, \
                 wait_ms at most 60000"
                    .into(),
            );
        }
        if p.wait_ms >= self.limits.request_timeout_ms {
            return Err(
                "payment.wait_ms must be shorter than limits.request_timeout_ms (a pay request \
                 waits that long for the result within its own deadline)"
                    .into(),
            );
        }
        let l = &self.limits;
        if l.requests_per_second == 0
            || l.burst == 0
            || l.body_bytes_max < 1024
            || l.request_timeout_ms == 0
        {
            return Err(
                "limits: rates, burst and timeout must be positive, body limit >= 1024".into(),
            );
        }
        if l.login_failures_free_per_account == 0
            || l.login_failures_free_per_ip == 0
            || l.login_backoff_base_ms == 0
            || l.login_backoff_account_max_ms < l.login_backoff_base_ms
            || l.login_backoff_ip_max_ms < l.login_backoff_base_ms
            || l.login_failures_forget_ms
                < l.login_backoff_ip_max_ms
                    .max(l.login_backoff_account_max_ms)
        {
            return Err(
                "limits: login throttle: free failures and base delay must be positive, \
                 caps at least the base delay, the forget period at least the caps"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn city(&self, id: &str) -> Option<&City> {
        self.cities.iter().find(|city| city.id == id)
    }

    pub fn city_of_shard(&self, shard: &str) -> Option<&City> {
        self.cities.iter().find(|city| city.shard == shard)
    }
}
