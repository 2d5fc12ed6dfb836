//! Raft replication of city shards (openraft + RocksDB). In progress.
