//! The idempotency table: each request id's first outcome, kept for the retention
//! window, so that a retry gets the first answer and changes nothing.
//!
//! **Two kinds of id.** An id the api made for a request that carried no
//! `Idempotency-Key` starts with [`AUTO_PREFIX`]: only the api's own retries (within
//! its deadline, seconds) can repeat it, so it is kept for [`AUTO_RETENTION_MS`] (or the
//! rules' retention, if shorter). Every other id is a client's key, kept for
//! `request_id_retention_ms` (24 hours by default, as the contract promises).
//!
//! **Forgetting by the second.** Records that arrived in the same second of shard time
//! form a bucket, forgotten together when the whole second has left the window: a
//! record lives between the retention and the retention plus one second. The table
//! keeps, per bucket, how many records it holds and the sum of their hashes, so it
//! counts, forgets and hashes (for `Ledger::digest`) without the records themselves.
//! A record is live while its bucket is; the shard clock only moves forward, so a
//! bucket once forgotten never comes back, and a stale record left on disk is never
//! mistaken for a live one.
//!
//! **Where the records are.** In a bare ledger (tests, fuzzing, checkers) every record
//! is resident in memory. Under a `LedgerStore` the records live on disk: before a
//! batch the store loads the records of the batch's ids ([`RequestTable::load`]), the
//! ledger answers from those, and after the batch the store writes what was
//! remembered and drops what it loaded. Memory then holds only the buckets (at most
//! one per second of the window and kind).
//!
//! **Bound.** At most `request_ids_max` live records. A keyed command that needs a new
//! record while the table is full is refused (`Rejection::RequestTableFull`, with the
//! time until the oldest bucket leaves the window) instead of forgetting a key younger
//! than the window. Every replica decides this alike: buckets are replicated state.

use crate::codec;
use crate::ids::{Millis, RequestId};
use crate::ledger::RequestRecord;
use crate::limits::Limits;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How an id made by the api (not a client's key) starts.
pub const AUTO_PREFIX: &str = "auto:";
/// How long an api-made id is kept: far beyond any retry of the api's own.
pub const AUTO_RETENTION_MS: Millis = 5 * 60_000;

/// Who made a request id, which decides how long it is kept.
/// Append-only: stored in the buckets' keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RequestKind {
    /// A client's `Idempotency-Key` (or a protocol client's own id).
    Client,
    /// Made by the api for a request without a key.
    Auto,
}

impl RequestKind {
    pub fn of(id: &RequestId) -> RequestKind {
        if id.0.starts_with(AUTO_PREFIX) {
            RequestKind::Auto
        } else {
            RequestKind::Client
        }
    }

    /// The byte that stands for the kind in stored keys.
    pub fn byte(self) -> u8 {
        match self {
            RequestKind::Client => b'c',
            RequestKind::Auto => b'a',
        }
    }

    pub fn from_byte(byte: u8) -> Option<RequestKind> {
        match byte {
            b'c' => Some(RequestKind::Client),
            b'a' => Some(RequestKind::Auto),
            _ => None,
        }
    }

    fn retention_ms(self, limits: &Limits) -> Millis {
        match self {
            RequestKind::Client => limits.request_id_retention_ms,
            RequestKind::Auto => AUTO_RETENTION_MS.min(limits.request_id_retention_ms),
        }
    }
}

/// The records that arrived in one second of shard time, of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bucket {
    pub kind: RequestKind,
    /// `at_ms / 1000` of its records.
    pub second: u64,
}

impl Bucket {
    pub fn of(id: &RequestId, record: &RequestRecord) -> Bucket {
        Bucket {
            kind: RequestKind::of(id),
            second: record.at_ms / 1000,
        }
    }

    /// The first shard time at which the whole bucket is past its window.
    fn forgotten_at(self, limits: &Limits) -> Millis {
        (self.second.saturating_add(1))
            .saturating_mul(1000)
            .saturating_add(self.kind.retention_ms(limits))
    }
}

/// What a bucket holds. Append-only: stored (store format 3 on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSum {
    pub count: u64,
    /// Wrapping sum of the records' hashes ([`record_hash`]), lane by lane.
    pub hash: [u64; 4],
}

impl BucketSum {
    fn add(&mut self, hash: [u64; 4]) {
        self.count = self.count.saturating_add(1);
        for (lane, h) in self.hash.iter_mut().zip(hash) {
            *lane = lane.wrapping_add(h);
        }
    }
}

/// Records in `buckets` (saturating: counts read from disk may be corrupt, and
/// `RequestTable::check` then says so instead of overflowing).
fn total_count(buckets: &BTreeMap<Bucket, BucketSum>) -> u64 {
    buckets
        .values()
        .fold(0u64, |total, sum| total.saturating_add(sum.count))
}

/// Counts `record` into its bucket in `buckets` (how a table is built from records
/// streamed past, e.g. a snapshot's sections).
pub(crate) fn tally(
    buckets: &mut BTreeMap<Bucket, BucketSum>,
    id: &RequestId,
    record: &RequestRecord,
) {
    buckets
        .entry(Bucket::of(id, record))
        .or_default()
        .add(record_hash(id, record));
}

/// A record's contribution to the table's hash.
pub fn record_hash(id: &RequestId, record: &RequestRecord) -> [u64; 4] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&codec::encode(id));
    hasher.update(&codec::encode(record));
    let bytes = hasher.finalize();
    let mut lanes = [0u64; 4];
    for (lane, chunk) in lanes.iter_mut().zip(bytes.as_bytes().chunks_exact(8)) {
        *lane = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
    }
    lanes
}

/// The table of one ledger: buckets always, records as described in the module docs.
#[derive(Clone, Debug, Default)]
pub struct RequestTable {
    buckets: BTreeMap<Bucket, BucketSum>,
    /// Records in memory: every live one (bare ledger), or the ones loaded for and
    /// remembered in the current batch (on disk; `None` = loaded and not found).
    resident: BTreeMap<RequestId, Option<RequestRecord>>,
    /// Resident records by bucket, to forget a bucket's records (bare ledger only).
    by_bucket: BTreeSet<(Bucket, RequestId)>,
    on_disk: bool,
    live: u64,
}

/// What the table needs the store to write after a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestChanges {
    /// Records remembered.
    pub records: BTreeSet<RequestId>,
    /// Buckets whose sum changed or that were forgotten.
    pub buckets: BTreeSet<Bucket>,
}

impl RequestTable {
    /// A bare table holding `records` in memory. Records past the window are
    /// forgotten by the next command's `forget_old`, as the ledger's were.
    pub fn resident(records: BTreeMap<RequestId, RequestRecord>) -> RequestTable {
        let mut table = RequestTable::default();
        for (id, record) in records {
            table.remember(id, record, None);
        }
        table
    }

    /// A table whose records are on disk, with the buckets the store read.
    pub fn on_disk(buckets: BTreeMap<Bucket, BucketSum>) -> RequestTable {
        let live = total_count(&buckets);
        RequestTable {
            buckets,
            resident: BTreeMap::new(),
            by_bucket: BTreeSet::new(),
            on_disk: true,
            live,
        }
    }

    /// Leaves the records to the store (which has just written them) and keeps the
    /// buckets.
    pub(crate) fn move_to_disk(&mut self) {
        self.resident.clear();
        self.by_bucket.clear();
        self.on_disk = true;
    }

    /// Live records.
    pub fn len(&self) -> u64 {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn buckets(&self) -> &BTreeMap<Bucket, BucketSum> {
        &self.buckets
    }

    pub fn is_live(&self, bucket: &Bucket) -> bool {
        self.buckets.contains_key(bucket)
    }

    /// The oldest live second of `kind`, if any.
    pub fn oldest_live(&self, kind: RequestKind) -> Option<u64> {
        let from = Bucket { kind, second: 0 };
        self.buckets
            .range(from..)
            .next()
            .filter(|(bucket, _)| bucket.kind == kind)
            .map(|(bucket, _)| bucket.second)
    }

    /// Every live record in memory (a bare table), by id.
    pub fn resident_records(&self) -> impl Iterator<Item = (&RequestId, &RequestRecord)> {
        self.resident
            .iter()
            .filter_map(|(id, record)| record.as_ref().map(|record| (id, record)))
    }

    /// The table's hash: the wrapping sum of every live record's hash.
    pub fn hash(&self) -> [u64; 4] {
        let mut total = [0u64; 4];
        for sum in self.buckets.values() {
            for (lane, h) in total.iter_mut().zip(sum.hash) {
                *lane = lane.wrapping_add(h);
            }
        }
        total
    }

    /// Records the store loaded for the coming batch: `Some` for ids it found on disk,
    /// `None` for ids it did not.
    pub(crate) fn load(
        &mut self,
        records: impl IntoIterator<Item = (RequestId, Option<RequestRecord>)>,
    ) {
        for (id, record) in records {
            self.resident.entry(id).or_insert(record);
        }
    }

    /// Forgets the loaded records once the batch is written (on disk only).
    pub(crate) fn unload(&mut self) {
        if self.on_disk {
            self.resident.clear();
        }
    }

    /// The live record of `id`, which the store loaded if the table is on disk.
    pub fn get(&self, id: &RequestId) -> Option<&RequestRecord> {
        debug_assert!(
            !self.on_disk || self.resident.contains_key(id),
            "request id {id:?} was not loaded before its batch"
        );
        self.find(id)
    }

    /// The live record of `id` if it is in memory.
    pub fn find(&self, id: &RequestId) -> Option<&RequestRecord> {
        self.resident
            .get(id)
            .and_then(Option::as_ref)
            .filter(|record| self.is_live(&Bucket::of(id, record)))
    }

    /// `Err(ms)` when the table is full: the time until the oldest bucket leaves the
    /// window and frees room.
    pub fn room(&self, clock: Millis, limits: &Limits) -> Result<(), Millis> {
        if self.live < u64::from(limits.request_ids_max) {
            return Ok(());
        }
        // Each kind's oldest bucket goes first.
        let next_free = [RequestKind::Client, RequestKind::Auto]
            .into_iter()
            .filter_map(|kind| {
                let second = self.oldest_live(kind)?;
                Some(Bucket { kind, second }.forgotten_at(limits))
            })
            .min()
            .unwrap_or(clock);
        Err(next_free.saturating_sub(clock).max(1))
    }

    /// Remembers `record` for `id` (which has no live record).
    pub(crate) fn remember(
        &mut self,
        id: RequestId,
        record: RequestRecord,
        changes: Option<&mut RequestChanges>,
    ) {
        let bucket = Bucket::of(&id, &record);
        self.count_in(bucket, record_hash(&id, &record));
        if !self.on_disk {
            self.by_bucket.insert((bucket, id.clone()));
        }
        if let Some(changes) = changes {
            changes.records.insert(id.clone());
            changes.buckets.insert(bucket);
        }
        self.resident.insert(id, Some(record));
    }

    fn count_in(&mut self, bucket: Bucket, hash: [u64; 4]) {
        self.buckets.entry(bucket).or_default().add(hash);
        self.live = self.live.saturating_add(1);
    }

    /// Forgets every bucket whose second has left the window at `clock`.
    pub(crate) fn forget_old(
        &mut self,
        clock: Millis,
        limits: &Limits,
        mut changes: Option<&mut RequestChanges>,
    ) {
        for kind in [RequestKind::Client, RequestKind::Auto] {
            while let Some(second) = self.oldest_live(kind) {
                let bucket = Bucket { kind, second };
                if bucket.forgotten_at(limits) > clock {
                    break;
                }
                if let Some(sum) = self.buckets.remove(&bucket) {
                    self.live = self.live.saturating_sub(sum.count);
                }
                if let Some(changes) = changes.as_deref_mut() {
                    changes.buckets.insert(bucket);
                }
                if !self.on_disk {
                    let from = (bucket, RequestId(String::new()));
                    let ids: Vec<RequestId> = self
                        .by_bucket
                        .range(from..)
                        .take_while(|(b, _)| *b == bucket)
                        .map(|(_, id)| id.clone())
                        .collect();
                    for id in ids {
                        self.by_bucket.remove(&(bucket, id.clone()));
                        self.resident.remove(&id);
                    }
                }
            }
        }
    }

    /// The table agrees with itself: counts and hashes of the buckets match the
    /// resident records (bare ledger; on disk the store checks its own image).
    pub fn check(&self) -> Result<(), String> {
        let total = total_count(&self.buckets);
        if total != self.live {
            return Err(format!(
                "request table counts {} live records but its buckets hold {total}",
                self.live
            ));
        }
        if self.buckets.values().any(|sum| sum.count == 0) {
            return Err("request table keeps an empty bucket".into());
        }
        // No check against `request_ids_max`: the rules may lower it below what is held,
        // and then the table refuses new keys until it is under it again.
        if self.on_disk {
            return Ok(());
        }
        let mut expected = BTreeMap::new();
        for (id, record) in self.resident_records() {
            tally(&mut expected, id, record);
        }
        if expected != self.buckets {
            return Err("request table's buckets disagree with its records".into());
        }
        if self.by_bucket.len() as u64 != self.live {
            return Err("request retention index disagrees with the request table".into());
        }
        Ok(())
    }
}
