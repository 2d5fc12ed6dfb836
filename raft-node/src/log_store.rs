//! Durable RocksDB storage of the Raft log and vote for openraft.
//!
//! This module owns two column families, [`LOG_CF`] and [`META_CF`], and nothing else in the
//! RocksDB instance. It implements [`RaftLogStorage`] and [`RaftLogReader`] for any
//! [`RaftTypeConfig`] whose types are serde-serialisable (the `serde` feature of openraft).
//! It must not interpret the application payload of entries, must not touch the state machine or
//! snapshots (those belong to the state-machine adapter), and must never panic on bytes read
//! from disk: a corrupt record surfaces as an [`io::Error`] of kind
//! [`io::ErrorKind::InvalidData`], which openraft turns into a `StorageError`.
//!
//! # Layout and sharing one RocksDB instance between shards
//!
//! One RocksDB instance can hold the logs of many Raft groups ("shards"). Every key starts with
//! a shard prefix: one byte holding the length of the shard name, then the name's UTF-8 bytes.
//! The length byte makes the prefix unambiguous, so shard `a` can never read a key of shard
//! `ab`, and each shard's keys form one contiguous key range.
//!
//! - [`LOG_CF`]: `prefix ++ index as big-endian u64` maps to the bincode-encoded entry. Big
//!   endian makes RocksDB's byte order equal to index order, so range scans, `truncate_after`
//!   and `purge` are ordered scans and range deletes.
//! - [`META_CF`]: `prefix ++ "vote"`, `prefix ++ "committed"` and `prefix ++ "last_purged"` map
//!   to the bincode-encoded vote, committed log id and last purged log id. One key belongs to
//!   the instance, not a shard: `"\0format_version"` ([`FORMAT_VERSION`], a big-endian u64);
//!   its zero first byte is no shard's length byte.
//!
//! The entries' bincode is positional, so the layout and the encoding of openraft's entries
//! with the application's payload are this database's format. [`LogDb::new`] (and
//! [`open_db`], before it prefills) records [`FORMAT_VERSION`] in a database that has none
//! (a new one, or one written before the version was recorded, which is version 1) and
//! refuses one that records another version before it reads or writes anything else: a
//! build must not read a newer release's log as its own.
//!
//! Open the instance once with [`open_db`] (or wrap an instance the application opened itself,
//! with [`column_family_descriptors`] included, in [`LogDb::new`]), and create one [`LogStore`]
//! per shard with [`LogStore::new`]. [`LogStore::open`] is the single-shard shortcut.
//!
//! # Durability: group commit across shards
//!
//! Writes are made with `sync = false`, so they are readable at once, and made durable by the
//! instance's [`GroupCommit`] thread, which syncs the write-ahead log once for every write made
//! before the sync started, whatever shard it came from. So:
//!
//! - `append` returns as soon as its entries are written (readable, as openraft requires), and
//!   its [`IOFlushed`] callback fires from the sync thread once they are on disk. The leader
//!   therefore replicates while its own fsync runs, and concurrent appends of all shards of a
//!   node share one fsync.
//! - `save_vote`, `truncate_after` and `purge` return only once their write is on disk.
//! - Completions run in the order the writes were made, so when any call returns or any
//!   callback fires, every earlier write of the store is durable and reported, as openraft
//!   requires of a log that is persisted in call order.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogStorage;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftTypeConfig;
use rocksdb::ColumnFamilyDescriptor;
use rocksdb::Direction;
use rocksdb::IteratorMode;
use rocksdb::Options;
use rocksdb::ReadOptions;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;
use rocksdb::DB;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::group_commit::GroupCommit;

/// Column family holding log entries of every shard.
pub const LOG_CF: &str = "raft_log";

/// Column family holding the vote, committed log id and last purged log id of every shard.
pub const META_CF: &str = "raft_meta";

/// Shard name used by [`LogStore::open`] when a database serves a single Raft group.
pub const DEFAULT_SHARD: &str = "default";

/// Longest shard name accepted, because its length is stored in one prefix byte.
pub const MAX_SHARD_NAME_LEN: usize = u8::MAX as usize;

/// The log database format this build reads and writes. Bump it, with a migration in
/// [`LogDb::new`] from every older version still in service, when the key layout or the
/// encoding of what is stored changes.
pub const FORMAT_VERSION: u64 = 1;

/// Where [`META_CF`] holds the instance's format version; the leading zero byte keeps it
/// apart from every shard's keys, whose first byte is a name length of at least 1.
const FORMAT_VERSION_KEY: &[u8] = b"\0format_version";

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// Upper bound on the memory one decoded record may claim.
///
/// Without a limit, a corrupt length prefix makes bincode allocate whatever length it reads,
/// which can abort the process; with it, such a record becomes a decode error instead.
const DECODE_LIMIT_BYTES: usize = 256 * 1024 * 1024;

/// The write-ahead log files kept, in bytes, before RocksDB flushes the column families
/// that hold the oldest one. Every family shares the WAL, and a WAL file stays until each
/// family's data in it is flushed; [`META_CF`] (votes, the committed index) takes small
/// writes and seldom fills a memtable, so RocksDB's default cap (4 x all the memtables,
/// ~1 GB here) let 175 MB of WAL pile up per node in 70 s of a 256-client on-sale, all of
/// it replayed at the next start.
pub const WAL_BYTES_MAX: u64 = 64 << 20;

/// Obsolete write-ahead log files RocksDB keeps to write the next ones into.
///
/// An `fdatasync` after appending to a file must also commit the file's new size (on ext4 a
/// journal commit, which concurrent syncs of other files queue behind); one after
/// overwriting blocks the file already has flushes only the data. Measured here with 4 KiB
/// writes: 147 us appending against 98 us overwriting with one writer, 287 us against
/// 158 us with three at once (the three replicas of a shard on one machine). RocksDB writes
/// recycled files in a format that names the file's current number in every record, so
/// recovery stops where the new records end instead of replaying the old ones; it supports
/// this with point-in-time recovery (our mode, its default) since 9.1. When it closes a
/// file it cuts it back to what that use wrote, so under steady load a file's next use
/// overwrites about as much as it then writes, and a busier spell appends past the end.
const RECYCLED_WAL_FILES: usize = 2;

/// The most [`open_db`] may prefill. Each of the two prefilled files stays within half of
/// [`WAL_BYTES_MAX`], so prefilling never makes RocksDB flush for the cap.
pub const WAL_PREFILL_BYTES_MAX: u64 = WAL_BYTES_MAX / 2;

/// Column families this module needs, for applications that open the RocksDB instance
/// themselves together with their own column families.
pub fn column_family_descriptors() -> Vec<ColumnFamilyDescriptor> {
    [LOG_CF, META_CF]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()))
        .collect()
}

/// Opens (creating if needed) the RocksDB instance at `path` with the log column families.
///
/// Column families that already exist in the database, such as a state machine's, are opened
/// too, with default options, because RocksDB refuses to open a database without all of them.
/// An application whose own column families need non-default options (a comparator or merge
/// operator) must open the database itself with [`column_family_descriptors`] added.
///
/// Write-ahead log files are recycled ([`RECYCLED_WAL_FILES`]), so a long-running node
/// overwrites old files instead of appending to new ones. A database created here starts
/// that way too: `wal_prefill_bytes` (at most [`WAL_PREFILL_BYTES_MAX`]) are written
/// into each of its first two WAL files before it is used ([`prefill_wal`]); 0 skips that.
pub fn open_db(path: impl AsRef<Path>, wal_prefill_bytes: u64) -> io::Result<LogDb> {
    let path = path.as_ref();
    if wal_prefill_bytes > WAL_PREFILL_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "raft log store: a WAL prefill of {wal_prefill_bytes} bytes is more than the \
                 {WAL_PREFILL_BYTES_MAX} allowed (half the WAL cap); lower it"
            ),
        ));
    }
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_total_wal_size(WAL_BYTES_MAX);
    opts.set_recycle_log_file_num(RECYCLED_WAL_FILES);
    // RocksDB writes `CURRENT` when it creates a database: without it, this one is new.
    let created = !path.join("CURRENT").exists();

    // A missing database has no column families to list; that is not an error here.
    let mut names = DB::list_cf(&opts, path).unwrap_or_default();
    for name in [LOG_CF, META_CF] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    let db = DB::open_cf(&opts, path, names).map_err(|e| {
        io::Error::other(format!(
            "raft log store: cannot open RocksDB at {}: {e}",
            path.display()
        ))
    })?;
    // Checked (and in a new database recorded) before the prefill, whose flush of the
    // meta family then takes the version along: written after it, the version would hold
    // the current WAL file until the meta family's next flush and keep it from reuse.
    check_format_version(&db)?;
    if created && wal_prefill_bytes > 0 {
        prefill_wal(&db, wal_prefill_bytes).map_err(|e| {
            io::Error::other(format!(
                "raft log store: cannot prefill the write-ahead log at {}: {e}",
                path.display()
            ))
        })?;
    }
    LogDb::new(Arc::new(db))
}

/// Leaves a new database writing into a recycled WAL file of at least `bytes`, with another
/// one kept for the next switch, so its first syncs overwrite too.
///
/// Each round fills the current WAL file with log-only records (`put_log_data`: they reach
/// no column family and recovery skips them), syncs it, and flushes [`META_CF`] with one
/// change in it, which makes RocksDB switch to the next WAL file and keep the filled one
/// for reuse. After two rounds the current file is the first one, reused; the second waits
/// its turn. The change is a marker put in the first round and deleted in the second, so
/// nothing of it stays.
fn prefill_wal(db: &DB, bytes: u64) -> Result<(), String> {
    const CHUNK: usize = 1 << 20;
    const MARKER: &[u8] = b"wal_prefill";
    let started = std::time::Instant::now();
    let meta = db
        .cf_handle(META_CF)
        .ok_or_else(|| format!("no column family {META_CF}"))?;
    let chunk = vec![0u8; CHUNK];
    for round in 0..RECYCLED_WAL_FILES {
        let mut left = bytes;
        while left > 0 {
            let len = left.min(CHUNK as u64) as usize;
            let mut batch = WriteBatch::default();
            batch.put_log_data(&chunk[..len]);
            db.write(batch).map_err(|e| e.to_string())?;
            left -= len as u64;
        }
        let marked = if round == 0 {
            db.put_cf(&meta, MARKER, [])
        } else {
            db.delete_cf(&meta, MARKER)
        };
        marked
            .and_then(|()| db.flush_wal(true))
            .and_then(|()| db.flush_cf(&meta))
            .map_err(|e| e.to_string())?;
    }
    tracing::info!(
        files = RECYCLED_WAL_FILES,
        bytes,
        ms = started.elapsed().as_millis() as u64,
        "raft log: write-ahead log prefilled for reuse"
    );
    Ok(())
}

/// A RocksDB instance holding the logs of one or more shards, with its sync thread.
///
/// Cloning is cheap; every clone shares the instance and the thread, which stops when the last
/// clone (including those inside [`LogStore`]s) is dropped.
#[derive(Clone)]
pub struct LogDb {
    db: Arc<DB>,
    group_commit: Arc<GroupCommit>,
}

impl LogDb {
    /// Wraps an instance that has [`LOG_CF`] and [`META_CF`], checks or records its
    /// [`FORMAT_VERSION`], and starts its sync thread.
    pub fn new(db: Arc<DB>) -> io::Result<LogDb> {
        for cf in [LOG_CF, META_CF] {
            if db.cf_handle(cf).is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("raft log store: RocksDB instance lacks column family {cf:?}"),
                ));
            }
        }
        check_format_version(&db)?;
        let group_commit = Arc::new(GroupCommit::start(db.clone())?);
        Ok(LogDb { db, group_commit })
    }

    /// The RocksDB instance, for callers that keep other column families in it or back it up.
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// The sequence number of the instance's latest write. Every write (an append, a vote,
    /// a truncation, a purge) takes a new one, so it never goes down while the database
    /// keeps what it wrote.
    pub fn latest_sequence(&self) -> u64 {
        self.db.latest_sequence_number()
    }

    /// A sequence number every write up to which is durable: the latest one, returned
    /// after a sync that covers it (shared with the appends waiting for a sync).
    pub async fn durable_sequence(&self) -> io::Result<u64> {
        let sequence = self.latest_sequence();
        self.group_commit.synced().await?;
        Ok(sequence)
    }
}

/// Told of every vote a [`LogStore`] has made durable, with the shard's name (the node's
/// fence, `crate::fence`). An error fails the `save_vote`, as a failed write would.
pub type VoteHook<C> = Arc<dyn Fn(&str, &VoteOf<C>) -> io::Result<()> + Send + Sync>;

impl fmt::Debug for LogDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogDb")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

/// Fails unless the instance records [`FORMAT_VERSION`]; records it, durably, in an instance
/// that records none (new, or written before the version was recorded: version 1).
fn check_format_version(db: &DB) -> io::Result<()> {
    let path = db.path().display();
    let meta = db.cf_handle(META_CF).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("raft log store: RocksDB instance lacks column family {META_CF:?}"),
        )
    })?;
    let recorded = db.get_cf(&meta, FORMAT_VERSION_KEY).map_err(|e| {
        io::Error::other(format!(
            "raft log store at {path}: cannot read the format version: {e}"
        ))
    })?;
    let Some(bytes) = recorded else {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        return db
            .put_cf_opt(
                &meta,
                FORMAT_VERSION_KEY,
                FORMAT_VERSION.to_be_bytes(),
                &opts,
            )
            .map_err(|e| {
                io::Error::other(format!(
                    "raft log store at {path}: cannot record the format version: {e}"
                ))
            });
    };
    let found = <[u8; 8]>::try_from(&*bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "raft log store at {path}: corrupt data: the format version is {} bytes, \
                     not 8",
                    bytes.len()
                ),
            )
        })?;
    if found != FORMAT_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "raft log store at {path}: the log database is in format version {found}, but \
                 this build reads only version {FORMAT_VERSION} (it was written by a newer \
                 release, or in a format this build no longer migrates); open it with a \
                 release that reads it, or rebuild this node's replicas from their peers"
            ),
        ));
    }
    Ok(())
}

/// The Raft log and vote of one shard, stored in a (possibly shared) RocksDB instance.
///
/// Cloning is cheap and yields a handle on the same shard; openraft uses clones as log readers.
pub struct LogStore<C>
where
    C: RaftTypeConfig,
{
    db: LogDb,
    shard: Arc<str>,
    prefix: Arc<[u8]>,
    /// Called after each vote is durable (the node's fence); none in plain use.
    vote_hook: Option<VoteHook<C>>,
    _config: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C>
where
    C: RaftTypeConfig,
{
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            shard: self.shard.clone(),
            prefix: self.prefix.clone(),
            vote_hook: self.vote_hook.clone(),
            _config: PhantomData,
        }
    }
}

impl<C> fmt::Debug for LogStore<C>
where
    C: RaftTypeConfig,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
{
    /// Opens a database at `path` holding only the [`DEFAULT_SHARD`] log.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::new(open_db(path, 0)?, DEFAULT_SHARD)
    }

    /// Creates the store of shard `shard` in `db`.
    ///
    /// Several stores with different shard names may share one `db`; two live stores must not
    /// use the same shard name, because openraft assumes it is the only writer of its log.
    pub fn new(db: LogDb, shard: &str) -> io::Result<Self> {
        if shard.is_empty() || shard.len() > MAX_SHARD_NAME_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "raft log store: shard name must be 1..={MAX_SHARD_NAME_LEN} bytes, got {}",
                    shard.len()
                ),
            ));
        }
        let mut prefix = Vec::with_capacity(1 + shard.len());
        // The length check above guarantees the cast is lossless.
        prefix.push(shard.len() as u8);
        prefix.extend_from_slice(shard.as_bytes());
        Ok(Self {
            db,
            shard: Arc::from(shard),
            prefix: Arc::from(prefix),
            vote_hook: None,
            _config: PhantomData,
        })
    }

    /// Calls `hook` after every vote this store makes durable, before `save_vote` returns.
    pub fn with_vote_hook(mut self, hook: VoteHook<C>) -> Self {
        self.vote_hook = Some(hook);
        self
    }

    /// The shard name this store was created with.
    pub fn shard(&self) -> &str {
        &self.shard
    }

    /// The shared RocksDB instance, for callers that keep other column families in it.
    pub fn db(&self) -> &Arc<DB> {
        &self.db.db
    }

    /// The RocksDB instance itself.
    fn rocks(&self) -> &DB {
        &self.db.db
    }

    fn log_key(&self, index: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + 8);
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(&index.to_be_bytes());
        key
    }

    /// A key greater than every log key of this shard and smaller than any other shard's key
    /// that sorts after it, used as the exclusive end of whole-tail scans and deletes.
    fn log_end_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + 9);
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(&[0xFF; 9]);
        key
    }

    /// Exclusive end key for log indexes below `end`, where `None` means "no upper limit".
    fn log_bound_key(&self, end: Option<u64>) -> Vec<u8> {
        match end {
            Some(end) => self.log_key(end),
            None => self.log_end_key(),
        }
    }

    fn meta_key(&self, name: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + name.len());
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(name);
        key
    }

    fn index_of_key(&self, key: &[u8]) -> io::Result<u64> {
        let suffix = key.strip_prefix(&*self.prefix).ok_or_else(|| {
            self.corrupt(format_args!(
                "log key {key:?} lies outside the shard prefix"
            ))
        })?;
        let bytes: [u8; 8] = suffix
            .try_into()
            .map_err(|_| self.corrupt(format_args!("log key {key:?} has no 8-byte index")))?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn cf(&self, name: &str) -> io::Result<&rocksdb::ColumnFamily> {
        // `new` checked the families exist and they are never dropped, so this only fails if
        // someone drops them behind our back; report it rather than panic.
        self.rocks().cf_handle(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "raft log store (shard {}): column family {name:?} is gone",
                    self.shard
                ),
            )
        })
    }

    fn corrupt(&self, what: fmt::Arguments<'_>) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "raft log store (shard {}): corrupt data: {what}",
                self.shard
            ),
        )
    }

    fn rocks_error(&self, op: &str, e: rocksdb::Error) -> io::Error {
        io::Error::other(format!(
            "raft log store (shard {}): RocksDB {op} failed: {e}",
            self.shard
        ))
    }

    fn encode<T: Serialize>(&self, what: &str, value: &T) -> io::Result<Vec<u8>> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "raft log store (shard {}): cannot encode {what}: {e}",
                    self.shard
                ),
            )
        })
    }

    fn decode<T: DeserializeOwned>(&self, what: fmt::Arguments<'_>, bytes: &[u8]) -> io::Result<T> {
        let config = bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>();
        let (value, read) = bincode::serde::decode_from_slice::<T, _>(bytes, config)
            .map_err(|e| self.corrupt(format_args!("{what}: {e}")))?;
        // Trailing bytes mean the record is not what we wrote, even if a prefix decodes.
        if read != bytes.len() {
            return Err(self.corrupt(format_args!(
                "{what}: {} trailing bytes after the record",
                bytes.len() - read
            )));
        }
        Ok(value)
    }

    fn decode_entry(&self, index: u64, bytes: &[u8]) -> io::Result<C::Entry> {
        let entry: C::Entry = self.decode(format_args!("log entry at index {index}"), bytes)?;
        // A record stored under the wrong key would silently reorder the log; reject it.
        if entry.index() != index {
            return Err(self.corrupt(format_args!(
                "log entry stored at index {index} claims index {}",
                entry.index()
            )));
        }
        Ok(entry)
    }

    fn read_meta<T: DeserializeOwned>(&self, name: &[u8]) -> io::Result<Option<T>> {
        let cf = self.cf(META_CF)?;
        let bytes = self
            .rocks()
            .get_pinned_cf(cf, self.meta_key(name))
            .map_err(|e| self.rocks_error("read of metadata", e))?;
        match bytes {
            None => Ok(None),
            Some(bytes) => self
                .decode(
                    format_args!("metadata {:?}", String::from_utf8_lossy(name)),
                    &bytes,
                )
                .map(Some),
        }
    }

    fn last_purged(&self) -> io::Result<Option<LogIdOf<C>>> {
        // The key holds an `Option` so that its absence and a stored `None` mean the same.
        Ok(self
            .read_meta::<Option<LogIdOf<C>>>(LAST_PURGED_KEY)?
            .flatten())
    }

    /// Reads the entry with the greatest index of this shard, if any.
    fn last_entry(&self) -> io::Result<Option<C::Entry>> {
        let cf = self.cf(LOG_CF)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(self.log_key(0));
        let end = self.log_end_key();
        let mut iter =
            self.rocks()
                .iterator_cf_opt(cf, opts, IteratorMode::From(&end, Direction::Reverse));
        match iter.next() {
            None => Ok(None),
            Some(Err(e)) => Err(self.rocks_error("reverse scan of the log", e)),
            Some(Ok((key, value))) => {
                let index = self.index_of_key(&key)?;
                self.decode_entry(index, &value).map(Some)
            }
        }
    }

    /// Reads entries with `start <= index < end` (`end == None` means unbounded) in one
    /// consistent RocksDB view, rejecting holes between the first and last entry found.
    fn read_range(&self, start: u64, end: Option<u64>) -> io::Result<Vec<C::Entry>> {
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let cf = self.cf(LOG_CF)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(self.log_bound_key(end));
        let from = self.log_key(start);
        // An iterator reads from an implicit snapshot, so the result is atomic even while
        // another handle appends or truncates concurrently.
        let iter =
            self.rocks()
                .iterator_cf_opt(cf, opts, IteratorMode::From(&from, Direction::Forward));
        let mut entries: Vec<C::Entry> = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|e| self.rocks_error("scan of the log", e))?;
            let index = self.index_of_key(&key)?;
            if let Some(prev) = entries.last() {
                if index != prev.index() + 1 {
                    return Err(self.corrupt(format_args!(
                        "hole in the log: index {} is followed by index {index}",
                        prev.index()
                    )));
                }
            }
            entries.push(self.decode_entry(index, &value)?);
        }
        Ok(entries)
    }

    /// Encodes `entries` into one write batch, so that an append is atomic on disk.
    fn entries_batch(&self, entries: impl IntoIterator<Item = C::Entry>) -> io::Result<WriteBatch> {
        let cf = self.cf(LOG_CF)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = self.encode("log entry", &entry)?;
            batch.put_cf(cf, self.log_key(entry.index()), bytes);
        }
        Ok(batch)
    }

    /// Writes `batch` without waiting for the disk; the data is readable on return.
    fn write_unsynced(&self, op: &'static str, batch: WriteBatch) -> io::Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        self.rocks()
            .write_opt(batch, &opts)
            .map_err(|e| self.rocks_error(op, e))
    }

    /// Writes `batch` and waits until it, and every earlier write, is on disk.
    async fn write_durable(&self, op: &'static str, batch: WriteBatch) -> io::Result<()> {
        self.write_unsynced(op, batch)?;
        let synced = self.db.group_commit.synced().await;
        synced.map_err(|e| sync_error(&self.shard, op, e))
    }
}

/// Names the shard and the operation whose write could not be made durable.
fn sync_error(shard: &str, op: &str, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("raft log store (shard {shard}): {op}: {e}"),
    )
}

/// Converts any `RangeBounds<u64>` into a start index and an exclusive end (`None` = unbounded).
fn range_to_start_end<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => Some(s),
        Bound::Excluded(&s) => s.checked_add(1),
        Bound::Unbounded => Some(0),
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    match start {
        Some(start) => (start, end),
        // The range starts after u64::MAX, so it is empty; express that as `[0, 0)`.
        None => (0, Some(0)),
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
{
    async fn try_get_log_entries<RB>(&mut self, range: RB) -> Result<Vec<C::Entry>, io::Error>
    where
        RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend,
    {
        let (start, end) = range_to_start_end(&range);
        self.read_range(start, end)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.read_meta(VOTE_KEY)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id()),
            // With no entry left, openraft expects the last purged id as the last log id.
            None => last_purged_log_id.clone(),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let bytes = self.encode("vote", vote)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(META_CF)?, self.meta_key(VOTE_KEY), bytes);
        self.write_durable("write of the vote", batch).await?;
        // After the vote is durable, so what the hook records never runs ahead of the log.
        // A small blocking write, once per election.
        match &self.vote_hook {
            Some(hook) => hook(&self.shard, vote),
            None => Ok(()),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let bytes = self.encode("committed log id", &committed)?;
        let cf = self.cf(META_CF)?;
        // No fsync: openraft calls this after every commit, and a lost update only makes the
        // node re-apply from an older committed id after a crash. RocksDB recovers a prefix of
        // its write-ahead log, so a committed id never survives without the entries before it.
        self.rocks()
            .put_cf(cf, self.meta_key(COMMITTED_KEY), bytes)
            .map_err(|e| self.rocks_error("write of the committed log id", e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self
            .read_meta::<Option<LogIdOf<C>>>(COMMITTED_KEY)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let written = self
            .entries_batch(entries)
            .and_then(|batch| self.write_unsynced("append to the log", batch));
        match written {
            Ok(()) => {
                // Readable now; the callback fires once the sync thread has made it durable.
                let shard = self.shard.clone();
                self.db.group_commit.after_sync(Box::new(move |result| {
                    callback.io_completed(
                        result.map_err(|e| sync_error(&shard, "append to the log", e)),
                    )
                }));
                Ok(())
            }
            Err(e) => {
                // Report the failure through the callback as well, since openraft may only be
                // waiting on the callback; the returned error is for the caller of `append`.
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = match &last_log_id {
            Some(log_id) => match log_id.index.checked_add(1) {
                Some(from) => from,
                None => return Ok(()),
            },
            None => 0,
        };
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(LOG_CF)?, self.log_key(from), self.log_end_key());
        self.write_durable("truncation of the log", batch).await
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let bytes = self.encode("last purged log id", &Some(log_id.clone()))?;
        let end = self.log_bound_key(log_id.index.checked_add(1));
        let mut batch = WriteBatch::default();
        // The purge marker and the deletion go in one batch so a crash cannot leave entries
        // deleted without a marker saying where the log now starts.
        batch.put_cf(self.cf(META_CF)?, self.meta_key(LAST_PURGED_KEY), bytes);
        batch.delete_range_cf(self.cf(LOG_CF)?, self.log_key(0), end);
        self.write_durable("purge of the log", batch).await
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests and the openraft storage conformance suite.
    //!
    //! The suite also exercises a state machine, so a minimal in-memory one lives here; the
    //! real state-machine adapter is meant to be run through the same suite against this log
    //! store once it exists.

    use std::collections::BTreeMap;
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;

    use futures_util::Stream;
    use futures_util::StreamExt;
    use openraft::alias::SnapshotMetaOf;
    use openraft::alias::SnapshotOf;
    use openraft::alias::StoredMembershipOf;
    use openraft::storage::EntryResponder;
    use openraft::storage::RaftLogStorageExt;
    use openraft::storage::RaftStateMachine;
    use openraft::testing::log::StoreBuilder;
    use openraft::testing::log::Suite;
    use openraft::type_config::TypeConfigExt;
    use openraft::vote::RaftLeaderId;
    use openraft::vote::RaftLeaderIdExt;
    use openraft::vote::RaftVote;
    use openraft::EntryPayload;
    use openraft::Membership;
    use openraft::RaftSnapshotBuilder;
    use openraft::StorageError;
    use tempfile::TempDir;

    use super::*;

    openraft::declare_raft_types!(
        /// Test configuration: string commands and responses, default everything else.
        pub TestConfig:
            D = String,
            R = String,
    );

    type C = TestConfig;
    type Entry = <C as RaftTypeConfig>::Entry;

    fn log_id(term: u64, node: u64, index: u64) -> LogIdOf<C> {
        openraft::LogId {
            leader_id: <C as RaftTypeConfig>::LeaderId::new_committed(term, node),
            index,
        }
    }

    fn normal(term: u64, index: u64, data: &str) -> Entry {
        Entry::new_normal(log_id(term, 1, index), data.to_string())
    }

    fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range
            .map(|i| normal(term, i, &format!("cmd-{i}")))
            .collect()
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.index()).collect()
    }

    fn temp_store() -> (TempDir, LogStore<C>) {
        let dir = TempDir::new().expect("temp dir");
        let store = LogStore::<C>::open(dir.path()).expect("open store");
        (dir, store)
    }

    #[tokio::test]
    async fn append_then_read_back() {
        let (_dir, mut store) = temp_store();
        store
            .blocking_append(entries(1, 1..=5))
            .await
            .expect("append");

        let mut reader = store.get_log_reader().await;
        let got = reader.try_get_log_entries(2..4).await.expect("read");
        assert_eq!(indexes(&got), vec![2, 3]);
        assert!(matches!(&got[0].payload, EntryPayload::Normal(d) if d == "cmd-2"));

        let all = reader.try_get_log_entries(..).await.expect("read all");
        assert_eq!(indexes(&all), vec![1, 2, 3, 4, 5]);
        let tail = reader
            .try_get_log_entries(4..=100)
            .await
            .expect("read tail");
        assert_eq!(indexes(&tail), vec![4, 5]);

        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 5)));
        assert_eq!(state.last_purged_log_id, None);
    }

    #[tokio::test]
    async fn membership_and_blank_entries_round_trip() {
        let (_dir, mut store) = temp_store();
        let members: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
        let membership = Membership::new_with_defaults(vec![members], []);
        store
            .blocking_append([
                Entry::new_blank(log_id(1, 1, 1)),
                Entry::new_membership(log_id(1, 1, 2), membership.clone()),
            ])
            .await
            .expect("append");
        let got = store.try_get_log_entries(1..3).await.expect("read");
        assert!(matches!(got[0].payload, EntryPayload::Blank));
        assert!(matches!(&got[1].payload, EntryPayload::Membership(m) if *m == membership));
    }

    #[tokio::test]
    async fn appends_report_durability_in_order_and_before_later_calls_return() {
        let dir = TempDir::new().expect("temp dir");
        let db = open_db(dir.path(), 0).expect("open db");
        let mut a = LogStore::<C>::new(db.clone(), "a").expect("shard a");
        let mut b = LogStore::<C>::new(db.clone(), "b").expect("shard b");
        let mut flushed = Vec::new();
        for i in 1..=20u64 {
            let (tx, rx) = C::oneshot();
            let store = if i % 2 == 0 { &mut a } else { &mut b };
            store
                .append(entries(1, i..=i), IOFlushed::signal(tx))
                .await
                .expect("append");
            // Readable as soon as `append` returns, whether or not it is on disk yet.
            assert_eq!(
                indexes(&store.try_get_log_entries(i..=i).await.expect("read")),
                vec![i]
            );
            flushed.push(rx);
        }
        // A vote save returns only once it is durable, and completions run in order, so
        // every earlier append of either shard has reported by then.
        let vote = VoteOf::<C>::from_leader_id(<C as RaftTypeConfig>::LeaderId::new(1, 1), false);
        a.save_vote(&vote).await.expect("vote");
        for (i, mut rx) in flushed.into_iter().enumerate() {
            match rx.try_recv() {
                Ok(result) => result.expect("append flushed"),
                Err(e) => panic!(
                    "append {} had not reported when the vote returned: {e}",
                    i + 1
                ),
            }
        }
    }

    #[tokio::test]
    async fn truncate_after_removes_the_tail() {
        let (_dir, mut store) = temp_store();
        store
            .blocking_append(entries(1, 1..=10))
            .await
            .expect("append");

        store
            .truncate_after(Some(log_id(1, 1, 6)))
            .await
            .expect("truncate");
        let got = store.try_get_log_entries(..).await.expect("read");
        assert_eq!(indexes(&got), (1..=6).collect::<Vec<_>>());
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 6)));

        // A new leader's entries replace the truncated tail.
        store
            .blocking_append(entries(2, 7..=8))
            .await
            .expect("append");
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(2, 1, 8)));

        store.truncate_after(None).await.expect("truncate all");
        assert!(store
            .try_get_log_entries(..)
            .await
            .expect("read")
            .is_empty());
        assert_eq!(
            store.get_log_state().await.expect("state").last_log_id,
            None
        );
    }

    #[test]
    fn the_write_ahead_log_stays_bounded_while_the_meta_family_barely_changes() {
        let dir = TempDir::new().expect("temp dir");
        let db = open_db(dir.path(), 0).expect("open");
        let db = db.db();
        let (log, meta) = (
            db.cf_handle(LOG_CF).unwrap(),
            db.cf_handle(META_CF).unwrap(),
        );
        // One small meta write pins the WAL it lands in until the meta family flushes.
        db.put_cf(&meta, b"vote", b"v").unwrap();
        let value = vec![7u8; 64 * 1024];
        let total = 3 * WAL_BYTES_MAX;
        for i in 0..total / value.len() as u64 {
            db.put_cf(&log, i.to_be_bytes(), &value).unwrap();
            if i >= 16 {
                db.delete_cf(&log, (i - 16).to_be_bytes()).unwrap();
            }
        }
        let wal: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
            .map(|entry| entry.metadata().unwrap().len())
            .sum();
        assert!(
            wal <= 2 * WAL_BYTES_MAX,
            "{} MB of WAL kept after writing {} MB",
            wal >> 20,
            total >> 20
        );
    }

    /// The sizes of the write-ahead log files in `dir`, by name.
    fn wal_files(dir: &Path) -> BTreeMap<String, u64> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
            .map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                (name, entry.metadata().unwrap().len())
            })
            .collect()
    }

    /// A copy of `from` as a crash leaves it: whatever the files hold now, unsynced or not,
    /// with the database still open.
    fn crash_copy(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "LOCK" {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn a_new_database_starts_in_a_prefilled_wal_file_and_leaves_no_trace_of_it() {
        let dir = TempDir::new().expect("temp dir");
        let prefill = 1 << 20;
        let db = open_db(dir.path(), prefill).expect("open");
        let files = wal_files(dir.path());
        // The current file and the one kept for the next switch, both filled.
        assert_eq!(files.len(), RECYCLED_WAL_FILES, "{files:?}");
        assert!(files.values().all(|&len| len >= prefill), "{files:?}");
        let meta = db.db().cf_handle(META_CF).unwrap();
        assert_eq!(db.db().get_cf(&meta, b"wal_prefill").unwrap(), None);
        drop(db);

        // An existing database is not prefilled again.
        let before = wal_files(dir.path());
        let db = open_db(dir.path(), prefill).expect("reopen");
        drop(db);
        let after = wal_files(dir.path());
        let grown: u64 = after.values().sum::<u64>();
        assert!(
            grown <= before.values().sum::<u64>() + prefill / 2,
            "reopening wrote another prefill: {before:?} -> {after:?}"
        );
    }

    #[test]
    fn a_prefill_beyond_half_the_wal_cap_is_refused_and_creates_nothing() {
        let dir = TempDir::new().expect("temp dir");
        let path = dir.path().join("raft-log");
        let error = open_db(&path, WAL_PREFILL_BYTES_MAX + 1).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("lower it"), "{error}");
        assert!(!path.exists());
    }

    /// Appends entries `range` of ~1 KiB each, 20 per call, each call synced.
    async fn append_kib_entries(store: &mut LogStore<C>, range: std::ops::RangeInclusive<u64>) {
        let all: Vec<u64> = range.collect();
        for chunk in all.chunks(20) {
            let batch = chunk
                .iter()
                .map(|&i| normal(1, i, &format!("{i}:{}", "x".repeat(1024))))
                .collect::<Vec<_>>();
            store.blocking_append(batch).await.expect("append");
        }
    }

    /// Opens a crash copy of `dir` and checks that it holds exactly entries 1..=`last`,
    /// each with its own payload.
    async fn assert_recovers(dir: &Path, last: u64) {
        let crashed = TempDir::new().expect("temp dir");
        crash_copy(dir, crashed.path());
        let mut store = LogStore::<C>::new(open_db(crashed.path(), 0).unwrap(), "s").unwrap();
        let got = store.try_get_log_entries(..).await.expect("read");
        assert_eq!(indexes(&got), (1..=last).collect::<Vec<_>>());
        for entry in &got {
            let EntryPayload::Normal(data) = &entry.payload else {
                panic!("entry {} is not a command", entry.index());
            };
            assert_eq!(data, &format!("{}:{}", entry.index(), "x".repeat(1024)));
        }
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 1, last)));
    }

    #[tokio::test]
    async fn after_a_crash_a_recycled_wal_gives_back_exactly_what_was_synced() {
        let dir = TempDir::new().expect("temp dir");
        let db = open_db(dir.path(), 256 << 10).unwrap();
        let mut store = LogStore::<C>::new(db.clone(), "s").unwrap();
        // Inside the prefilled file: the prefill's old records follow the new ones.
        append_kib_entries(&mut store, 1..=100).await;
        assert_recovers(dir.path(), 100).await;
        // Past the prefill's end, into new space.
        append_kib_entries(&mut store, 101..=400).await;
        assert_recovers(dir.path(), 400).await;
        // Two switches later the current file is the one that held these entries again,
        // and its older records follow the new ones.
        let log = db.db().cf_handle(LOG_CF).unwrap();
        let first = wal_files(dir.path());
        db.db().flush_cf(&log).expect("flush");
        append_kib_entries(&mut store, 401..=410).await;
        db.db().flush_cf(&log).expect("flush");
        append_kib_entries(&mut store, 411..=420).await;
        // The file written now is the 420 KiB one, reused: no file of that size is new.
        let now = wal_files(dir.path());
        assert!(
            now.keys().all(|name| !first.contains_key(name))
                && now.values().max() == first.values().max(),
            "no WAL file was reused: {first:?} -> {now:?}"
        );
        assert_recovers(dir.path(), 420).await;
    }

    #[tokio::test]
    async fn purge_removes_the_head_and_remembers_it() {
        let dir = TempDir::new().expect("temp dir");
        {
            let mut store = LogStore::<C>::open(dir.path()).expect("open");
            store
                .blocking_append(entries(1, 1..=10))
                .await
                .expect("append");
            store.purge(log_id(1, 1, 4)).await.expect("purge");

            let got = store.try_get_log_entries(0..100).await.expect("read");
            assert_eq!(indexes(&got), (5..=10).collect::<Vec<_>>());
            let state = store.get_log_state().await.expect("state");
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 4)));
            assert_eq!(state.last_log_id, Some(log_id(1, 1, 10)));

            // Purging past the end leaves the purge point as the last log id.
            store.purge(log_id(1, 1, 12)).await.expect("purge all");
            let state = store.get_log_state().await.expect("state");
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 12)));
            assert_eq!(state.last_log_id, Some(log_id(1, 1, 12)));
        }
        let mut store = LogStore::<C>::open(dir.path()).expect("reopen");
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 12)));
    }

    #[tokio::test]
    async fn vote_and_committed_survive_reopen() {
        let dir = TempDir::new().expect("temp dir");
        let vote = VoteOf::<C>::from_leader_id(<C as RaftTypeConfig>::LeaderId::new(3, 2), true);
        {
            let mut store = LogStore::<C>::open(dir.path()).expect("open");
            assert_eq!(store.read_vote().await.expect("read vote"), None);
            store.save_vote(&vote).await.expect("save vote");
            store
                .save_committed(Some(log_id(3, 2, 7)))
                .await
                .expect("save committed");
            store
                .blocking_append(entries(3, 1..=3))
                .await
                .expect("append");
        }
        let mut store = LogStore::<C>::open(dir.path()).expect("reopen");
        assert_eq!(store.read_vote().await.expect("read vote"), Some(vote));
        assert_eq!(
            store.read_committed().await.expect("committed"),
            Some(log_id(3, 2, 7))
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(..).await.expect("read")),
            vec![1, 2, 3]
        );
    }

    #[tokio::test]
    async fn shards_sharing_a_database_are_isolated() {
        let dir = TempDir::new().expect("temp dir");
        let db = open_db(dir.path(), 0).expect("open db");
        // "a" is a byte prefix of "ab"; the length byte must keep their keys apart.
        let mut a = LogStore::<C>::new(db.clone(), "a").expect("shard a");
        let mut ab = LogStore::<C>::new(db.clone(), "ab").expect("shard ab");

        a.blocking_append(entries(1, 1..=5))
            .await
            .expect("append a");
        ab.blocking_append(entries(2, 1..=3))
            .await
            .expect("append ab");
        a.save_vote(&VoteOf::<C>::from_leader_id(
            <C as RaftTypeConfig>::LeaderId::new(1, 1),
            false,
        ))
        .await
        .expect("vote a");

        ab.purge(log_id(2, 1, 1)).await.expect("purge ab");
        a.truncate_after(Some(log_id(1, 1, 4)))
            .await
            .expect("truncate a");

        assert_eq!(
            indexes(&a.try_get_log_entries(..).await.expect("a")),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            indexes(&ab.try_get_log_entries(..).await.expect("ab")),
            vec![2, 3]
        );
        assert_eq!(ab.read_vote().await.expect("vote ab"), None);
        assert_eq!(a.get_log_state().await.expect("a").last_purged_log_id, None);
        assert_eq!(
            ab.get_log_state().await.expect("ab").last_log_id,
            Some(log_id(2, 1, 3))
        );

        assert!(LogStore::<C>::new(db.clone(), "").is_err());
        assert!(LogStore::<C>::new(db, &"x".repeat(256)).is_err());
    }

    #[tokio::test]
    async fn corrupt_bytes_give_errors_not_panics() {
        let (_dir, mut store) = temp_store();
        store
            .blocking_append(entries(1, 1..=3))
            .await
            .expect("append");
        let db = store.db().clone();
        let log_cf = db.cf_handle(LOG_CF).expect("log cf");
        let meta_cf = db.cf_handle(META_CF).expect("meta cf");

        // Garbage, including a huge length prefix, where entry 2 should be.
        db.put_cf(
            log_cf,
            store.log_key(2),
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x01],
        )
        .expect("put");
        let err = store
            .try_get_log_entries(1..=3)
            .await
            .expect_err("corrupt entry");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("index 2"), "{err}");

        // A well-formed header whose string length claims a terabyte must fail on the decode
        // limit rather than abort the process on allocation. The encoding ends with the string
        // length (one varint byte, 2) and the bytes "ab"; swap that length for 2^40.
        let mut huge =
            bincode::serde::encode_to_vec(normal(1, 2, "ab"), bincode::config::standard())
                .expect("encode");
        assert_eq!(&huge[huge.len() - 3..], &[2, b'a', b'b']);
        huge.truncate(huge.len() - 3);
        huge.push(253); // varint marker for a following little-endian u64
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        huge.extend_from_slice(b"ab");
        db.put_cf(log_cf, store.log_key(2), huge).expect("put");
        let err = store
            .try_get_log_entries(2..3)
            .await
            .expect_err("oversized length");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // A valid entry stored under the wrong index is corruption too.
        let moved = bincode::serde::encode_to_vec(normal(1, 9, "x"), bincode::config::standard())
            .expect("encode");
        db.put_cf(log_cf, store.log_key(3), moved).expect("put");
        let err = store
            .get_log_state()
            .await
            .expect_err("misplaced last entry");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        db.put_cf(meta_cf, store.meta_key(VOTE_KEY), b"\x05nope")
            .expect("put");
        let err = store.read_vote().await.expect_err("corrupt vote");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // Trailing bytes after a well-formed record are rejected as well.
        let mut purged =
            bincode::serde::encode_to_vec(Some(log_id(1, 1, 1)), bincode::config::standard())
                .expect("encode");
        purged.push(0);
        db.put_cf(meta_cf, store.meta_key(LAST_PURGED_KEY), purged)
            .expect("put");
        let err = store.get_log_state().await.expect_err("trailing bytes");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn holes_inside_a_range_are_errors() {
        let (_dir, mut store) = temp_store();
        store
            .blocking_append(entries(1, 1..=5))
            .await
            .expect("append");
        let db = store.db().clone();
        db.delete_cf(db.cf_handle(LOG_CF).expect("cf"), store.log_key(3))
            .expect("delete");
        let err = store.try_get_log_entries(1..=5).await.expect_err("hole");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Missing entries at the edges of a range are allowed by the reader contract.
        assert_eq!(
            indexes(&store.try_get_log_entries(4..9).await.expect("tail")),
            vec![4, 5]
        );
    }

    #[test]
    fn range_conversion_handles_extremes() {
        assert_eq!(range_to_start_end(&(..)), (0, None));
        assert_eq!(range_to_start_end(&(3..7)), (3, Some(7)));
        assert_eq!(range_to_start_end(&(3..=u64::MAX)), (3, None));
        let after_max = (Bound::Excluded(u64::MAX), Bound::Unbounded);
        assert_eq!(range_to_start_end(&after_max), (0, Some(0)));
    }

    // ---- Minimal in-memory state machine, only to drive the conformance suite. ----

    #[derive(Default)]
    struct SmState {
        last_applied: Option<LogIdOf<C>>,
        membership: StoredMembershipOf<C>,
        snapshot: Option<SnapshotOf<C, Vec<u8>>>,
    }

    /// Keeps applied position and membership in memory; snapshots hold no application data.
    #[derive(Clone, Default)]
    struct MemStateMachine {
        state: Arc<Mutex<SmState>>,
    }

    impl RaftSnapshotBuilder<C> for MemStateMachine {
        type SnapshotData = Vec<u8>;

        async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Vec<u8>>, io::Error> {
            let mut state = self
                .state
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?;
            let snapshot = SnapshotOf::<C, Vec<u8>> {
                meta: SnapshotMetaOf::<C> {
                    last_log_id: state.last_applied,
                    last_membership: state.membership.clone(),
                },
                snapshot: Vec::new(),
            };
            state.snapshot = Some(snapshot.clone());
            Ok(snapshot)
        }
    }

    impl RaftStateMachine<C> for MemStateMachine {
        type SnapshotData = Vec<u8>;
        type SnapshotBuilder = Self;

        async fn applied_state(
            &mut self,
        ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
            let state = self
                .state
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?;
            Ok((state.last_applied, state.membership.clone()))
        }

        async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
        where
            Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
        {
            while let Some(item) = entries.next().await {
                let (entry, responder) = item?;
                let response = {
                    let mut state = self
                        .state
                        .lock()
                        .map_err(|_| io::Error::other("poisoned"))?;
                    state.last_applied = Some(entry.log_id());
                    if let Some(m) = entry.get_membership() {
                        state.membership = StoredMembershipOf::<C>::new(Some(entry.log_id()), m);
                    }
                    match &entry.payload {
                        EntryPayload::Normal(data) => data.clone(),
                        _ => String::new(),
                    }
                };
                if let Some(responder) = responder {
                    responder.send(response);
                }
            }
            Ok(())
        }

        async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
            self.clone()
        }

        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMetaOf<C>,
            snapshot: Vec<u8>,
        ) -> Result<(), io::Error> {
            let mut state = self
                .state
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?;
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            state.snapshot = Some(SnapshotOf::<C, Vec<u8>> {
                meta: meta.clone(),
                snapshot,
            });
            Ok(())
        }

        async fn get_current_snapshot(
            &mut self,
        ) -> Result<Option<SnapshotOf<C, Vec<u8>>>, io::Error> {
            let state = self
                .state
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?;
            Ok(state.snapshot.clone())
        }
    }

    /// Builds each suite case on a fresh database.
    struct FreshDbBuilder;

    impl StoreBuilder<C, LogStore<C>, MemStateMachine, TempDir> for FreshDbBuilder {
        async fn build(&self) -> Result<(TempDir, LogStore<C>, MemStateMachine), StorageError<C>> {
            let dir = TempDir::new().map_err(|e| StorageError::write(C::err_from_error(&e)))?;
            let store = LogStore::open(dir.path())
                .map_err(|e| StorageError::write(C::err_from_error(&e)))?;
            Ok((dir, store, MemStateMachine::default()))
        }
    }

    /// Builds each suite case as a new shard of one shared database whose other shards hold
    /// data, so any leak between shards shows up as a suite failure.
    struct SharedDbBuilder {
        db: LogDb,
        next_shard: AtomicU64,
    }

    impl StoreBuilder<C, LogStore<C>, MemStateMachine> for SharedDbBuilder {
        async fn build(&self) -> Result<((), LogStore<C>, MemStateMachine), StorageError<C>> {
            let n = self.next_shard.fetch_add(1, Ordering::Relaxed);
            let store = LogStore::new(self.db.clone(), &format!("shard-{n}"))
                .map_err(|e| StorageError::write(C::err_from_error(&e)))?;
            Ok(((), store, MemStateMachine::default()))
        }
    }

    /// A key and its value.
    type Item = (Box<[u8]>, Box<[u8]>);

    /// Every key and value of both column families, read with RocksDB alone.
    fn contents(path: &Path) -> Vec<Item> {
        let opts = Options::default();
        let db = DB::open_cf(&opts, path, [LOG_CF, META_CF]).expect("open with RocksDB");
        let mut items = Vec::new();
        for cf in [LOG_CF, META_CF] {
            let handle = db.cf_handle(cf).expect("family");
            for item in db.iterator_cf(&handle, IteratorMode::Start) {
                items.push(item.expect("read"));
            }
        }
        items
    }

    /// Sets (or with `None` deletes) the recorded format version with RocksDB alone.
    fn set_format_version(path: &Path, bytes: Option<&[u8]>) {
        let opts = Options::default();
        let db = DB::open_cf(&opts, path, [LOG_CF, META_CF]).expect("open with RocksDB");
        let meta = db.cf_handle(META_CF).expect("meta cf");
        match bytes {
            Some(bytes) => db.put_cf(&meta, FORMAT_VERSION_KEY, bytes),
            None => db.delete_cf(&meta, FORMAT_VERSION_KEY),
        }
        .expect("write");
    }

    fn recorded_format_version(db: &LogDb) -> Option<Vec<u8>> {
        let meta = db.db().cf_handle(META_CF).expect("meta cf");
        db.db().get_cf(&meta, FORMAT_VERSION_KEY).expect("read")
    }

    /// A database with a few entries of shard "s", closed.
    async fn log_with_entries(path: &Path) {
        let mut store = LogStore::<C>::new(open_db(path, 0).expect("open"), "s").expect("shard");
        store
            .blocking_append(entries(1, 1..=3))
            .await
            .expect("append");
    }

    #[tokio::test]
    async fn a_new_database_records_the_format_version() {
        let dir = TempDir::new().expect("temp dir");
        let db = open_db(dir.path(), 0).expect("open");
        let expected = FORMAT_VERSION.to_be_bytes().to_vec();
        assert_eq!(recorded_format_version(&db), Some(expected));
        drop(db);
        log_with_entries(dir.path()).await;
    }

    #[tokio::test]
    async fn a_database_written_before_format_versions_opens_as_version_1() {
        let dir = TempDir::new().expect("temp dir");
        log_with_entries(dir.path()).await;
        set_format_version(dir.path(), None);
        let db = open_db(dir.path(), 0).expect("an unversioned database is version 1");
        assert_eq!(
            recorded_format_version(&db),
            Some(1u64.to_be_bytes().to_vec())
        );
        let mut store = LogStore::<C>::new(db, "s").expect("shard");
        let got = store.try_get_log_entries(..).await.expect("read");
        assert_eq!(indexes(&got), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_database_of_a_newer_format_is_refused_and_left_as_it_was() {
        let dir = TempDir::new().expect("temp dir");
        log_with_entries(dir.path()).await;
        set_format_version(dir.path(), Some(&2u64.to_be_bytes()));
        let before = contents(dir.path());
        let error = open_db(dir.path(), 0).expect_err("a newer format is refused");
        assert_eq!(error.kind(), io::ErrorKind::Unsupported);
        let message = error.to_string();
        assert!(
            message.contains("format version 2") && message.contains("reads only version 1"),
            "{message}"
        );
        assert_eq!(
            contents(dir.path()),
            before,
            "a refused open changed the database"
        );

        set_format_version(dir.path(), Some(&[1]));
        let error = open_db(dir.path(), 0).expect_err("a malformed version is refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn conformance_suite_on_fresh_databases() {
        Suite::test_all(FreshDbBuilder)
            .await
            .expect("openraft storage suite");
    }

    #[tokio::test]
    async fn conformance_suite_on_a_shared_database() {
        let dir = TempDir::new().expect("temp dir");
        let db = open_db(dir.path(), 0).expect("open db");
        // Neighbours on both sides of the suite's shards in key order, full of data.
        for name in ["shard-", "shard-x", "shard-99", "zzz"] {
            let mut other = LogStore::<C>::new(db.clone(), name).expect("neighbour");
            other
                .blocking_append(entries(7, 0..=20))
                .await
                .expect("append");
            let vote =
                VoteOf::<C>::from_leader_id(<C as RaftTypeConfig>::LeaderId::new(7, 1), true);
            other.save_vote(&vote).await.expect("vote");
            other
                .save_committed(Some(log_id(7, 1, 20)))
                .await
                .expect("committed");
            other.purge(log_id(7, 1, 2)).await.expect("purge");
        }
        let builder = SharedDbBuilder {
            db,
            next_shard: AtomicU64::new(0),
        };
        Suite::test_all(builder)
            .await
            .expect("openraft storage suite on shared db");
    }
}
