//! RocksDB persistence of one shard's ledger.
//!
//! The ledger lives in memory; RocksDB holds its durable image. `apply_batch` applies
//! commands, then writes every key they touched, their events and the caller's
//! applied-position marker in one `WriteBatch`, so the image on disk always matches a
//! prefix of the log. Reopening rebuilds the same ledger from the image. After a write
//! fails, the store refuses all further work: memory and disk may disagree, and the
//! replica must stop rather than acknowledge what it did not persist.
//!
//! Key layout (one column family; big-endian numbers so keys sort like numbers):
//! `M:format_version`, `M:clock`, `M:marker`, `M:events_kept_from`, `M:rules` (the
//! replicated rules, once set), `T|theater`,
//! `S|show`, `X|show|seat` (only seats that are not available), `B|booking`,
//! `R|request id` (idempotency records), `Y|kind|second|request id` (empty: the records
//! by bucket, to forget them), `Z|kind|second` (each live bucket's count and hash; see
//! `requests.rs`), `E|log index|seq` (events), `U|user`, `K|token hash`, `A|audit entry id`, `Q|ticket`,
//! `W|consumer cursor`, `N|user` (notification channels), `P|booking` (payments),
//! `V|booking` (ratings), `C|code` (coupons), `O|code/booking` (coupon uses),
//! `F|referee` (referrals). Every prefix byte is distinct (`PREFIXES`, tested).
//!
//! The values are the codec's positional encoding of the ledger's records, so the
//! layout and the records together are the store's format, [`FORMAT_VERSION`]: written
//! when a store is created and checked at every open, so that a build never reads a
//! store of a format it does not know as if it were its own (see `open`). Stores
//! written before the key existed are version 1; version 2 added `M:rules`, which a
//! version 1 build would ignore (and apply its own file's rules), so it must refuse.
//! Version 1 stores open as version 2 (they have no rules yet). Version 3 moved the
//! idempotency records out of memory: they stay under `R|` and gained the `Y|` and `Z|`
//! keys, which opening a version 1 or 2 store builds from its `R|` records; a version 2
//! build would not maintain them, so it must refuse a version 3 store.
//!
//! The idempotency records are never loaded whole: open reads the buckets (`Z|`), and
//! each batch reads the records of its own request ids before applying
//! (`RequestTable::load`). Records of forgotten buckets are deleted a bounded number
//! per batch (`purge_requests`).

use crate::accounts::{RefreshToken, User};
use crate::codec;
use crate::command::Command;
use crate::coupons::{Coupon, CouponUse};
use crate::event::EventRecord;
use crate::ids::{BookingId, LogIndex, RequestId, SeatId, ShowId, TheaterId, UserId};
use crate::ledger::{ApplyResult, Ledger, RequestRecord, State};
use crate::limits::Limits;
use crate::model::{Booking, SeatState, Show, Theater};
use crate::outcome::Outcome;
use crate::payments::{Payment, Rating};
use crate::query::{Query, QueryResponse};
use crate::referrals::Referral;
use crate::requests::{Bucket, RequestKind, RequestTable};
use crate::snapshot::{self, SnapshotBody, SnapshotError};
use rocksdb::{
    DBIteratorWithThreadMode, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;

/// The store format this build reads and writes. Bump it, with a migration in `open`
/// from every older version still in service, whenever the key layout or the encoding
/// of a stored record changes (tests/golden.rs fails when the encoding does).
pub const FORMAT_VERSION: u64 = 3;
const FORMAT_VERSION_KEY: &[u8] = b"M:format_version";
const CLOCK_KEY: &[u8] = b"M:clock";
const RULES_KEY: &[u8] = b"M:rules";
const MARKER_KEY: &[u8] = b"M:marker";
/// The first log index whose events are all still kept (see `events_kept_from`).
const EVENTS_KEPT_FROM_KEY: &[u8] = b"M:events_kept_from";
/// Present while a snapshot file is being installed in several batches: the file's
/// path. A store opened with it redoes the install from the file first.
const INSTALLING_KEY: &[u8] = b"M:installing";
/// Request records per batch when a snapshot file is installed.
const INSTALL_RECORDS_PER_BATCH: usize = 50_000;
const THEATER: u8 = b'T';
const SHOW: u8 = b'S';
const SEAT: u8 = b'X';
const BOOKING: u8 = b'B';
const REQUEST: u8 = b'R';
const REQUEST_AGE: u8 = b'Y';
const REQUEST_BUCKET: u8 = b'Z';
/// Records of forgotten buckets deleted per batch, at most: a clock that jumps past
/// the whole window spreads the deletion over batches (lookups check the buckets, so
/// a record waiting for deletion is already forgotten).
const PURGE_PER_BATCH: usize = 10_000;
const EVENT: u8 = b'E';
const USER: u8 = b'U';
const REFRESH_TOKEN: u8 = b'K';
const AUDIT: u8 = b'A';
const TICKET: u8 = b'Q';
const CURSOR: u8 = b'W';
const PAYMENT: u8 = b'P';
const RATING: u8 = b'V';
const COUPON: u8 = b'C';
const COUPON_USE: u8 = b'O';
const REFERRAL: u8 = b'F';
const CHANNELS: u8 = b'N';
/// Every key prefix byte (`M` starts the metadata keys). Two kinds of record under one
/// byte would be read back as each other.
#[cfg(test)]
const PREFIXES: [u8; 20] = [
    b'M',
    THEATER,
    SHOW,
    SEAT,
    BOOKING,
    REQUEST,
    REQUEST_AGE,
    REQUEST_BUCKET,
    EVENT,
    USER,
    REFRESH_TOKEN,
    AUDIT,
    TICKET,
    CURSOR,
    PAYMENT,
    RATING,
    COUPON,
    COUPON_USE,
    REFERRAL,
    CHANNELS,
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RocksDB failed: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("stored {what} is corrupt: {detail}; restore this replica from a snapshot")]
    Corrupt { what: &'static str, detail: String },
    #[error("the store failed earlier and refuses further writes; restart the replica")]
    Poisoned,
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("writing snapshot bytes failed: {0}; check the target's disk (space, permissions) and take it again")]
    Io(#[from] std::io::Error),
    #[error(
        "the store is in format version {found}, but this build reads versions 1 to \
         {supported} (the store was written by a newer release, or in a format this build \
         no longer migrates); open it with a release that reads it, or rebuild this replica \
         from its peers"
    )]
    UnsupportedFormat { found: u64, supported: u64 },
    #[error(
        "an install of the snapshot file {path} was interrupted and cannot be redone \
         ({detail}): this replica's ledger is half replaced; wipe its shard directory and \
         let it catch up from the leader, or restore it from a backup"
    )]
    InterruptedInstall { path: String, detail: String },
    #[error("this replica is installing a snapshot; ask another replica or try again shortly")]
    Installing,
}

/// How durable the state machine's own writes are. The replicated log is the durable
/// record of commands, so the default leaves syncing to it and to `sync_to_disk`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    #[default]
    Buffered,
    SyncEveryBatch,
}

/// A shard's ledger together with its RocksDB image.
pub struct LedgerStore {
    db: Arc<DB>,
    ledger: Ledger,
    /// This node's configured rules: the ledger's until the log sets the shard's.
    configured: Limits,
    marker: Vec<u8>,
    durability: Durability,
    /// Highest log index applied; bounds which events are kept.
    last_index: LogIndex,
    /// Every event at or after this log index is kept; older ones may have been dropped
    /// by the retention window. Persisted, because after a restart `last_index` only
    /// knows the last event, not how far the window had already moved.
    events_kept_from: LogIndex,
    poisoned: bool,
    /// Per request kind (`Client`, `Auto`), the second up to which forgotten records
    /// are already deleted: where `purge_requests` starts looking.
    purged_to: [u64; 2],
    redone_install: Option<std::path::PathBuf>,
    /// Between `begin_install` and `finish_install`: the image on disk is being
    /// replaced, so nothing reads it (readers are refused with `StoreError::Installing`).
    installing: bool,
}

impl LedgerStore {
    /// Opens (or creates) the store at `path` and rebuilds the ledger from it.
    ///
    /// A store of another format version is refused before anything is read or written
    /// (`StoreError::UnsupportedFormat`). A store without a version, new or written
    /// before versions were recorded, is version 1 and gets the key once it has loaded.
    pub fn open(path: &Path, limits: Limits, durability: Durability) -> Result<Self, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Many shards share a node: keep each instance's memory modest.
        options.set_write_buffer_size(16 << 20);
        options.set_max_write_buffer_number(3);
        // Every keyed write looks up its request id, and most ids are new: a bloom
        // filter answers "not here" without reading a block of every file.
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        options.set_block_based_table_factory(&table);
        let db = Arc::new(DB::open(&options, path)?);
        let redone_install = match db.get(INSTALLING_KEY)? {
            Some(file) => Some(redo_install(&db, &file, &limits)?),
            None => None,
        };
        let found = check_format_version(&db)?;
        if found < 3 {
            index_request_records(&db)?;
        }
        let (mut ledger, marker) = load_ledger(&*db, &limits)?;
        ledger
            .check_invariants()
            .map_err(|detail| StoreError::Corrupt {
                what: "ledger state",
                detail,
            })?;
        ledger.track_changes();
        if found != FORMAT_VERSION {
            let mut write = WriteOptions::default();
            write.set_sync(true);
            db.put_opt(FORMAT_VERSION_KEY, FORMAT_VERSION.to_be_bytes(), &write)?;
        }
        let last_index = last_event_index(&db)?.unwrap_or(0);
        let events_kept_from = match db.get(EVENTS_KEPT_FROM_KEY)? {
            Some(bytes) => be_u64("events kept from", &bytes)?,
            None => 0,
        };
        Ok(LedgerStore {
            db,
            ledger,
            configured: limits,
            marker,
            durability,
            last_index,
            events_kept_from,
            poisoned: false,
            purged_to: [0; 2],
            redone_install,
            installing: false,
        })
    }

    /// The snapshot file whose interrupted install `open` finished, if it did (the
    /// caller may log it and delete the file).
    pub fn redone_install(&self) -> Option<&Path> {
        self.redone_install.as_deref()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// This node's configured rules (the ledger applies the replicated ones once set).
    pub fn configured_limits(&self) -> &Limits {
        &self.configured
    }

    /// Answers a query (the inner result: the ledger's answer or its rejection); a
    /// request's outcome is read from disk, which may fail (the outer error).
    pub fn query(
        &self,
        query: &Query,
    ) -> Result<Result<QueryResponse, crate::outcome::Rejection>, StoreError> {
        let Query::Request { request_id } = query else {
            return Ok(self.ledger.query(query));
        };
        let record = self.stored_request(request_id)?;
        Ok(Ok(QueryResponse::Request(
            record.map(|record| record.outcome),
        )))
    }

    /// What applying `command` at `index` would answer now, without applying it: a copy
    /// of the ledger, given the command's request record from disk. (The planted
    /// ack-before-commit bug answers with this.)
    pub fn predict(&self, index: LogIndex, command: &Command) -> Result<Outcome, StoreError> {
        let mut ledger = self.ledger.clone();
        if let Some(id) = &command.request_id {
            let record = self.stored_request(id)?;
            ledger.requests_mut().load([(id.clone(), record)]);
        }
        Ok(ledger.apply(index, command).outcome)
    }

    /// The live record of `id`, read from disk.
    fn stored_request(&self, id: &RequestId) -> Result<Option<RequestRecord>, StoreError> {
        let Some(bytes) = self.image()?.get(key(REQUEST, id.0.as_bytes()))? else {
            return Ok(None);
        };
        let record: RequestRecord = decode_value("request", &bytes)?;
        let live = self.ledger.requests().is_live(&Bucket::of(id, &record));
        Ok(live.then_some(record))
    }

    /// The state with its live request records, as a snapshot carries it (reads every
    /// record from disk).
    pub fn full_state(&self) -> Result<State, StoreError> {
        let mut state = self.ledger.state().clone();
        scan_live_requests(self.image()?, self.ledger.requests(), |id, record| {
            state.requests.insert(id, record);
            Ok(())
        })?;
        Ok(state)
    }

    /// `Ledger::full_digest` of this store's ledger (reads every record from disk).
    pub fn full_digest(&self) -> Result<[u8; 32], StoreError> {
        Ok(crate::ledger::full_digest(
            &self.full_state()?,
            self.ledger.rules(),
        ))
    }

    /// The caller's applied-position marker as of the last batch.
    pub fn marker(&self) -> &[u8] {
        &self.marker
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The database, unless an install is replacing its image.
    fn image(&self) -> Result<&DB, StoreError> {
        if self.installing {
            return Err(StoreError::Installing);
        }
        Ok(&self.db)
    }

    /// Applies `commands` in order and persists their effects with `marker` atomically.
    /// An empty `commands` only moves the marker (log entries that carry no command).
    ///
    /// Applying is total: a command whose apply panics (a defect; committed entries are
    /// the same on every replica, so every replica would stop on it, and again on every
    /// replay) is answered `Rejection::ApplyFailed` instead. The half-changed ledger is
    /// dropped, reloaded from the image on disk (the state before this batch), and the
    /// batch applied again with that command recorded as failed, so every replica ends
    /// in the same state whatever its batches were.
    pub fn apply_batch(
        &mut self,
        commands: &[(LogIndex, Command)],
        marker: &[u8],
    ) -> Result<Vec<ApplyResult>, StoreError> {
        self.image()?;
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let last_index = self.last_index;
        let mut failed = std::collections::BTreeSet::new();
        loop {
            match self.try_apply_batch(commands, marker, &failed) {
                Ok(results) => return Ok(results),
                Err(Attempt::Panicked(position)) => {
                    failed.insert(position);
                    self.reload()?;
                    self.last_index = last_index;
                }
                Err(Attempt::Store(error)) => return Err(error),
            }
        }
    }

    /// The ledger as the image on disk holds it, replacing the one in memory.
    fn reload(&mut self) -> Result<(), StoreError> {
        let (mut ledger, marker) = load_ledger(&*self.db, &self.configured)?;
        ledger.track_changes();
        self.ledger = ledger;
        self.marker = marker;
        Ok(())
    }

    fn try_apply_batch(
        &mut self,
        commands: &[(LogIndex, Command)],
        marker: &[u8],
        failed: &std::collections::BTreeSet<usize>,
    ) -> Result<Vec<ApplyResult>, Attempt> {
        let mut batch = WriteBatch::default();
        let mut results = Vec::with_capacity(commands.len());
        self.load_requests(commands).map_err(Attempt::Store)?;
        for (position, (index, command)) in commands.iter().enumerate() {
            let result = if failed.contains(&position) {
                self.ledger.apply_failed(command)
            } else {
                let ledger = &mut self.ledger;
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    ledger.apply(*index, command)
                }))
                .map_err(|_| Attempt::Panicked(position))?
            };
            for (seq, event) in result.events.iter().enumerate() {
                let record = EventRecord {
                    index: *index,
                    seq: seq as u32,
                    at_ms: self.ledger.clock(),
                    event: event.clone(),
                };
                batch.put(event_key(*index, seq as u32), codec::encode(&record));
            }
            self.last_index = self.last_index.max(*index);
            results.push(result);
        }
        self.purge_requests(&mut batch).map_err(Attempt::Store)?;
        self.write_changes(&mut batch);
        let retention = self.ledger.limits().event_retention_indexes;
        let due = self.last_index.saturating_sub(retention);
        // Old events go in steps of a sixteenth of the window: each step is a range
        // tombstone, which every read of the memtable must sort through (one per batch
        // made reads slower batch after batch).
        let step = (retention / 16).max(1);
        let kept_from = if due >= self.events_kept_from.saturating_add(step) {
            due
        } else {
            self.events_kept_from
        };
        if kept_from > self.events_kept_from {
            batch.delete_range(event_key(0, 0), event_key(kept_from, 0));
            batch.put(EVENTS_KEPT_FROM_KEY, kept_from.to_be_bytes());
        }
        batch.put(MARKER_KEY, marker);
        self.write(batch).map_err(Attempt::Store)?;
        self.ledger.requests_mut().unload();
        self.marker = marker.to_vec();
        self.events_kept_from = kept_from;
        Ok(results)
    }

    fn write_changes(&mut self, batch: &mut WriteBatch) {
        let changes = self.ledger.take_changes();
        let state = self.ledger.state();
        if changes.clock {
            batch.put(CLOCK_KEY, state.clock.to_be_bytes());
        }
        if changes.rules {
            put_or_delete(batch, RULES_KEY.to_vec(), self.ledger.rules());
        }
        for id in changes.theaters {
            put_or_delete(
                batch,
                key(THEATER, &id.0.to_be_bytes()),
                state.theaters.get(&id),
            );
        }
        for id in changes.shows {
            put_or_delete(batch, key(SHOW, &id.0.to_be_bytes()), state.shows.get(&id));
        }
        for (show, seat) in changes.seats {
            let seat_state = state
                .seats
                .get(&show)
                .and_then(|seats| seats.get(seat.0 as usize));
            let held = seat_state.filter(|seat| **seat != SeatState::Available);
            put_or_delete(batch, seat_key(show, seat), held);
        }
        for id in changes.bookings {
            put_or_delete(
                batch,
                key(BOOKING, &id.0.to_be_bytes()),
                state.bookings.get(&id),
            );
        }
        for id in changes.users {
            put_or_delete(batch, key(USER, &id.0.to_be_bytes()), state.users.get(&id));
        }
        for hash in changes.refresh_tokens {
            let value = state.refresh_tokens.get(&hash);
            put_or_delete(batch, key(REFRESH_TOKEN, hash.as_bytes()), value);
        }
        for id in changes.audit {
            put_or_delete(batch, key(AUDIT, &id.to_be_bytes()), state.audit.get(&id));
        }
        for id in changes.tickets {
            put_or_delete(
                batch,
                key(TICKET, &id.0.to_be_bytes()),
                state.tickets.get(&id),
            );
        }
        for cursor_key in changes.cursors {
            let value = state.cursors.get(&cursor_key);
            put_or_delete(batch, key(CURSOR, &codec::encode(&cursor_key)), value);
        }
        for id in changes.payments {
            let value = state.payments.get(&id);
            put_or_delete(batch, key(PAYMENT, &id.0.to_be_bytes()), value);
        }
        for id in changes.ratings {
            let value = state.ratings.get(&id);
            put_or_delete(batch, key(RATING, &id.0.to_be_bytes()), value);
        }
        for code in changes.coupons {
            let value = state.coupons.get(&code);
            put_or_delete(batch, key(COUPON, code.as_bytes()), value);
        }
        for use_key in changes.coupon_uses {
            let value = state.coupon_uses.get(&use_key);
            put_or_delete(batch, key(COUPON_USE, use_key.as_bytes()), value);
        }
        for id in changes.referrals {
            let value = state.referrals.get(&id);
            put_or_delete(batch, key(REFERRAL, &id.0.to_be_bytes()), value);
        }
        for user in changes.channels {
            let value = state.channels.get(&user);
            put_or_delete(batch, key(CHANNELS, &user.0.to_be_bytes()), value);
        }
        let table = self.ledger.requests();
        for id in changes.requests.records {
            // A record whose bucket was forgotten in the same batch is not written.
            if let Some(record) = table.find(&id) {
                batch.put(key(REQUEST, id.0.as_bytes()), codec::encode(record));
                batch.put(age_key(Bucket::of(&id, record), &id), []);
            }
        }
        for bucket in changes.requests.buckets {
            put_or_delete(batch, bucket_key(bucket), table.buckets().get(&bucket));
        }
    }

    /// Reads the records of the batch's request ids into the ledger's table.
    fn load_requests(&mut self, commands: &[(LogIndex, Command)]) -> Result<(), StoreError> {
        let ids: std::collections::BTreeSet<&RequestId> = commands
            .iter()
            .filter_map(|(_, command)| command.request_id.as_ref())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| key(REQUEST, id.0.as_bytes())).collect();
        let mut loaded = Vec::with_capacity(ids.len());
        for (id, value) in ids.into_iter().zip(self.db.multi_get(&keys)) {
            let record = match value? {
                Some(bytes) => Some(decode_value::<RequestRecord>("request", &bytes)?),
                None => None,
            };
            loaded.push((id.clone(), record));
        }
        self.ledger.requests_mut().load(loaded);
        Ok(())
    }

    /// Deletes (in `batch`) up to [`PURGE_PER_BATCH`] records of forgotten buckets, the
    /// oldest first, with their `Y|` keys. A record whose id came back since (a newer
    /// record under the same key, in a live bucket) stays.
    fn purge_requests(&mut self, batch: &mut WriteBatch) -> Result<(), StoreError> {
        let table = self.ledger.requests();
        let mut budget = PURGE_PER_BATCH;
        for (slot, kind) in [RequestKind::Client, RequestKind::Auto]
            .into_iter()
            .enumerate()
        {
            let floor = table.oldest_live(kind).unwrap_or(u64::MAX);
            let start = self.purged_to[slot];
            if start >= floor {
                continue;
            }
            let from = age_prefix(kind, start);
            let mut reached = start;
            for item in self
                .db
                .iterator(IteratorMode::From(&from, Direction::Forward))
            {
                let (age, _) = item?;
                if age.len() < 10 || age[0] != REQUEST_AGE || age[1] != kind.byte() {
                    break;
                }
                let second = be_u64("request age key", &age[2..10])?;
                if second >= floor {
                    break;
                }
                reached = second;
                if budget == 0 {
                    break;
                }
                budget -= 1;
                let record_key = key(REQUEST, &age[10..]);
                if let Some(bytes) = self.db.get(&record_key)? {
                    let record: RequestRecord = decode_value("request", &bytes)?;
                    let id = RequestId(utf8("request id", &age[10..])?);
                    if !table.is_live(&Bucket::of(&id, &record)) {
                        batch.delete(record_key);
                    }
                }
                // Point deletes, not a range: range tombstones slow every read of the
                // memtable that holds them.
                batch.delete(age);
            }
            // Everything before `reached` is deleted (with this batch).
            self.purged_to[slot] = reached;
        }
        Ok(())
    }

    fn write(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(self.durability == Durability::SyncEveryBatch);
        self.db.write_opt(batch, &options).map_err(|error| {
            self.poisoned = true;
            StoreError::Rocks(error)
        })
    }

    /// Makes everything written so far durable (before the log behind it is purged).
    pub fn sync_to_disk(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Events from `from_index` on (inclusive), at most `limit` of them, in log order.
    pub fn events_from(
        &self,
        from_index: LogIndex,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        events_from(self.image()?, from_index, 0, limit)
    }

    /// Events from position `(from_index, from_seq)` on (inclusive), at most `limit`,
    /// in log order: a consumer that saw `(i, s)` resumes at `(i, s + 1)` even when one
    /// log entry produced more events than a page holds.
    pub fn events_from_position(
        &self,
        from_index: LogIndex,
        from_seq: u32,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        events_from(self.image()?, from_index, from_seq, limit)
    }

    /// Every event at or after this index is still kept; a consumer that needs an
    /// older position has missed events (the retention window moved past it).
    pub fn events_kept_from(&self) -> LogIndex {
        self.events_kept_from
    }

    /// The oldest event still kept, if any.
    pub fn oldest_event_index(&self) -> Result<Option<LogIndex>, StoreError> {
        Ok(self.events_from(0, 1)?.first().map(|event| event.index))
    }

    /// The whole state, its kept events and the marker as snapshot bytes (through a
    /// pinned image, so request records stream from disk into the encoding).
    pub fn export_snapshot(&self) -> Result<Vec<u8>, StoreError> {
        LedgerStore::pin_image(self)?.encode()
    }

    /// Pins the store's current image (a RocksDB snapshot, taken while `guard` holds the
    /// store so no apply is half in it; `guard` is any lock guard of the store, dropped
    /// once the image is pinned, so applying goes on while a large shard is encoded) and makes it durable (WAL synced): it can stand
    /// for a snapshot at the marker it holds, and be encoded later, only if someone needs
    /// the bytes ([`PinnedImage::encode`]). Until it is dropped, RocksDB keeps the
    /// versions it sees.
    pub fn pin_image<G>(guard: G) -> Result<PinnedImage, StoreError>
    where
        G: std::ops::Deref<Target = LedgerStore>,
    {
        guard.image()?;
        let cell = PinnedCell::new(Arc::clone(&guard.db), |db| db.snapshot());
        let events_kept_from = guard.events_kept_from;
        drop(guard);
        cell.borrow_owner().flush_wal(true)?;
        let marker = cell.borrow_dependent().get(MARKER_KEY)?.unwrap_or_default();
        Ok(PinnedImage {
            cell,
            events_kept_from,
            marker,
        })
    }

    /// Replaces this replica's state with the snapshot's. Bad bytes are refused before
    /// anything changes.
    pub fn install_snapshot(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let prepared = PreparedInstall::new(bytes, &self.configured)?;
        self.commit_install(prepared)
    }

    /// Replaces this replica's state with the snapshot in the file at `path`, of any
    /// size ([`PreparedInstall::from_file`]). A bad file is refused before anything
    /// changes.
    pub fn install_snapshot_file(&mut self, path: &Path) -> Result<(), StoreError> {
        let prepared = PreparedInstall::from_file(path, &self.configured)?;
        self.commit_install(prepared)
    }

    /// Installs a snapshot decoded and verified beforehand (`PreparedInstall::new`, which
    /// needs no access to the store): only the RocksDB write and the swap happen here, so
    /// a caller holding the store's lock holds it for the write, not for the decode.
    pub fn commit_install(&mut self, prepared: PreparedInstall) -> Result<(), StoreError> {
        let installing = self.begin_install(prepared)?;
        let records = installing.write_records();
        self.finish_install(installing, records)
    }

    /// Starts an install (for a caller that writes the records without holding the
    /// store: `Installing::write_records`, then `finish_install`). For a snapshot file
    /// the image is cleared now and the file's path recorded; until `finish_install`,
    /// reads and applies are refused with `StoreError::Installing`.
    pub fn begin_install(&mut self, prepared: PreparedInstall) -> Result<Installing, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        self.image()?;
        if let Records::File(path) = &prepared.records {
            self.installing = true;
            if let Err(error) = install_start(&self.db, path) {
                self.poisoned = true;
                return Err(error);
            }
        }
        Ok(Installing {
            db: Arc::clone(&self.db),
            prepared,
        })
    }

    /// Ends an install begun with `begin_install`, given how writing its records went:
    /// writes the rest of the image and swaps the ledger in. A failure leaves the store
    /// refusing writes (poisoned) until a restart, whose open redoes the install.
    pub fn finish_install(
        &mut self,
        installing: Installing,
        records: Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let PreparedInstall { decoded, batch, .. } = installing.prepared;
        if let Err(error) = records.and_then(|()| install_finish(&self.db, batch)) {
            self.poisoned = true;
            return Err(error);
        }
        self.installing = false;
        self.ledger = decoded.ledger;
        self.ledger.requests_mut().move_to_disk();
        self.ledger.track_changes();
        self.purged_to = [0; 2];
        self.marker = decoded.marker;
        self.last_index = decoded.events.last().map_or(0, |event| event.index);
        self.events_kept_from = decoded.events_kept_from;
        Ok(())
    }
}

/// An install under way (`LedgerStore::begin_install`).
pub struct Installing {
    db: Arc<DB>,
    prepared: PreparedInstall,
}

impl Installing {
    /// Writes the records of a snapshot file into the store, in batches (nothing for
    /// an install whose records are in its batch). Needs no access to the store: a
    /// caller holding it behind a lock does this without the lock.
    pub fn write_records(&self) -> Result<(), StoreError> {
        match &self.prepared.records {
            Records::File(path) => install_records(&self.db, path),
            Records::InBatch => Ok(()),
        }
    }
}

/// The first write of a file install: the image cleared, the file's path kept (so an
/// open before `install_finish` redoes the install).
fn install_start(db: &DB, path: &Path) -> Result<(), StoreError> {
    use std::os::unix::ffi::OsStrExt;
    let mut start = WriteBatch::default();
    start.delete_range(&[0u8][..], &[0xffu8][..]);
    start.put(FORMAT_VERSION_KEY, FORMAT_VERSION.to_be_bytes());
    start.put(INSTALLING_KEY, path.as_os_str().as_bytes());
    let mut options = WriteOptions::default();
    options.set_sync(true);
    db.write_opt(start, &options)?;
    Ok(())
}

/// The request records of the snapshot file at `path`, written in batches without the
/// write-ahead log (a crash before `install_finish` redoes them all), then flushed to
/// table files.
fn install_records(db: &DB, path: &Path) -> Result<(), StoreError> {
    let file = snapshot::open(path)?;
    let mut options = WriteOptions::default();
    options.disable_wal(true);
    let mut pending = WriteBatch::default();
    let mut held = 0;
    snapshot::request_sections(file, |section| -> Result<(), StoreError> {
        for (id, record) in &section {
            put_record(&mut pending, id, record);
            held += 1;
            if held == INSTALL_RECORDS_PER_BATCH {
                db.write_opt(std::mem::take(&mut pending), &options)?;
                held = 0;
            }
        }
        Ok(())
    })?;
    db.write_opt(pending, &options)?;
    db.flush()?;
    Ok(())
}

/// The last write of an install (the whole image for one in a batch), synced.
fn install_finish(db: &DB, batch: WriteBatch) -> Result<(), StoreError> {
    db.write(batch)?;
    db.flush_wal(true)?;
    Ok(())
}

/// Finishes an install a stopped process left half done (`INSTALLING_KEY` holds the
/// snapshot file's path), before the store is loaded.
fn redo_install(db: &DB, file: &[u8], limits: &Limits) -> Result<std::path::PathBuf, StoreError> {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(std::ffi::OsStr::from_bytes(file));
    let interrupted = |detail: String| StoreError::InterruptedInstall {
        path: path.display().to_string(),
        detail,
    };
    let prepared =
        PreparedInstall::from_file(path, limits).map_err(|e| interrupted(e.to_string()))?;
    let redo = || -> Result<(), StoreError> {
        install_start(db, path)?;
        install_records(db, path)?;
        install_finish(db, prepared.batch)
    };
    redo().map_err(|e| interrupted(e.to_string()))?;
    Ok(path.to_owned())
}

fn put_record(batch: &mut WriteBatch, id: &RequestId, record: &RequestRecord) {
    batch.put(key(REQUEST, id.0.as_bytes()), codec::encode(record));
    batch.put(age_key(Bucket::of(id, record), id), []);
}

/// Why one pass of `apply_batch` stopped.
enum Attempt {
    /// The command at this position of the batch panicked; nothing was written.
    Panicked(usize),
    Store(StoreError),
}

/// A snapshot decoded, verified (frame, checksum, invariants) and turned into the
/// RocksDB batch that replaces a store's image: the CPU-heavy part of an install, done
/// without the store.
pub struct PreparedInstall {
    decoded: snapshot::Decoded,
    batch: WriteBatch,
    records: Records,
}

/// Where a prepared install's request records are.
enum Records {
    /// In its batch, with the rest: one atomic write.
    InBatch,
    /// In this snapshot file, read again while they are written.
    File(std::path::PathBuf),
}

impl PreparedInstall {
    /// An install of snapshot bytes held in memory: the records go into one batch.
    pub fn new(bytes: &[u8], limits: &Limits) -> Result<PreparedInstall, StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range(&[0u8][..], &[0xffu8][..]);
        // The request records go from the snapshot's sections into the batch; the
        // ledger keeps only their buckets (as it would after opening the store).
        let decoded = snapshot::decode_lean(bytes, limits, |section| {
            for (id, record) in section {
                put_record(&mut batch, id, record);
            }
        })?;
        put_image(&mut batch, &decoded);
        Ok(PreparedInstall {
            decoded,
            batch,
            records: Records::InBatch,
        })
    }

    /// An install of a snapshot file of any size: read once now to check it whole (its
    /// request records are only counted), and again by `commit_install`, which writes
    /// the records in batches; only the body and one section are in memory at a time.
    /// The file must stay where it is until the install is committed.
    pub fn from_file(path: &Path, limits: &Limits) -> Result<PreparedInstall, StoreError> {
        // Absolute: an open that redoes the install may run in another directory.
        let path = std::fs::canonicalize(path)
            .map_err(|e| SnapshotError::Unreadable(format!("{}: {e}", path.display())))?;
        let decoded = snapshot::decode_lean_from(snapshot::open(&path)?, limits, |_| {})?;
        let mut batch = WriteBatch::default();
        put_image(&mut batch, &decoded);
        batch.delete(INSTALLING_KEY);
        Ok(PreparedInstall {
            decoded,
            batch,
            records: Records::File(path),
        })
    }

    /// The ledger the install will give (its digest, its counts).
    pub fn ledger(&self) -> &Ledger {
        &self.decoded.ledger
    }
}

/// Everything of a decoded snapshot but its request records.
fn put_image(batch: &mut WriteBatch, decoded: &snapshot::Decoded) {
    batch.put(FORMAT_VERSION_KEY, FORMAT_VERSION.to_be_bytes());
    let state = decoded.ledger.state();
    batch.put(CLOCK_KEY, state.clock.to_be_bytes());
    if let Some(rules) = decoded.ledger.rules() {
        batch.put(RULES_KEY, codec::encode(rules));
    }
    for (id, theater) in &state.theaters {
        batch.put(key(THEATER, &id.0.to_be_bytes()), codec::encode(theater));
    }
    for (id, show) in &state.shows {
        batch.put(key(SHOW, &id.0.to_be_bytes()), codec::encode(show));
    }
    for (show, seats) in &state.seats {
        for (position, seat) in seats.iter().enumerate() {
            if *seat != SeatState::Available {
                batch.put(
                    seat_key(*show, SeatId(position as u32)),
                    codec::encode(seat),
                );
            }
        }
    }
    for (id, booking) in &state.bookings {
        batch.put(key(BOOKING, &id.0.to_be_bytes()), codec::encode(booking));
    }
    let table = decoded.ledger.requests();
    for (bucket, sum) in table.buckets() {
        batch.put(bucket_key(*bucket), codec::encode(sum));
    }
    for (id, user) in &state.users {
        batch.put(key(USER, &id.0.to_be_bytes()), codec::encode(user));
    }
    for (hash, token) in &state.refresh_tokens {
        batch.put(key(REFRESH_TOKEN, hash.as_bytes()), codec::encode(token));
    }
    for (id, entry) in &state.audit {
        batch.put(key(AUDIT, &id.to_be_bytes()), codec::encode(entry));
    }
    for (id, ticket) in &state.tickets {
        batch.put(key(TICKET, &id.0.to_be_bytes()), codec::encode(ticket));
    }
    for (cursor_key, cursor) in &state.cursors {
        batch.put(
            key(CURSOR, &codec::encode(cursor_key)),
            codec::encode(cursor),
        );
    }
    for (id, payment) in &state.payments {
        batch.put(key(PAYMENT, &id.0.to_be_bytes()), codec::encode(payment));
    }
    for (id, rating) in &state.ratings {
        batch.put(key(RATING, &id.0.to_be_bytes()), codec::encode(rating));
    }
    for (code, coupon) in &state.coupons {
        batch.put(key(COUPON, code.as_bytes()), codec::encode(coupon));
    }
    for (use_key, coupon_use) in &state.coupon_uses {
        batch.put(
            key(COUPON_USE, use_key.as_bytes()),
            codec::encode(coupon_use),
        );
    }
    for (id, referral) in &state.referrals {
        batch.put(key(REFERRAL, &id.0.to_be_bytes()), codec::encode(referral));
    }
    for (user, channels) in &state.channels {
        batch.put(
            key(CHANNELS, &user.0.to_be_bytes()),
            codec::encode(channels),
        );
    }
    for event in &decoded.events {
        batch.put(event_key(event.index, event.seq), codec::encode(event));
    }
    batch.put(MARKER_KEY, &decoded.marker);
    batch.put(EVENTS_KEPT_FROM_KEY, decoded.events_kept_from.to_be_bytes());
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

fn seat_key(show: ShowId, seat: SeatId) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(SEAT);
    key.extend_from_slice(&show.0.to_be_bytes());
    key.extend_from_slice(&seat.0.to_be_bytes());
    key
}

fn event_key(index: LogIndex, seq: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(EVENT);
    key.extend_from_slice(&index.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// `Y|kind|second`: where a kind's records of one second start.
fn age_prefix(kind: RequestKind, second: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(10);
    key.push(REQUEST_AGE);
    key.push(kind.byte());
    key.extend_from_slice(&second.to_be_bytes());
    key
}

fn age_key(bucket: Bucket, id: &RequestId) -> Vec<u8> {
    let mut key = age_prefix(bucket.kind, bucket.second);
    key.extend_from_slice(id.0.as_bytes());
    key
}

fn bucket_key(bucket: Bucket) -> Vec<u8> {
    let mut key = age_prefix(bucket.kind, bucket.second);
    key[0] = REQUEST_BUCKET;
    key
}

fn put_or_delete<T: serde::Serialize>(batch: &mut WriteBatch, key: Vec<u8>, value: Option<&T>) {
    match value {
        Some(value) => batch.put(key, codec::encode(value)),
        None => batch.delete(key),
    }
}

fn decode_value<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|detail| StoreError::Corrupt { what, detail })
}

/// The format version the store records (1 if it records none); an error if this
/// build does not read it.
fn check_format_version(db: &DB) -> Result<u64, StoreError> {
    let Some(bytes) = db.get(FORMAT_VERSION_KEY)? else {
        return Ok(1);
    };
    let found = be_u64("format version", &bytes)?;
    if !(1..=FORMAT_VERSION).contains(&found) {
        return Err(StoreError::UnsupportedFormat {
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(found)
}

/// Builds the `Y|` and `Z|` keys of a store written before format 3 from its `R|`
/// records (format 3's migration; records past the window are forgotten by the next
/// command, as they would have been).
fn index_request_records(db: &DB) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    let mut buckets = std::collections::BTreeMap::new();
    scan(db, REQUEST, "request", |id, record: RequestRecord| {
        let id = RequestId(utf8("request id", id)?);
        batch.put(age_key(Bucket::of(&id, &record), &id), []);
        crate::requests::tally(&mut buckets, &id, &record);
        Ok(())
    })?;
    for (bucket, sum) in &buckets {
        batch.put(bucket_key(*bucket), codec::encode(sum));
    }
    let mut write = WriteOptions::default();
    write.set_sync(true);
    db.write_opt(batch, &write)?;
    Ok(())
}

/// The live buckets of the idempotency table.
fn load_buckets(
    db: &impl Image,
) -> Result<std::collections::BTreeMap<Bucket, crate::requests::BucketSum>, StoreError> {
    let mut buckets = std::collections::BTreeMap::new();
    scan(db, REQUEST_BUCKET, "request bucket", |raw, sum| {
        let corrupt = || StoreError::Corrupt {
            what: "request bucket key",
            detail: format!("{raw:?}"),
        };
        let (&kind, second) = raw.split_first().ok_or_else(corrupt)?;
        let kind = RequestKind::from_byte(kind).ok_or_else(corrupt)?;
        let second = be_u64("request bucket key", second)?;
        buckets.insert(Bucket { kind, second }, sum);
        Ok(())
    })?;
    Ok(buckets)
}

/// The ledger the image holds (request records on disk) and its marker.
fn load_ledger(db: &impl Image, configured: &Limits) -> Result<(Ledger, Vec<u8>), StoreError> {
    let (state, marker) = load_state(db)?;
    let mut ledger = Ledger::from_state(configured.clone(), state);
    ledger.adopt_rules(load_rules(db)?);
    *ledger.requests_mut() = RequestTable::on_disk(load_buckets(db)?);
    Ok((ledger, marker))
}

fn be_u64(what: &'static str, bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("{} bytes, not 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// Where the image is read from: the live database, or a RocksDB snapshot of it pinned
/// at one applied position.
type DbSnapshot<'a> = rocksdb::Snapshot<'a>;

self_cell::self_cell!(
    /// A RocksDB snapshot together with the database it pins.
    struct PinnedCell {
        owner: Arc<DB>,
        #[covariant]
        dependent: DbSnapshot,
    }
);

/// A durable image of the store at one marker, pinned in RocksDB
/// ([`LedgerStore::pin_image`]): the snapshot bytes of that moment, encoded on demand.
pub struct PinnedImage {
    cell: PinnedCell,
    events_kept_from: LogIndex,
    marker: Vec<u8>,
}

impl PinnedImage {
    /// The marker (the caller's applied position) the image holds.
    pub fn marker(&self) -> &[u8] {
        &self.marker
    }

    /// The image as snapshot bytes, the same as [`LedgerStore::export_snapshot`] gave
    /// when it was pinned. Takes time on a large shard: call it off the async executor.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        self.write_to(Vec::new())
    }

    /// Writes the image as snapshot bytes to `out` as it reads them: the records of the
    /// idempotency table go from RocksDB to `out` a section at a time, never all in
    /// memory.
    pub fn write_to<W: std::io::Write>(&self, out: W) -> Result<W, StoreError> {
        let pinned = self.cell.borrow_dependent();
        let table = RequestTable::on_disk(load_buckets(pinned)?);
        let (state, marker) = load_state(pinned)?;
        let events = events_from(pinned, 0, 0, usize::MAX)?;
        let body = SnapshotBody {
            marker,
            state,
            events,
            events_kept_from: self.events_kept_from,
            rules: load_rules(pinned)?,
        };
        let mut writer = snapshot::Writer::new(out, &body)?;
        drop(body);
        let mut section = Vec::with_capacity(snapshot::RECORDS_PER_SECTION);
        scan_live_requests(pinned, &table, |id, record| {
            section.push((id, record));
            if section.len() == snapshot::RECORDS_PER_SECTION {
                writer.requests(&section)?;
                section.clear();
            }
            Ok(())
        })?;
        writer.requests(&section)?;
        Ok(writer.finish()?)
    }
}

impl std::fmt::Debug for PinnedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedImage")
            .field("events_kept_from", &self.events_kept_from)
            .field("marker_bytes", &self.marker.len())
            .finish()
    }
}

trait Image {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error>;
    fn forward_from(&self, start: &[u8]) -> DBIteratorWithThreadMode<'_, DB>;
}

impl Image for DB {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        DB::get(self, key)
    }

    fn forward_from(&self, start: &[u8]) -> DBIteratorWithThreadMode<'_, DB> {
        self.iterator(IteratorMode::From(start, Direction::Forward))
    }
}

impl Image for rocksdb::Snapshot<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        rocksdb::Snapshot::get(self, key)
    }

    fn forward_from(&self, start: &[u8]) -> DBIteratorWithThreadMode<'_, DB> {
        self.iterator(IteratorMode::From(start, Direction::Forward))
    }
}

/// Events from position `(from_index, from_seq)` on, at most `limit`, in log order.
fn events_from(
    image: &impl Image,
    from_index: LogIndex,
    from_seq: u32,
    limit: usize,
) -> Result<Vec<EventRecord>, StoreError> {
    let start = event_key(from_index, from_seq);
    let mut events = Vec::new();
    for item in image.forward_from(&start) {
        if events.len() >= limit {
            break;
        }
        let (key, value) = item?;
        if key.first() != Some(&EVENT) {
            break;
        }
        events.push(decode_value::<EventRecord>("event", &value)?);
    }
    Ok(events)
}

/// Visits every key with `prefix`, decoding the value.
fn scan<T: DeserializeOwned>(
    db: &impl Image,
    prefix: u8,
    what: &'static str,
    mut visit: impl FnMut(&[u8], T) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for item in db.forward_from(&[prefix]) {
        let (key, value) = item?;
        if key.first() != Some(&prefix) {
            break;
        }
        visit(&key[1..], decode_value(what, &value)?)?;
    }
    Ok(())
}

/// Visits the image's live request records (those whose bucket `table` holds; a
/// forgotten one may wait on disk for deletion) in id order.
fn scan_live_requests(
    db: &impl Image,
    table: &RequestTable,
    mut visit: impl FnMut(RequestId, RequestRecord) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    scan(db, REQUEST, "request", |id, record: RequestRecord| {
        let id = RequestId(utf8("request id", id)?);
        if table.is_live(&Bucket::of(&id, &record)) {
            visit(id, record)?;
        }
        Ok(())
    })
}

/// The replicated rules the image holds, if any were set.
fn load_rules(db: &impl Image) -> Result<Option<Limits>, StoreError> {
    let Some(bytes) = db.get(RULES_KEY)? else {
        return Ok(None);
    };
    let rules: Limits = codec::decode(&bytes).map_err(|detail| StoreError::Corrupt {
        what: "replicated rules",
        detail,
    })?;
    rules.validate().map_err(|invalid| StoreError::Corrupt {
        what: "replicated rules",
        detail: invalid.to_string(),
    })?;
    Ok(Some(rules))
}

/// The state the image holds, without its request records (they stay on disk:
/// `scan_live_requests`).
fn load_state(db: &impl Image) -> Result<(State, Vec<u8>), StoreError> {
    let mut state = State::default();
    if let Some(bytes) = db.get(CLOCK_KEY)? {
        state.clock = be_u64("clock", &bytes)?;
    }
    let marker = db.get(MARKER_KEY)?.unwrap_or_default();
    scan(db, THEATER, "theater", |id, theater: Theater| {
        state
            .theaters
            .insert(TheaterId(be_u64("theater id", id)?), theater);
        Ok(())
    })?;
    scan(db, SHOW, "show", |id, show: Show| {
        state.shows.insert(ShowId(be_u64("show id", id)?), show);
        Ok(())
    })?;
    for show in state.shows.values() {
        let seat_count = state
            .theaters
            .get(&show.theater)
            .and_then(|theater| theater.screens.get(usize::from(show.screen.0)))
            .map(|screen| screen.seat_count() as usize)
            .ok_or(StoreError::Corrupt {
                what: "show",
                detail: format!("{} has no screen", show.id),
            })?;
        state
            .seats
            .insert(show.id, vec![SeatState::Available; seat_count]);
    }
    scan(db, SEAT, "seat", |id, seat: SeatState| {
        let corrupt = || StoreError::Corrupt {
            what: "seat key",
            detail: format!("{id:?}"),
        };
        let (show, position) = id.split_at_checked(8).ok_or_else(corrupt)?;
        let show = ShowId(be_u64("seat key", show)?);
        let position: [u8; 4] = position.try_into().map_err(|_| corrupt())?;
        let slot = state
            .seats
            .get_mut(&show)
            .and_then(|seats| seats.get_mut(u32::from_be_bytes(position) as usize))
            .ok_or_else(corrupt)?;
        *slot = seat;
        Ok(())
    })?;
    scan(db, BOOKING, "booking", |id, booking: Booking| {
        state
            .bookings
            .insert(BookingId(be_u64("booking id", id)?), booking);
        Ok(())
    })?;
    scan(db, USER, "user", |id, user: User| {
        state.users.insert(UserId(be_u64("user id", id)?), user);
        Ok(())
    })?;
    scan(
        db,
        REFRESH_TOKEN,
        "refresh token",
        |hash, token: RefreshToken| {
            let hash = String::from_utf8(hash.to_vec()).map_err(|e| StoreError::Corrupt {
                what: "token hash",
                detail: e.to_string(),
            })?;
            state.refresh_tokens.insert(hash, token);
            Ok(())
        },
    )?;
    scan(
        db,
        AUDIT,
        "audit entry",
        |id, entry: crate::audit::AuditEntry| {
            state.audit.insert(be_u64("audit id", id)?, entry);
            Ok(())
        },
    )?;
    scan(
        db,
        TICKET,
        "ticket",
        |id, ticket: crate::support::Ticket| {
            let id = crate::support::TicketId(be_u64("ticket id", id)?);
            state.tickets.insert(id, ticket);
            Ok(())
        },
    )?;
    scan(db, CURSOR, "consumer cursor", |raw, cursor| {
        let cursor_key: crate::cursors::CursorKey = decode_value("cursor key", raw)?;
        state.cursors.insert(cursor_key, cursor);
        Ok(())
    })?;
    scan(db, PAYMENT, "payment", |id, payment: Payment| {
        state
            .payments
            .insert(BookingId(be_u64("payment id", id)?), payment);
        Ok(())
    })?;
    scan(db, RATING, "rating", |id, rating: Rating| {
        state
            .ratings
            .insert(BookingId(be_u64("rating id", id)?), rating);
        Ok(())
    })?;
    scan(db, COUPON, "coupon", |code, coupon: Coupon| {
        state.coupons.insert(utf8("coupon code", code)?, coupon);
        Ok(())
    })?;
    scan(
        db,
        COUPON_USE,
        "coupon use",
        |use_key, coupon_use: CouponUse| {
            state
                .coupon_uses
                .insert(utf8("coupon use key", use_key)?, coupon_use);
            Ok(())
        },
    )?;
    scan(db, REFERRAL, "referral", |id, referral: Referral| {
        state
            .referrals
            .insert(UserId(be_u64("referee id", id)?), referral);
        Ok(())
    })?;
    scan(db, CHANNELS, "notification channels", |id, channels| {
        state
            .channels
            .insert(UserId(be_u64("channels user", id)?), channels);
        Ok(())
    })?;
    Ok((state, marker))
}

fn utf8(what: &'static str, bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn last_event_index(db: &DB) -> Result<Option<LogIndex>, StoreError> {
    let end = [EVENT + 1];
    if let Some(item) = db
        .iterator(IteratorMode::From(&end, Direction::Reverse))
        .next()
    {
        let (key, _) = item?;
        if key.first() == Some(&EVENT) && key.len() == 13 {
            return Ok(Some(be_u64("event key", &key[1..9])?));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod prefix_tests {
    #[test]
    fn every_key_prefix_is_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for prefix in super::PREFIXES {
            assert!(
                seen.insert(prefix),
                "key prefix {:?} is used twice",
                prefix as char
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testkit::{command, create_theater, screen};
    use crate::{CommandKind, Outcome, Rejection, UserId};

    /// A theater name on which `apply` panics after it stored the theater (test builds
    /// only): a defect that leaves the ledger half-changed.
    pub(crate) const PANIC_AFTER_A_CHANGE: &str = "planted panic after a change";

    fn theater(name: &str) -> CommandKind {
        let mut kind = create_theater("mumbai", UserId(9), vec![screen("Audi 1", 2, 2)]);
        if let CommandKind::CreateTheater { name: n, .. } = &mut kind {
            *n = name.to_owned();
        }
        kind
    }

    /// Issue #26, item 9: a panic inside apply stopped every replica on the same entry
    /// (and again on every replay). Now the entry is rejected on every replica alike,
    /// with nothing of the failed attempt kept, in memory or on disk, whatever the
    /// replica's batches.
    #[test]
    fn a_panic_in_apply_is_a_rejection_that_changes_nothing() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let log = vec![
            (1, command("r1", 1_000, theater("Before"))),
            (2, command("r2", 2_000, theater(PANIC_AFTER_A_CHANGE))),
            (3, command("r3", 3_000, theater("After"))),
        ];
        // One replica applies the log as one batch, the other entry by entry.
        let mut whole =
            LedgerStore::open(dirs[0].path(), Limits::default(), Durability::Buffered).unwrap();
        let results = whole.apply_batch(&log, b"m3").unwrap();
        let mut single =
            LedgerStore::open(dirs[1].path(), Limits::default(), Durability::Buffered).unwrap();
        for entry in &log {
            single
                .apply_batch(std::slice::from_ref(entry), b"m3")
                .unwrap();
        }
        assert_eq!(
            results[1].outcome,
            Outcome::Rejected(Rejection::ApplyFailed)
        );
        assert!(results[1].events.is_empty());
        assert!(matches!(results[0].outcome, Outcome::Applied(_)));
        assert!(matches!(results[2].outcome, Outcome::Applied(_)));
        for store in [&whole, &single] {
            let names: Vec<&str> = store
                .ledger()
                .state()
                .theaters
                .values()
                .map(|t| t.name.as_str())
                .collect();
            assert_eq!(
                names,
                ["Before", "After"],
                "the failed attempt's theater is gone"
            );
            assert_eq!(store.ledger().clock(), 3_000);
            store.ledger().check_invariants().unwrap();
        }
        assert_eq!(whole.ledger().digest(), single.ledger().digest());
        // The retry of the failed request gets the same answer; on disk as in memory.
        let retry = whole
            .apply_batch(
                &[(4, command("r2", 4_000, theater(PANIC_AFTER_A_CHANGE)))],
                b"m4",
            )
            .unwrap();
        assert_eq!(retry[0].outcome, Outcome::Rejected(Rejection::ApplyFailed));
        let digest = whole.ledger().digest();
        drop(whole);
        let reopened =
            LedgerStore::open(dirs[0].path(), Limits::default(), Durability::Buffered).unwrap();
        assert_eq!(reopened.ledger().digest(), digest);
    }
}

#[cfg(test)]
mod rules_tests {
    use super::*;
    use crate::testkit::command;
    use crate::{Applied, CommandKind, Outcome};

    /// The replicated rules survive a reopen and travel in snapshots, and a replica
    /// whose own configuration differs applies them all the same.
    #[test]
    fn replicated_rules_are_stored_and_snapshotted() {
        let strict = Limits {
            seats_per_user_per_show_max: 3,
            seats_per_lock_max: 3,
            ..Limits::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            LedgerStore::open(dir.path(), Limits::default(), Durability::Buffered).unwrap();
        let set = CommandKind::SetLimits {
            limits: strict.clone(),
        };
        let results = store
            .apply_batch(&[(1, command("r1", 1_000, set))], b"m1")
            .unwrap();
        assert_eq!(results[0].outcome, Outcome::Applied(Applied::LimitsSet));
        let digest = store.ledger().digest();
        let bytes = store.export_snapshot().unwrap();
        drop(store);
        let other_file = Limits {
            seats_per_user_per_show_max: 7,
            seats_per_lock_max: 7,
            ..Limits::default()
        };
        let reopened =
            LedgerStore::open(dir.path(), other_file.clone(), Durability::Buffered).unwrap();
        assert_eq!(reopened.ledger().rules(), Some(&strict));
        assert_eq!(reopened.ledger().limits(), &strict);
        assert_eq!(reopened.configured_limits(), &other_file);
        assert_eq!(reopened.ledger().digest(), digest);
        let target = tempfile::tempdir().unwrap();
        let mut installed =
            LedgerStore::open(target.path(), other_file, Durability::Buffered).unwrap();
        installed.install_snapshot(&bytes).unwrap();
        assert_eq!(installed.ledger().limits(), &strict);
        assert_eq!(installed.ledger().digest(), digest);
    }
}

#[cfg(test)]
mod request_table_tests {
    use super::*;
    use crate::outcome::Outcome;
    use crate::testkit::command;

    fn count(db: &DB, prefix: u8) -> usize {
        db.iterator(IteratorMode::From(&[prefix], Direction::Forward))
            .map(|item| item.unwrap())
            .take_while(|(key, _)| key.first() == Some(&prefix))
            .count()
    }

    fn expire(id: &str, at_ms: u64) -> Command {
        command(
            id,
            at_ms,
            crate::command::CommandKind::ExpireLocks { max_locks: 1 },
        )
    }

    #[test]
    fn request_records_live_on_disk_and_leave_it_with_their_second() {
        let limits = Limits {
            request_id_retention_ms: 60_000,
            ..Limits::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            LedgerStore::open(dir.path(), limits.clone(), Durability::Buffered).unwrap();
        let mut index = 0;
        for second in 1..=3u64 {
            let batch: Vec<_> = (0..1_000u64)
                .map(|n| {
                    index += 1;
                    (
                        index,
                        expire(&format!("u1:{second}-{n}"), second * 1_000 + n / 10),
                    )
                })
                .collect();
            store.apply_batch(&batch, b"m").unwrap();
        }
        let table = store.ledger().requests();
        assert_eq!(table.len(), 3_000);
        assert_eq!(table.resident_records().count(), 0, "records stay on disk");
        assert_eq!(table.buckets().len(), 3);
        assert_eq!(count(&store.db, REQUEST), 3_000);
        assert_eq!(count(&store.db, REQUEST_AGE), 3_000);
        assert_eq!(count(&store.db, REQUEST_BUCKET), 3);
        let digest = store.ledger().digest();
        let first = store
            .query(&Query::Request {
                request_id: RequestId("u1:2-7".into()),
            })
            .unwrap();
        assert!(
            matches!(first, Ok(QueryResponse::Request(Some(_)))),
            "{first:?}"
        );

        // A snapshot carries the records; the installed replica answers a retry alike.
        let bytes = store.export_snapshot().unwrap();
        let other = tempfile::tempdir().unwrap();
        let mut installed =
            LedgerStore::open(other.path(), limits.clone(), Durability::Buffered).unwrap();
        installed.install_snapshot(&bytes).unwrap();
        assert_eq!(installed.ledger().digest(), digest);
        assert_eq!(installed.ledger().requests().resident_records().count(), 0);
        let retry = [(index + 1, expire("u1:1-5", 4_000))];
        let here = store.apply_batch(&retry, b"m").unwrap();
        let there = installed.apply_batch(&retry, b"m").unwrap();
        assert_eq!(here, there);
        assert_eq!(store.ledger().digest(), installed.ledger().digest());
        assert_eq!(
            store.ledger().requests().len(),
            3_000,
            "a retry adds nothing"
        );

        // Reopened, the table is the same.
        drop(store);
        let mut store =
            LedgerStore::open(dir.path(), limits.clone(), Durability::Buffered).unwrap();
        assert_eq!(store.ledger().digest(), installed.ledger().digest());

        // Once the last second has left the window, the records leave the disk.
        let late = [(index + 2, expire("u1:late", 3_999 + 60_000 + 1))];
        store.apply_batch(&late, b"m").unwrap();
        assert_eq!(store.ledger().requests().len(), 1);
        assert_eq!(count(&store.db, REQUEST), 1);
        assert_eq!(count(&store.db, REQUEST_AGE), 1);
        assert_eq!(count(&store.db, REQUEST_BUCKET), 1);
        // A key of a forgotten second is a new request again.
        let again = [(index + 3, expire("u1:1-5", 70_000))];
        let outcome = &store.apply_batch(&again, b"m").unwrap()[0].outcome;
        assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
        assert_eq!(store.ledger().requests().len(), 2);
        store.ledger().check_invariants().unwrap();
    }

    #[test]
    fn rules_that_lower_the_bound_below_the_table_refuse_new_keys_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits::default();
        let mut store =
            LedgerStore::open(dir.path(), limits.clone(), Durability::Buffered).unwrap();
        let batch: Vec<_> = (1..=5u64)
            .map(|n| (n, expire(&format!("u1:k{n}"), 1_000 + n)))
            .collect();
        store.apply_batch(&batch, b"m").unwrap();
        let lower = Limits {
            request_ids_max: 3,
            ..limits.clone()
        };
        let set = command(
            "u1:rules",
            2_000,
            crate::command::CommandKind::SetLimits { limits: lower },
        );
        let outcome = &store.apply_batch(&[(6, set)], b"m").unwrap()[0].outcome;
        assert!(outcome.is_applied(), "{outcome:?}");
        // The table now holds 6 keys against a bound of 3.
        assert_eq!(store.ledger().requests().len(), 6);
        drop(store);
        let mut store = LedgerStore::open(dir.path(), limits, Durability::Buffered)
            .expect("a table over a lowered bound still opens");
        store.ledger().check_invariants().unwrap();
        let known = &store
            .apply_batch(&[(8, expire("u1:k2", 3_000))], b"m")
            .unwrap()[0];
        assert!(
            known.outcome.is_applied(),
            "a known key is answered: {:?}",
            known.outcome
        );
        let new = &store
            .apply_batch(&[(9, expire("u1:new", 3_000))], b"m")
            .unwrap()[0];
        assert!(
            matches!(
                new.outcome,
                Outcome::Rejected(crate::outcome::Rejection::RequestTableFull { .. })
            ),
            "{:?}",
            new.outcome
        );
    }
}

#[cfg(test)]
mod format_version_tests {
    use super::*;
    use crate::testkit::{command, create_theater, publish_show, screen};

    fn open(path: &Path) -> Result<LedgerStore, StoreError> {
        LedgerStore::open(path, Limits::default(), Durability::SyncEveryBatch)
    }

    /// A store with a theater and a show in it, closed.
    fn store_with_data(path: &Path) -> [u8; 32] {
        let mut store = open(path).expect("open a new store");
        let commands = [
            (
                1,
                command(
                    "r1",
                    1_000,
                    create_theater("pune", UserId(1), vec![screen("A", 2, 3)]),
                ),
            ),
            (
                2,
                command(
                    "r2",
                    2_000,
                    publish_show(TheaterId(1), 0, 90_000_000, "Dune"),
                ),
            ),
        ];
        store.apply_batch(&commands, b"at 2").expect("apply");
        store.ledger().digest()
    }

    /// A key and its value.
    type Item = (Box<[u8]>, Box<[u8]>);

    /// Every key and value of the store, read with RocksDB alone.
    fn contents(path: &Path) -> Vec<Item> {
        let db = DB::open_default(path).expect("open with RocksDB");
        let items = db
            .iterator(IteratorMode::Start)
            .collect::<Result<Vec<_>, _>>();
        items.expect("read every key")
    }

    fn recorded_version(path: &Path) -> Option<Vec<u8>> {
        let db = DB::open_default(path).expect("open with RocksDB");
        db.get(FORMAT_VERSION_KEY).expect("read the version")
    }

    #[test]
    fn a_new_store_records_the_format_version() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).expect("create"));
        let expected = FORMAT_VERSION.to_be_bytes().to_vec();
        assert_eq!(recorded_version(dir.path()), Some(expected));
        drop(open(dir.path()).expect("reopen"));
    }

    #[test]
    fn a_store_written_before_format_versions_opens_as_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let digest = store_with_data(dir.path());
        {
            let db = DB::open_default(dir.path()).unwrap();
            db.delete(FORMAT_VERSION_KEY).unwrap();
        }
        assert_eq!(recorded_version(dir.path()), None);
        let store = open(dir.path()).expect("an unversioned store is version 1");
        assert_eq!(store.ledger().digest(), digest);
        assert_eq!(store.marker(), b"at 2");
        drop(store);
        assert_eq!(
            recorded_version(dir.path()),
            Some(FORMAT_VERSION.to_be_bytes().to_vec()),
            "version 1 opens as the current version"
        );
    }

    #[test]
    fn a_version_1_store_opens_as_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let digest = store_with_data(dir.path());
        {
            let db = DB::open_default(dir.path()).unwrap();
            db.put(FORMAT_VERSION_KEY, 1u64.to_be_bytes()).unwrap();
        }
        let store = open(dir.path()).expect("version 1 has no rules yet: it opens");
        assert_eq!(store.ledger().digest(), digest);
        drop(store);
        assert_eq!(
            recorded_version(dir.path()),
            Some(FORMAT_VERSION.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn a_version_2_store_gets_its_request_records_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let digest = store_with_data(dir.path());
        {
            // What a version 2 build wrote: the records under `R|`, no `Y|` or `Z|`.
            let db = DB::open_default(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            batch.delete_range(&[REQUEST_AGE][..], &[REQUEST_BUCKET + 1][..]);
            db.write(batch).unwrap();
            db.put(FORMAT_VERSION_KEY, 2u64.to_be_bytes()).unwrap();
        }
        let mut store = open(dir.path()).expect("version 2 opens");
        assert_eq!(store.ledger().digest(), digest);
        assert_eq!(store.ledger().requests().len(), 2);
        let retry = command(
            "r1",
            3_000,
            create_theater("pune", UserId(1), vec![screen("A", 2, 3)]),
        );
        let again = store.apply_batch(&[(3, retry)], b"at 3").unwrap();
        assert!(
            matches!(
                again[0].outcome,
                crate::outcome::Outcome::Applied(crate::outcome::Applied::TheaterCreated {
                    theater: TheaterId(1)
                })
            ),
            "{:?}",
            again[0].outcome
        );
        drop(store);
        assert_eq!(
            recorded_version(dir.path()),
            Some(FORMAT_VERSION.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        store_with_data(dir.path());
        {
            let db = DB::open_default(dir.path()).unwrap();
            db.put(FORMAT_VERSION_KEY, 4u64.to_be_bytes()).unwrap();
        }
        let before = contents(dir.path());
        let error = open(dir.path()).err().expect("a newer format is refused");
        assert!(
            matches!(
                error,
                StoreError::UnsupportedFormat {
                    found: 4,
                    supported: 3
                }
            ),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains("format version 4"), "{message}");
        assert_eq!(
            contents(dir.path()),
            before,
            "a refused open changed the store"
        );
    }

    #[test]
    fn a_malformed_format_version_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        store_with_data(dir.path());
        {
            let db = DB::open_default(dir.path()).unwrap();
            db.put(FORMAT_VERSION_KEY, [1u8]).unwrap();
        }
        let error = open(dir.path()).err().expect("refused");
        assert!(
            matches!(
                error,
                StoreError::Corrupt {
                    what: "format version",
                    ..
                }
            ),
            "{error}"
        );
    }

    /// What `install_start` writes for a snapshot file, as a process stopped
    /// right after it would leave the store: the image cleared, the file's path kept,
    /// A store with data (its directory and digest) and its snapshot in a file there.
    fn snapshot_file_of_a_store_with_data() -> (tempfile::TempDir, [u8; 32], std::path::PathBuf) {
        let source = tempfile::tempdir().unwrap();
        let digest = store_with_data(source.path());
        let file = source.path().join("incoming.snapshot");
        let image = LedgerStore::pin_image(&open(source.path()).unwrap()).unwrap();
        image
            .write_to(std::fs::File::create(&file).unwrap())
            .unwrap();
        (source, digest, file)
    }

    /// some of its records written.
    fn stop_install_after_the_first_batch(path: &Path, file: &Path, source: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let state = open(source).unwrap().full_state().unwrap();
        let store = open(path).unwrap();
        let mut start = WriteBatch::default();
        start.delete_range(&[0u8][..], &[0xffu8][..]);
        start.put(FORMAT_VERSION_KEY, FORMAT_VERSION.to_be_bytes());
        start.put(INSTALLING_KEY, file.as_os_str().as_bytes());
        let (id, record) = state.requests.into_iter().next().unwrap();
        put_record(&mut start, &id, &record);
        store.db.write(start).unwrap();
    }

    #[test]
    fn an_install_stopped_halfway_is_finished_when_the_store_opens() {
        let (source, digest, file) = snapshot_file_of_a_store_with_data();
        let full = open(source.path()).unwrap().full_digest().unwrap();
        let target = tempfile::tempdir().unwrap();
        stop_install_after_the_first_batch(target.path(), &file, source.path());
        let store = open(target.path()).expect("the install is redone");
        assert_eq!(store.redone_install(), Some(file.as_path()));
        assert_eq!(store.ledger().digest(), digest);
        assert_eq!(store.full_digest().unwrap(), full);
        assert_eq!(store.marker(), b"at 2");
        drop(store);
        let store = open(target.path()).unwrap();
        assert_eq!(store.redone_install(), None, "done once");
        drop(store);

        // Without its file the half-replaced store is refused with what to do.
        let other = tempfile::tempdir().unwrap();
        stop_install_after_the_first_batch(other.path(), &file, source.path());
        std::fs::remove_file(&file).unwrap();
        let error = open(other.path()).err().expect("refused");
        assert!(
            matches!(&error, StoreError::InterruptedInstall { path, .. } if path == &file.display().to_string()),
            "{error}"
        );
        assert!(
            error.to_string().contains("wipe its shard directory"),
            "{error}"
        );
    }

    #[test]
    fn while_a_file_installs_readers_are_refused_not_blocked_or_misled() {
        let (_source, digest, file) = snapshot_file_of_a_store_with_data();
        let target = tempfile::tempdir().unwrap();
        let mut store = open(target.path()).unwrap();
        let prepared = PreparedInstall::from_file(&file, &Limits::default()).unwrap();
        let installing = store.begin_install(prepared).unwrap();
        installing.write_records().unwrap();
        let request = Query::Request {
            request_id: RequestId("r1".into()),
        };
        assert!(matches!(store.query(&request), Err(StoreError::Installing)));
        assert!(matches!(
            store.events_from(0, 10),
            Err(StoreError::Installing)
        ));
        assert!(matches!(store.full_state(), Err(StoreError::Installing)));
        assert!(matches!(
            LedgerStore::pin_image(&store),
            Err(StoreError::Installing)
        ));
        assert!(matches!(
            store.apply_batch(&[], b"x"),
            Err(StoreError::Installing)
        ));
        store.finish_install(installing, Ok(())).unwrap();
        assert_eq!(store.ledger().digest(), digest);
        assert!(store.query(&request).unwrap().is_ok());
        LedgerStore::pin_image(&store).unwrap();
    }

    #[test]
    fn an_install_whose_records_failed_is_finished_by_the_next_open() {
        let (_source, digest, file) = snapshot_file_of_a_store_with_data();
        let target = tempfile::tempdir().unwrap();
        let mut store = open(target.path()).unwrap();
        let prepared = PreparedInstall::from_file(&file, &Limits::default()).unwrap();
        let installing = store.begin_install(prepared).unwrap();
        let failed = Err(StoreError::Io(std::io::Error::other("disk went away")));
        assert!(store.finish_install(installing, failed).is_err());
        assert!(store.is_poisoned());
        assert!(store.apply_batch(&[], b"x").is_err());
        drop(store);
        let store = open(target.path()).unwrap();
        assert_eq!(store.redone_install(), Some(file.as_path()));
        assert_eq!(store.ledger().digest(), digest);
    }

    #[test]
    fn an_installed_snapshot_keeps_the_format_version() {
        let source = tempfile::tempdir().unwrap();
        let digest = store_with_data(source.path());
        let bytes = open(source.path()).unwrap().export_snapshot().unwrap();
        let target = tempfile::tempdir().unwrap();
        let mut store = open(target.path()).unwrap();
        store.install_snapshot(&bytes).expect("install");
        drop(store);
        assert_eq!(
            recorded_version(target.path()),
            Some(FORMAT_VERSION.to_be_bytes().to_vec())
        );
        assert_eq!(open(target.path()).unwrap().ledger().digest(), digest);
    }
}
