//! The stateless REST booking service (axum): authentication, routing of writes to
//! shard leaders and reads to replicas, problem+json errors.
//!
//! Not built yet: issue [api] fills this crate. Nothing here pretends to serve.
