//! Online backups of a node and offline restores into an empty data directory.
//!
//! A backup holds, for one node: a RocksDB checkpoint of its Raft log database (votes,
//! entries, purge points of every shard), each hosted shard's ledger as snapshot bytes
//! (the framed, checksummed format Raft snapshots use, carrying the applied log id and
//! membership), and `manifest.json` with each shard's applied index and ledger digest.
//! Both are taken while every shard's store is read-locked, so the log and the ledgers
//! are one consistent cut: nothing is applied meanwhile (log appends go on, which is
//! harmless: entries beyond the applied index are replayed or truncated by Raft).
//!
//! `verify` decodes every snapshot and recomputes its ledger digest; `restore` verifies,
//! copies the log checkpoint and installs each snapshot into a fresh ledger store, then
//! checks the digests of what it wrote. A restored node carries the vote of backup time,
//! so it must not rejoin as a voter (`fence`): `restore` writes the restore marker naming
//! the backup (unless the whole cluster is restored from one backup set), with which the
//! node starts only once its peers say it votes in none of the restored shards, and
//! resets the node's fence to the restored log database. It refuses a data directory that
//! holds anything but the fence and an old marker: the fence stays where it is, beside
//! the restored data. `bookingctl restore` asks the cluster before it calls `restore`.
//! See deploy/runbooks/restore-from-backup.md for the safe way back into a cluster.

use crate::node::Node;
use crate::snapshot_transfer::Hashing;
use crate::types::{LogId, NodeId, StoredMembership};
use serde::{Deserialize, Serialize};
use state_machine::{Durability, LedgerStore, Limits};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The directory of the Raft log checkpoint inside a backup (and of the log in a data
/// directory).
pub const RAFT_LOG_DIR: &str = "raft-log";
/// Where a node writes its backups, under its data directory.
pub const BACKUPS_DIR: &str = "backups";
/// The manifest format this code writes and reads.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardBackup {
    pub shard: String,
    /// The log index the ledger had applied when the backup was taken.
    pub applied_index: u64,
    pub applied_term: u64,
    /// `Ledger::digest` of the ledger at that index, hex (`Ledger::full_digest` in
    /// backups written before store format 3; restore accepts either).
    pub digest: String,
    /// The snapshot file, relative to the backup directory.
    pub file: String,
    pub bytes: u64,
    /// blake3 of the snapshot file, hex (catches a damaged copy before decoding).
    pub file_blake3: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    pub cluster_id: String,
    pub node_id: NodeId,
    pub created_at_ms: u64,
    /// How long the shards' stores were read-locked (applying paused), in ms.
    pub pause_ms: u64,
    pub limits: Limits,
    pub shards: Vec<ShardBackup>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "backup name {0:?}: use 1-64 of a-z, A-Z, 0-9, '-', '_' and '.', not starting with '.'"
    )]
    BadName(String),
    #[error("{0} already exists; choose another backup name or remove it")]
    Exists(PathBuf),
    #[error("{0} is not empty; restore only into an empty (or missing) data directory of a stopped node (it may keep its {fence}: move raft-log, shards and the rest aside)", fence = crate::fence::FENCE_FILE)]
    NotEmpty(PathBuf),
    #[error("{path} belongs to node {found}, but the backup is of node {expected}; restore a node only from its own backups")]
    OtherNode {
        path: PathBuf,
        expected: NodeId,
        found: NodeId,
    },
    #[error("{path}: {problem}")]
    Io { path: PathBuf, problem: String },
    #[error("shard {shard}: {problem}")]
    Shard { shard: String, problem: String },
    #[error("manifest {path}: {problem}")]
    Manifest { path: PathBuf, problem: String },
    #[error("shard {shard}: digest mismatch: manifest says {expected}, the {what} has {found}; the backup is damaged or incomplete, do not restore it")]
    DigestMismatch {
        shard: String,
        what: &'static str,
        expected: String,
        found: String,
    },
}

fn io(path: &Path, error: impl std::fmt::Display) -> BackupError {
    BackupError::Io {
        path: path.to_path_buf(),
        problem: error.to_string(),
    }
}

fn shard_error(shard: &str, problem: impl std::fmt::Display) -> BackupError {
    BackupError::Shard {
        shard: shard.to_owned(),
        problem: problem.to_string(),
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A backup name becomes a directory name: keep it plain.
pub fn check_name(name: &str) -> Result<(), BackupError> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        Ok(())
    } else {
        Err(BackupError::BadName(name.to_owned()))
    }
}

/// Mirrors the marker `ledger_sm` writes (same fields, same order: bincode is positional).
#[derive(Deserialize)]
struct Marker {
    last_applied: Option<LogId>,
    #[allow(dead_code)]
    membership: StoredMembership,
}

/// The applied log index and term a ledger's marker records.
pub fn applied_of(marker: &[u8]) -> Result<(u64, u64), String> {
    if marker.is_empty() {
        return Ok((0, 0));
    }
    let marker: Marker = state_machine::codec::decode(marker)?;
    Ok(marker
        .last_applied
        .map_or((0, 0), |id| (id.index, id.leader_id.term)))
}

/// The ledger digest (hex) and applied index of one shard replica, read under its lock.
pub fn shard_digest(node: &Node, shard: &str) -> Result<(String, u64), BackupError> {
    let replica = node.shard(shard).map_err(|e| shard_error(shard, e))?;
    let store = replica
        .store
        .read()
        .map_err(|_| shard_error(shard, "store lock poisoned"))?;
    let (index, _) = applied_of(store.marker()).map_err(|e| shard_error(shard, e))?;
    Ok((hex(&store.ledger().digest()), index))
}

/// Takes a backup of `node` into `<data dir>/backups/<name>`. Blocking: call it from a
/// blocking thread. Applying pauses on this node while the stores are read-locked.
pub fn create(node: &Node, name: &str) -> Result<(PathBuf, BackupManifest), BackupError> {
    check_name(name)?;
    let root = node.data_dir().join(BACKUPS_DIR);
    std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
    let dir = root.join(name);
    if dir.exists() {
        return Err(BackupError::Exists(dir));
    }
    let partial = root.join(format!(".{name}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| io(&partial, e))?;
    }
    std::fs::create_dir_all(partial.join("shards")).map_err(|e| io(&partial, e))?;
    let result = write_backup(node, &partial);
    let manifest = match result {
        Ok(manifest) => manifest,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(error);
        }
    };
    // Check what was written before calling it a backup.
    if let Err(error) = verify(&partial) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(error);
    }
    std::fs::rename(&partial, &dir).map_err(|e| io(&dir, e))?;
    Ok((dir, manifest))
}

fn write_backup(node: &Node, dir: &Path) -> Result<BackupManifest, BackupError> {
    let mut shards = node.shards();
    shards.sort_by(|a, b| a.name.cmp(&b.name));
    let started = std::time::Instant::now();
    // Read-lock every store: no shard applies while the cut is taken.
    let mut guards = Vec::with_capacity(shards.len());
    for shard in &shards {
        let guard = shard
            .store
            .read()
            .map_err(|_| shard_error(&shard.name, "store lock poisoned"))?;
        if guard.is_poisoned() {
            return Err(shard_error(
                &shard.name,
                "the ledger store failed; back up another replica",
            ));
        }
        guards.push(guard);
    }
    let log_dir = dir.join(RAFT_LOG_DIR);
    rocksdb::checkpoint::Checkpoint::new(node.log_db())
        .and_then(|checkpoint| checkpoint.create_checkpoint(&log_dir))
        .map_err(|e| io(&log_dir, format!("RocksDB checkpoint of the raft log: {e}")))?;
    // Under the locks only what is cheap: each store's image is pinned (a RocksDB
    // snapshot), its digest and applied position read. The images are encoded after
    // the locks are released, one at a time, so the pause does not grow with the
    // shards' size (request records, bookings) and one encoding is in memory at once.
    let mut pinned = Vec::with_capacity(shards.len());
    for (shard, guard) in shards.iter().zip(&guards) {
        let image = LedgerStore::pin_image(&**guard).map_err(|e| shard_error(&shard.name, e))?;
        let (applied_index, applied_term) =
            applied_of(guard.marker()).map_err(|e| shard_error(&shard.name, e))?;
        let digest = hex(&guard.ledger().digest());
        pinned.push((image, applied_index, applied_term, digest));
    }
    drop(guards);
    let pause_ms = started.elapsed().as_millis() as u64;
    let mut entries = Vec::with_capacity(shards.len());
    for (shard, (image, applied_index, applied_term, digest)) in shards.iter().zip(pinned) {
        let file = format!("shards/{}.snapshot", shard.name);
        let path = dir.join(&file);
        let out = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
        // Streamed to the file as encoded (the request records a section at a time),
        // hashed and counted on the way.
        let written = image
            .write_to(Hashing::new(std::io::BufWriter::new(out)))
            .map_err(|e| shard_error(&shard.name, e))?;
        let (mut out, hasher, bytes) = written.finish();
        std::io::Write::flush(&mut out).map_err(|e| io(&path, e))?;
        entries.push(ShardBackup {
            shard: shard.name.clone(),
            applied_index,
            applied_term,
            digest,
            file,
            bytes,
            file_blake3: hasher.finalize().to_hex().to_string(),
        });
    }
    let manifest = BackupManifest {
        format: FORMAT,
        cluster_id: node.cluster_id().to_owned(),
        node_id: node.id(),
        created_at_ms: crate::node::now_ms(),
        pause_ms,
        limits: node.limits().clone(),
        shards: entries,
    };
    let path = dir.join(MANIFEST_FILE);
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| io(&path, e))?;
    std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    sync_dir(dir)?;
    Ok(manifest)
}

/// A writer that hashes and counts what passes through it.
fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    for entry in walk(dir)? {
        if entry.is_file() {
            std::fs::File::open(&entry)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&entry, e))?;
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).map_err(|e| io(&next, e))? {
            let path = entry.map_err(|e| io(&next, e))?.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a backup's manifest.
pub fn read_manifest(dir: &Path) -> Result<BackupManifest, BackupError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(|e| BackupError::Manifest {
        path: path.clone(),
        problem: format!("{e} (is {} a backup directory?)", dir.display()),
    })?;
    let manifest: BackupManifest =
        serde_json::from_slice(&text).map_err(|e| BackupError::Manifest {
            path: path.clone(),
            problem: e.to_string(),
        })?;
    if manifest.format != FORMAT {
        return Err(BackupError::Manifest {
            path,
            problem: format!(
                "format {} (this bookingctl reads format {FORMAT})",
                manifest.format
            ),
        });
    }
    for shard in &manifest.shards {
        crate::config::check_shard_name(&shard.shard).map_err(|e| BackupError::Manifest {
            path: path.clone(),
            problem: e.to_string(),
        })?;
    }
    Ok(manifest)
}

/// The path of a shard's snapshot file in the backup, once its hash is checked (the
/// file is read as a stream: a shard's snapshot may be larger than memory).
fn checked_snapshot(dir: &Path, entry: &ShardBackup) -> Result<PathBuf, BackupError> {
    if entry.file != format!("shards/{}.snapshot", entry.shard) {
        return Err(shard_error(
            &entry.shard,
            format!("unexpected snapshot file name {:?}", entry.file),
        ));
    }
    let path = dir.join(&entry.file);
    let mut hasher = blake3::Hasher::new();
    std::fs::File::open(&path)
        .and_then(|mut file| std::io::copy(&mut file, &mut hasher))
        .map_err(|e| io(&path, e))?;
    let found = hasher.finalize().to_hex().to_string();
    if found != entry.file_blake3 {
        return Err(shard_error(
            &entry.shard,
            format!(
                "{} is damaged: blake3 {found}, manifest says {}",
                path.display(),
                entry.file_blake3
            ),
        ));
    }
    Ok(path)
}

/// Checks a backup offline: every snapshot file is intact, decodes, and holds a ledger
/// whose digest and applied index are the manifest's; the log checkpoint opens.
pub fn verify(dir: &Path) -> Result<BackupManifest, BackupError> {
    let manifest = read_manifest(dir)?;
    for entry in &manifest.shards {
        let path = checked_snapshot(dir, entry)?;
        // Lean: the request records are checked and hashed, not kept in memory.
        let decoded = state_machine::snapshot::open(&path)
            .and_then(|file| {
                state_machine::snapshot::decode_lean_from(file, &manifest.limits, |_| {})
            })
            .map_err(|e| shard_error(&entry.shard, format!("snapshot does not decode: {e}")))?;
        let digest = hex(&decoded.ledger.digest());
        // Backups written before store format 3 name the digest of the whole state,
        // which needs the records (such backups are small enough to read whole).
        let earlier = || {
            std::fs::read(&path).is_ok_and(|bytes| {
                state_machine::snapshot::decode(&bytes, &manifest.limits)
                    .is_ok_and(|whole| hex(&whole.ledger.full_digest()) == entry.digest)
            })
        };
        if digest != entry.digest && !earlier() {
            return Err(BackupError::DigestMismatch {
                shard: entry.shard.clone(),
                what: "snapshot",
                expected: entry.digest.clone(),
                found: digest,
            });
        }
        let (index, _) = applied_of(&decoded.marker).map_err(|e| shard_error(&entry.shard, e))?;
        if index != entry.applied_index {
            return Err(shard_error(
                &entry.shard,
                format!(
                    "snapshot is at index {index}, manifest says {}",
                    entry.applied_index
                ),
            ));
        }
    }
    let log = dir.join(RAFT_LOG_DIR);
    if !log.join("CURRENT").is_file() {
        return Err(io(&log, "no RocksDB checkpoint of the raft log here"));
    }
    Ok(manifest)
}

/// How a restore rejoins the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejoin {
    /// One node is restored while the others serve: it leaves the voters first, and a
    /// restore marker keeps it from starting while any shard still counts it a voter.
    AsNewLearner,
    /// Every node is restored from the same backup set (every node lost): no marker.
    WholeCluster,
}

/// Restores a verified backup into `data_dir`, which must be missing or hold nothing but
/// the node's fence and an old restore marker (the node must be stopped). Afterwards the
/// node starts from the backup's state, with its fence reset to the restored log and, for
/// [`Rejoin::AsNewLearner`], the restore marker. Nothing is written when a check fails.
pub fn restore(dir: &Path, data_dir: &Path, rejoin: Rejoin) -> Result<BackupManifest, BackupError> {
    let manifest = verify(dir)?;
    check_target(data_dir, manifest.node_id)?;
    std::fs::create_dir_all(data_dir).map_err(|e| io(data_dir, e))?;
    // The marker first: a restore cut short leaves a directory that is marked.
    let marker_path = data_dir.join(crate::fence::RESTORED_FILE);
    match rejoin {
        Rejoin::AsNewLearner => {
            let marker = crate::fence::RestoredMarker {
                format: crate::fence::FORMAT,
                node_id: manifest.node_id,
                backup: dir.display().to_string(),
                shards: manifest
                    .shards
                    .iter()
                    .map(|s| (s.shard.clone(), s.applied_index))
                    .collect(),
            };
            crate::fence::write_json_durably(&marker_path, &marker)
                .map_err(|e| io(&marker_path, e))?;
        }
        Rejoin::WholeCluster => {
            crate::fence::clear_marker(data_dir).map_err(|e| io(&marker_path, e))?;
        }
    }
    let log_source = dir.join(RAFT_LOG_DIR);
    let log_target = data_dir.join(RAFT_LOG_DIR);
    copy_tree(&log_source, &log_target)?;
    // The copied checkpoint must open as the node's log database (not a new one: no
    // prefill).
    let log = crate::log_store::open_db(&log_target, 0).map_err(|e| io(&log_target, e))?;
    let log_sequence = log.latest_sequence();
    drop(log);
    for entry in &manifest.shards {
        let snapshot = checked_snapshot(dir, entry)?;
        let path = data_dir.join("shards").join(&entry.shard);
        let mut store =
            LedgerStore::open(&path, manifest.limits.clone(), Durability::SyncEveryBatch)
                .map_err(|e| shard_error(&entry.shard, e))?;
        // From the file, in batches; a restore stopped halfway is finished by the
        // store's next open (from this backup's file).
        store
            .install_snapshot_file(&snapshot)
            .map_err(|e| shard_error(&entry.shard, e))?;
        drop(store);
        // Check what is on disk now, through a fresh open.
        let reopened =
            LedgerStore::open(&path, manifest.limits.clone(), Durability::SyncEveryBatch)
                .map_err(|e| shard_error(&entry.shard, e))?;
        let digest = hex(&reopened.ledger().digest());
        let earlier = || {
            reopened
                .full_digest()
                .is_ok_and(|full| hex(&full) == entry.digest)
        };
        if digest != entry.digest && !earlier() {
            return Err(BackupError::DigestMismatch {
                shard: entry.shard.clone(),
                what: "restored store",
                expected: entry.digest.clone(),
                found: digest,
            });
        }
    }
    // Last: until the data is complete, the old fence (if any) keeps the node from
    // starting on it. Votes of the restored log raise the terms again from here.
    let fence = crate::fence::FenceRecord {
        format: crate::fence::FORMAT,
        node_id: manifest.node_id,
        log_sequence,
        terms: Default::default(),
    };
    crate::fence::Fence::create(data_dir, fence)
        .map_err(|e| io(&data_dir.join(crate::fence::FENCE_FILE), e))?;
    Ok(manifest)
}

/// `data_dir` may be missing, or hold only the fence (of `node_id`) and a restore marker.
fn check_target(data_dir: &Path, node_id: NodeId) -> Result<(), BackupError> {
    if !data_dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(data_dir).map_err(|e| io(data_dir, e))? {
        let name = entry.map_err(|e| io(data_dir, e))?.file_name();
        let kept = name == crate::fence::FENCE_FILE || name == crate::fence::RESTORED_FILE;
        if !kept {
            return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
        }
    }
    let fence = crate::fence::read_fence(data_dir)
        .map_err(|e| io(&data_dir.join(crate::fence::FENCE_FILE), e))?;
    match fence {
        Some(fence) if fence.node_id != node_id => Err(BackupError::OtherNode {
            path: data_dir.join(crate::fence::FENCE_FILE),
            expected: node_id,
            found: fence.node_id,
        }),
        _ => Ok(()),
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), BackupError> {
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if source.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            std::fs::copy(&source, &target).map_err(|e| io(&source, e))?;
            std::fs::File::open(&target)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&target, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_are_plain() {
        for good in ["nightly-20261125", "pre_upgrade.0.2", "a"] {
            check_name(good).unwrap();
        }
        for bad in ["", ".hidden", "../etc", "a/b", "x y", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hex_is_lower_case_and_two_digits_per_byte() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
