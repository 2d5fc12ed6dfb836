//! The openraft state machine of a shard: applies committed entries to the seat ledger
//! through `state_machine::LedgerStore`, and builds and installs its snapshots.
//!
//! The ledger's opaque marker holds openraft's last applied log id and membership, so
//! they are written atomically with the changes they describe. Reads do not go through
//! here: they share the store behind `SharedStore` and take its read lock.

use crate::clock::{ClusterClock, StampBound};
use crate::types::{LogId, ShardResponse, SnapshotMeta, StoredMembership, TypeConfig};
use futures_util::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use state_machine::{Command, LedgerStore, Outcome, PinnedImage, PreparedInstall, Rejection};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// The store shared by the state machine (writer) and the read path (readers).
pub type SharedStore = Arc<RwLock<LedgerStore>>;

pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, LedgerImage>;

/// A shard's snapshot data. A snapshot this replica built (or installed) is a pinned,
/// durable image of its store, written to a file only when a follower needs it:
/// building a snapshot costs a WAL sync, not an export of the whole shard. A snapshot
/// received from the leader arrives as a file. Neither is ever held in memory whole, so
/// a shard's snapshot may be as large as its disk allows.
#[derive(Clone)]
pub enum LedgerImage {
    Pinned(Arc<PinnedSnapshot>),
    File(Arc<SnapshotFile>),
}

/// A pinned image and, once a follower needed it, the file it was written to (shared
/// by every follower it is sent to, and deleted with the snapshot).
pub struct PinnedSnapshot {
    image: PinnedImage,
    dir: PathBuf,
    written: Mutex<Option<Arc<SnapshotFile>>>,
}

impl PinnedSnapshot {
    pub fn new(image: PinnedImage, dir: PathBuf) -> PinnedSnapshot {
        PinnedSnapshot {
            image,
            dir,
            written: Mutex::new(None),
        }
    }
}

/// A snapshot in a file of this node's, deleted when the last holder drops it.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    bytes: u64,
    /// The transfer's name (`snapshot_transfer::transfer_name` of the whole file).
    name: [u8; 16],
}

impl SnapshotFile {
    /// Takes ownership of a complete snapshot file: it is deleted on drop.
    pub fn adopt(path: PathBuf, bytes: u64, name: [u8; 16]) -> SnapshotFile {
        SnapshotFile { path, bytes, name }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn set_bytes(&mut self, bytes: u64) {
        self.bytes = bytes;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn name(&self) -> [u8; 16] {
        self.name
    }

    /// Up to `len` bytes at `offset` (a chunk to send).
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&self.path)?;
        let len = len.min(self.bytes.saturating_sub(offset) as usize);
        let mut out = vec![0u8; len];
        file.read_exact_at(&mut out, offset)?;
        Ok(out)
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), %error, "a snapshot file was not deleted");
            }
        }
    }
}

/// Names files written under a node's snapshot directories uniquely in this process
/// (a node clears its directories when a shard opens).
pub(crate) fn next_file(dir: &Path, kind: &str) -> io::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(dir.join(format!("{kind}-{}-{n}.snapshot", std::process::id())))
}

impl LedgerImage {
    /// The snapshot as a file: a pinned image is written once (reading the whole
    /// shard, so call it off the async executor) and the file kept with the snapshot.
    pub fn file(&self) -> io::Result<Arc<SnapshotFile>> {
        match self {
            LedgerImage::File(file) => Ok(file.clone()),
            LedgerImage::Pinned(pinned) => {
                let mut written = lock(&pinned.written)?;
                if let Some(file) = written.as_ref() {
                    return Ok(file.clone());
                }
                let file = write_file(&pinned.image, &pinned.dir)?;
                metrics::gauge!("seat_ledger_snapshot_bytes").set(file.bytes as f64);
                *written = Some(file.clone());
                Ok(file)
            }
        }
    }

    /// `file` on the blocking pool.
    pub async fn file_blocking(self) -> io::Result<Arc<SnapshotFile>> {
        tokio::task::spawn_blocking(move || self.file())
            .await
            .map_err(io_error)?
    }
}

/// Writes `image` to a new file in `dir`, synced, named by its hash.
fn write_file(image: &PinnedImage, dir: &Path) -> io::Result<Arc<SnapshotFile>> {
    let path = next_file(dir, "out")?;
    let out =
        crate::snapshot_transfer::Hashing::new(io::BufWriter::new(std::fs::File::create(&path)?));
    // Owned from here: an error below deletes the file.
    let mut file = SnapshotFile::adopt(path, 0, [0; 16]);
    let (mut out, hasher, bytes) = image.write_to(out).map_err(io_error)?.finish();
    io::Write::flush(&mut out)?;
    out.get_ref().sync_all()?;
    file.bytes = bytes;
    file.name = crate::snapshot_transfer::name_of(hasher);
    Ok(Arc::new(file))
}

impl std::fmt::Debug for LedgerImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerImage::Pinned(pinned) => write!(f, "Pinned({:?})", pinned.image),
            LedgerImage::File(file) => {
                write!(f, "File({}, {} bytes)", file.path.display(), file.bytes)
            }
        }
    }
}

/// What the ledger's marker holds for openraft.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

fn io_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

fn decode_marker(bytes: &[u8]) -> io::Result<Applied> {
    if bytes.is_empty() {
        return Ok(Applied::default());
    }
    state_machine::codec::decode(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("applied marker: {e}")))
}

fn read(store: &SharedStore) -> io::Result<std::sync::RwLockReadGuard<'_, LedgerStore>> {
    store
        .read()
        .map_err(|_| io_error("ledger store lock poisoned by a panic"))
}

fn write(store: &SharedStore) -> io::Result<std::sync::RwLockWriteGuard<'_, LedgerStore>> {
    store
        .write()
        .map_err(|_| io_error("ledger store lock poisoned by a panic"))
}

pub struct LedgerStateMachine {
    store: SharedStore,
    /// Told the shard clock after each apply, with this node's clock (`clock.rs`).
    stamp_bound: Option<(Arc<StampBound>, Arc<ClusterClock>)>,
    applied: Applied,
    /// The last snapshot built or installed, served to followers that need one; shared
    /// with the snapshot builder, which fills it.
    current: Arc<Mutex<Option<Snapshot>>>,
    /// Where snapshots sent to followers are written (the caller clears it at start).
    snapshot_dir: PathBuf,
}

impl LedgerStateMachine {
    /// The state machine of `store`, writing the snapshots it sends under
    /// `snapshot_dir`.
    pub fn new(store: SharedStore, snapshot_dir: PathBuf) -> io::Result<Self> {
        let applied = decode_marker(read(&store)?.marker())?;
        Ok(LedgerStateMachine {
            store,
            stamp_bound: None,
            applied,
            current: Arc::default(),
            snapshot_dir,
        })
    }

    /// Reports the shard clock after each apply to `bound`, read against `clock`.
    pub fn with_stamp_bound(mut self, bound: Arc<StampBound>, clock: Arc<ClusterClock>) -> Self {
        self.stamp_bound = Some((bound, clock));
        self
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }
}

pub struct LedgerSnapshotBuilder {
    store: SharedStore,
    current: Arc<Mutex<Option<Snapshot>>>,
    snapshot_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for LedgerSnapshotBuilder {
    type SnapshotData = LedgerImage;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let store = self.store.clone();
        let dir = self.snapshot_dir.clone();
        // Off the async executor: pinning syncs the write-ahead log.
        let snapshot = tokio::task::spawn_blocking(move || pin(&store, dir))
            .await
            .map_err(io_error)??;
        *lock(&self.current)? = Some(snapshot.clone());
        Ok(snapshot)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> io::Result<std::sync::MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| io_error("snapshot slot poisoned by a panic"))
}

/// A snapshot of the store as it is now: its image pinned (the store stays locked only
/// while RocksDB pins it) and durable, so logs up to its marker may be purged.
fn pin(store: &SharedStore, dir: PathBuf) -> io::Result<Snapshot> {
    let image = LedgerStore::pin_image(read(store)?).map_err(io_error)?;
    let applied = decode_marker(image.marker())?;
    let meta = SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: applied.membership,
    };
    Ok(Snapshot {
        meta,
        snapshot: LedgerImage::Pinned(Arc::new(PinnedSnapshot::new(image, dir))),
    })
}

impl RaftStateMachine<TypeConfig> for LedgerStateMachine {
    type SnapshotData = LedgerImage;
    type SnapshotBuilder = LedgerSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        // Everything the stream has ready is applied as one batch: one RocksDB write.
        let mut commands: Vec<(u64, Command)> = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            self.applied.last_applied = Some(log_id);
            if let Some(membership) = entry.get_membership() {
                self.applied.membership = StoredMembership::new(Some(log_id), membership);
            }
            match entry.payload {
                EntryPayload::Normal(command) => {
                    responders.push((commands.len(), responder));
                    commands.push((log_id.index, command.0));
                }
                EntryPayload::Blank | EntryPayload::Membership(_) => {
                    if let Some(responder) = responder {
                        responders.push((usize::MAX, Some(responder)));
                    }
                }
            }
        }
        let marker = state_machine::codec::encode(&self.applied);
        let (results, shard_clock) = {
            let mut store = write(&self.store)?;
            let results = store.apply_batch(&commands, &marker).map_err(io_error)?;
            (results, store.ledger().clock())
        };
        if let Some((bound, clock)) = &self.stamp_bound {
            bound.applied(shard_clock, clock.now_ms());
        }
        metrics::counter!("seat_ledger_applied_commands_total").increment(commands.len() as u64);
        let (mut failed, mut table_full) = (0usize, 0usize);
        for result in &results {
            match result.outcome {
                Outcome::Rejected(Rejection::ApplyFailed) => failed += 1,
                Outcome::Rejected(Rejection::RequestTableFull { .. }) => table_full += 1,
                _ => {}
            }
        }
        if table_full > 0 {
            // Keys younger than the window fill the table: new keys wait (503).
            metrics::counter!("seat_ledger_request_table_full_total").increment(table_full as u64);
        }
        if failed > 0 {
            // A defect in the ledger: the entry was rejected alike on every replica.
            tracing::error!(failed, "commands failed inside apply and were rejected");
            metrics::counter!("seat_ledger_apply_failures_total").increment(failed as u64);
        }
        for (position, responder) in responders {
            let Some(responder) = responder else { continue };
            let outcome = results.get(position).map(|result| result.outcome.clone());
            responder.send(ShardResponse { outcome });
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        LedgerSnapshotBuilder {
            store: self.store.clone(),
            current: self.current.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: LedgerImage,
    ) -> Result<(), io::Error> {
        let store = self.store.clone();
        // The installed state is pinned again as this replica's current snapshot, so
        // the received file can go. Checking a large snapshot and writing its records
        // take a minute per GB: that runs on the blocking pool and without the store's
        // lock, which readers (status, metrics, reads) take from async tasks. The lock
        // is held for the first write (clearing the image; from then on readers are
        // refused with "installing", not blocked) and the last (the rest and the swap).
        let image = tokio::task::spawn_blocking(move || -> io::Result<PinnedImage> {
            let file = snapshot.file()?;
            let limits = read(&store)?.configured_limits().clone();
            let prepared = PreparedInstall::from_file(file.path(), &limits).map_err(io_error)?;
            let installing = write(&store)?.begin_install(prepared).map_err(io_error)?;
            let records = installing.write_records();
            let mut guard = write(&store)?;
            guard
                .finish_install(installing, records)
                .map_err(io_error)?;
            metrics::counter!("seat_ledger_snapshot_installed_bytes_total").increment(file.bytes());
            LedgerStore::pin_image(guard).map_err(io_error)
        })
        .await
        .map_err(io_error)??;
        let applied = decode_marker(image.marker())?;
        if applied.last_applied != meta.last_log_id {
            return Err(io_error(format!(
                "snapshot bytes end at {:?} but its meta says {:?}",
                applied.last_applied, meta.last_log_id
            )));
        }
        self.applied = applied;
        *lock(&self.current)? = Some(Snapshot {
            meta: meta.clone(),
            snapshot: LedgerImage::Pinned(Arc::new(PinnedSnapshot::new(
                image,
                self.snapshot_dir.clone(),
            ))),
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(lock(&self.current)?.clone())
    }
}

#[cfg(test)]
mod format_tests {
    //! Golden bytes of what raft-node stores around the ledger's commands: log entries
    //! (openraft's `Entry` of `TypeConfig`, carrying a `ShardCommand`), the vote, and the
    //! applied marker kept in the ledger store. The ledger's own types are pinned by
    //! state-machine's `tests/golden.rs`; these pin openraft's share, which an openraft
    //! upgrade may change (the dependency is an exactly pinned alpha: when bumping it,
    //! these fail first if the stored format moved).

    use super::*;
    use crate::types::{Membership, NodeId, NodeInfo, ShardCommand};
    use openraft::vote::{RaftLeaderId, RaftLeaderIdExt, RaftVote};
    use openraft::RaftTypeConfig;
    use serde::de::DeserializeOwned;
    use state_machine::{codec, CommandKind, LockId, RequestId, UserId};
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Debug;

    // What log format version 1 stores, in hex (written by the release of commit 6accc1e).
    const COMMAND_ENTRY: &str = "03010701010675373a632d31fd0068e5cf8b010000050407";
    const BLANK_ENTRY: &str = "03010800";
    const MEMBERSHIP_ENTRY: &str = concat!(
        "040209020102010203010d31302e302e302e313a373030300d31302e302e302e313a383030300477",
        "657374020d31302e302e302e323a373030300d31302e302e302e323a3830303005736f757468030d",
        "31302e302e302e333a373030300d31302e302e302e333a38303030056e6f727468",
    );
    const VOTE: &str = "040201";
    const LOG_ID: &str = "01040209";
    const APPLIED_MARKER: &str = concat!(
        "01040209010402090102010203010d31302e302e302e313a373030300d31302e302e302e313a3830",
        "30300477657374020d31302e302e302e323a373030300d31302e302e302e323a3830303005736f75",
        "7468030d31302e302e302e333a373030300d31302e302e302e333a38303030056e6f727468",
    );

    type Entry = <TypeConfig as RaftTypeConfig>::Entry;
    type LeaderId = <TypeConfig as RaftTypeConfig>::LeaderId;
    type Vote = openraft::alias::VoteOf<TypeConfig>;

    fn log_id(term: u64, leader: NodeId, index: u64) -> LogId {
        openraft::LogId {
            leader_id: LeaderId::new_committed(term, leader),
            index,
        }
    }

    fn node(id: NodeId, region: &str) -> NodeInfo {
        NodeInfo {
            peer_addr: format!("10.0.0.{id}:7000"),
            client_addr: format!("10.0.0.{id}:8000"),
            region: region.into(),
        }
    }

    /// Two voters and a learner.
    fn membership() -> Membership {
        let nodes = BTreeMap::from([
            (1, node(1, "west")),
            (2, node(2, "south")),
            (3, node(3, "north")),
        ]);
        Membership::new(vec![BTreeSet::from([1, 2])], nodes).expect("a valid membership")
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// `value` encodes to `golden` (hex) and `golden` decodes back to it.
    fn assert_golden<T: serde::Serialize + DeserializeOwned + Debug>(
        what: &str,
        value: &T,
        golden: &str,
    ) {
        let now = hex(&codec::encode(value));
        assert_eq!(
            now, golden,
            "{what}: the stored encoding changed. Raft logs and ledger stores are read back \
             by later releases, by position: a change here (an openraft upgrade, a field of \
             NodeInfo or ShardCommand) needs a new log format version \
             (log_store::FORMAT_VERSION) with a migration; only then update this golden."
        );
        let bytes: Vec<u8> = (0..golden.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&golden[at..at + 2], 16).expect("hex"))
            .collect();
        let decoded: T = codec::decode(&bytes).expect("the golden bytes decode");
        assert_eq!(format!("{decoded:?}"), format!("{value:?}"), "{what}");
    }

    #[test]
    fn log_entries_votes_and_markers_keep_their_bytes() {
        let command = Command {
            request_id: Some(RequestId("u7:c-1".into())),
            at_ms: 1_700_000_000_000,
            kind: CommandKind::ReleaseLock {
                lock: LockId(4),
                user: UserId(7),
            },
        };
        let normal = Entry::new_normal(log_id(3, 1, 7), ShardCommand(command));
        assert_golden("a command entry", &normal, COMMAND_ENTRY);
        assert_golden(
            "a blank entry",
            &Entry::new_blank(log_id(3, 1, 8)),
            BLANK_ENTRY,
        );
        let change = Entry::new_membership(log_id(4, 2, 9), membership());
        assert_golden("a membership entry", &change, MEMBERSHIP_ENTRY);
        let vote = Vote::from_leader_id(LeaderId::new(4, 2), true);
        assert_golden("a vote", &vote, VOTE);
        assert_golden("a log id", &Some(log_id(4, 2, 9)), LOG_ID);
        let marker = Applied {
            last_applied: Some(log_id(4, 2, 9)),
            membership: StoredMembership::new(Some(log_id(4, 2, 9)), membership()),
        };
        assert_golden("the applied marker", &marker, APPLIED_MARKER);
    }
}
