//! The snapshot byte format: a framed, checksummed image of a shard's state, its
//! recent events and the caller's applied-position marker.
//!
//! Version 4 (written): `MAGIC (8) | 4 u32 LE | body length u64 LE | body | sections |
//! END | blake3 of every byte before it (32)`. The body is the codec encoding of
//! `SnapshotBody` with no request records; they follow in sections (`REQUESTS | length
//! u32 LE | codec of Vec<(RequestId, RequestRecord)>`), ids strictly increasing across
//! all sections, so that a writer streams them from disk and a reader hands them on
//! section by section ([`Writer`], [`decode_lean`]) without holding the whole table.
//! Versions 2 and 3 (read): `MAGIC | version | body length | body | blake3(body)`, the
//! records inside the body's state.
//!
//! Anything that does not match the frame, the checksum or the invariants is refused
//! with an error; nothing is installed from it.

use crate::codec;
use crate::event::EventRecord;
use crate::ids::RequestId;
use crate::ledger::{Ledger, RequestRecord, State};
use crate::limits::Limits;
use crate::requests::{Bucket, BucketSum, RequestTable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};

const MAGIC: &[u8; 8] = b"SEATSNAP";
/// Version 2 added `events_kept_from`, version 3 `rules`, version 4 the request
/// sections. Versions 2 and 3 are still read.
const VERSION: u32 = 4;
/// The version of `frame_payload`'s single-body frame.
const BODY_VERSION: u32 = 3;
const REQUESTS: u8 = b'R';
const END: u8 = b'.';
/// Request records per section a writer emits.
pub const RECORDS_PER_SECTION: usize = 50_000;
const HEADER_BYTES: usize = 8 + 4 + 8;
const CHECKSUM_BYTES: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotBody {
    /// Opaque to the ledger: the replication layer's record of what is applied.
    pub marker: Vec<u8>,
    pub state: State,
    pub events: Vec<EventRecord>,
    /// Every event at or after this log index is in `events`; older ones were dropped
    /// by the retention window (consumers behind it are told so).
    pub events_kept_from: u64,
    /// The shard's replicated rules (`CommandKind::SetLimits`), if set.
    pub rules: Option<Limits>,
}

/// The body of a version 2 snapshot.
#[derive(Deserialize)]
struct SnapshotBodyV2 {
    marker: Vec<u8>,
    state: State,
    events: Vec<EventRecord>,
    events_kept_from: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("snapshot is truncated: {0} bytes is shorter than its frame")]
    Truncated(usize),
    #[error("not a seat-ledger snapshot (bad magic bytes)")]
    BadMagic,
    #[error("snapshot version {0} is not supported (this build reads versions 2 to 4)")]
    BadVersion(u32),
    #[error("snapshot length field says {declared} bytes, past the limit of {limit}")]
    BadLength { declared: u64, limit: u64 },
    #[error("snapshot could not be read: {0}")]
    Unreadable(String),
    #[error("snapshot checksum mismatch: the bytes were corrupted")]
    BadChecksum,
    #[error("snapshot body does not decode: {0}")]
    Undecodable(String),
    #[error("snapshot state breaks an invariant: {0}")]
    Inconsistent(String),
}

/// Snapshot bytes (version 4) of `body`; its request records go into sections.
pub fn encode(body: &SnapshotBody) -> Vec<u8> {
    let records: Vec<(RequestId, RequestRecord)> = body
        .state
        .requests
        .iter()
        .map(|(id, record)| (id.clone(), record.clone()))
        .collect();
    let mut lean = body.clone();
    lean.state.requests.clear();
    let write = || -> std::io::Result<Vec<u8>> {
        let mut writer = Writer::new(Vec::new(), &lean)?;
        for section in records.chunks(RECORDS_PER_SECTION) {
            writer.requests(section)?;
        }
        writer.finish()
    };
    // Writing to memory cannot fail.
    write().unwrap_or_default()
}

/// Version 4 bytes of an encoded body followed by `tail` (sections and the end byte, or
/// anything else) and the checksum over both: the fuzz targets use it to reach the
/// section parser.
pub fn frame_sections(payload: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len() + tail.len() + CHECKSUM_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(tail);
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    out
}

/// Frames encoded body bytes with the single-body header and checksum of version 3
/// (the fuzz targets use it to reach the body decoder, and the golden test pins it).
pub fn frame_payload(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len() + CHECKSUM_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&BODY_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out
}

/// Writes a version 4 snapshot to `out` as it goes: the body first, then the request
/// records in sections (in increasing id order, as a store iterates them), then the
/// checksum.
pub struct Writer<W: Write> {
    out: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Writer<W> {
    /// Starts a snapshot of `body`, whose state must hold no request records (they
    /// are written with [`Writer::requests`]).
    pub fn new(out: W, body: &SnapshotBody) -> std::io::Result<Writer<W>> {
        let payload = codec::encode(body);
        let mut writer = Writer {
            out,
            hasher: blake3::Hasher::new(),
        };
        writer.put(MAGIC)?;
        writer.put(&VERSION.to_le_bytes())?;
        writer.put(&(payload.len() as u64).to_le_bytes())?;
        writer.put(&payload)?;
        Ok(writer)
    }

    /// One section of request records, ids increasing (and above every earlier
    /// section's).
    pub fn requests(&mut self, records: &[(RequestId, RequestRecord)]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let payload = codec::encode(&records);
        let length = u32::try_from(payload.len())
            .map_err(|_| std::io::Error::other("a request section over 4 GiB"))?;
        self.put(&[REQUESTS])?;
        self.put(&length.to_le_bytes())?;
        self.put(&payload)
    }

    /// Ends the snapshot with its checksum and hands back the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.put(&[END])?;
        let hash = self.hasher.finalize();
        self.out.write_all(hash.as_bytes())?;
        Ok(self.out)
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }
}

/// A verified snapshot: the ledger rebuilt from it, with its marker and events.
pub struct Decoded {
    pub marker: Vec<u8>,
    pub events: Vec<EventRecord>,
    pub events_kept_from: u64,
    pub ledger: Ledger,
}

/// Decodes and verifies snapshot bytes; the ledger built from them, its request
/// records in memory, satisfies every invariant.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, SnapshotError> {
    let mut records = BTreeMap::new();
    let mut body = parsed_body(parse(bytes, BodyMode::Decode, |section| {
        records.extend(section);
        Ok(())
    })?)?;
    body.state.requests = records;
    build(body, limits, None)
}

/// Decodes and verifies snapshot bytes, handing each section of request records to
/// `sink` instead of keeping them: the ledger built from the rest has a request table
/// of buckets only (as a store's is), so its digest and invariants are checked without
/// the records in memory. `sink` sees records before the checksum at the end is
/// checked: a caller writing them somewhere must still discard them when this fails.
pub fn decode_lean(
    bytes: &[u8],
    limits: &Limits,
    sink: impl FnMut(&[(RequestId, RequestRecord)]),
) -> Result<Decoded, SnapshotError> {
    decode_lean_from(bytes, limits, sink)
}

/// A snapshot file opened for reading as a stream (`decode_lean_from`,
/// `request_sections`); an error names the file.
pub fn open(path: &std::path::Path) -> Result<std::io::BufReader<std::fs::File>, SnapshotError> {
    let file = std::fs::File::open(path)
        .map_err(|e| SnapshotError::Unreadable(format!("{}: {e}", path.display())))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, file))
}

/// [`decode_lean`] of a snapshot read from `reader` (a file of any size: the body and
/// one section are in memory at a time).
pub fn decode_lean_from<R: Read>(
    reader: R,
    limits: &Limits,
    mut sink: impl FnMut(&[(RequestId, RequestRecord)]),
) -> Result<Decoded, SnapshotError> {
    let mut buckets: BTreeMap<Bucket, BucketSum> = BTreeMap::new();
    let body = parsed_body(parse(reader, BodyMode::Decode, |section| {
        for (id, record) in &section {
            crate::requests::tally(&mut buckets, id, record);
        }
        sink(&section);
        Ok(())
    })?)?;
    build(body, limits, Some(RequestTable::on_disk(buckets)))
}

/// Reads a snapshot again for its request records only, a section at a time, without
/// decoding its body (a second pass over a snapshot [`decode_lean_from`] accepted).
/// The frame and checksum are checked again: `sink` may return an error to stop.
pub fn request_sections<R: Read, E: From<SnapshotError>>(
    reader: R,
    mut sink: impl FnMut(Vec<(RequestId, RequestRecord)>) -> Result<(), E>,
) -> Result<(), E> {
    let mut failed = None;
    let parsed = parse(reader, BodyMode::Skip, |section| {
        sink(section).map_err(|error| {
            failed = Some(error);
            SnapshotError::Unreadable("stopped by the reader of its records".into())
        })
    });
    match (parsed, failed) {
        (_, Some(error)) => Err(error),
        (Err(error), None) => Err(error.into()),
        (Ok(_), None) => Ok(()),
    }
}

fn parsed_body(body: Option<SnapshotBody>) -> Result<SnapshotBody, SnapshotError> {
    body.ok_or_else(|| SnapshotError::Undecodable("no body".into()))
}

/// The ledger of a parsed body (with `table` as its request table if given), checked.
fn build(
    body: SnapshotBody,
    limits: &Limits,
    table: Option<RequestTable>,
) -> Result<Decoded, SnapshotError> {
    let SnapshotBody {
        marker,
        state,
        events,
        events_kept_from,
        rules,
    } = body;
    if let Some(Err(invalid)) = rules.as_ref().map(Limits::validate) {
        return Err(SnapshotError::Inconsistent(format!(
            "replicated rules: {}: {}",
            invalid.field, invalid.problem
        )));
    }
    let mut ledger = Ledger::from_state(limits.clone(), state);
    ledger.adopt_rules(rules);
    if let Some(table) = table {
        *ledger.requests_mut() = table;
    }
    ledger
        .check_invariants()
        .map_err(SnapshotError::Inconsistent)?;
    Ok(Decoded {
        marker,
        events,
        events_kept_from,
        ledger,
    })
}

/// What `parse` does with a version 4 body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyMode {
    Decode,
    /// Read and hash it only: a second pass after the first checked everything.
    Skip,
}

/// A snapshot being read: every byte is hashed as it passes, and a short read is a
/// truncated snapshot.
struct Source<R> {
    inner: R,
    hasher: blake3::Hasher,
    hashing: bool,
    read: u64,
}

impl<R: Read> Source<R> {
    /// Exactly `n` bytes, grown as they arrive (a forged length cannot make us
    /// allocate more than the snapshot holds).
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::new();
        (&mut self.inner)
            .take(n)
            .read_to_end(&mut out)
            .map_err(|e| SnapshotError::Unreadable(e.to_string()))?;
        self.account(&out);
        if (out.len() as u64) < n {
            return Err(SnapshotError::Truncated(self.read as usize));
        }
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut out = [0u8; N];
        self.inner
            .read_exact(&mut out)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated(self.read as usize),
                _ => SnapshotError::Unreadable(e.to_string()),
            })?;
        self.account(&out);
        Ok(out)
    }

    /// Reads and hashes `n` bytes without keeping them.
    fn skip(&mut self, n: u64) -> Result<(), SnapshotError> {
        let mut buffer = vec![0u8; 1 << 16];
        let mut left = n;
        while left > 0 {
            let want = left.min(buffer.len() as u64) as usize;
            let got = self
                .inner
                .read(&mut buffer[..want])
                .map_err(|e| SnapshotError::Unreadable(e.to_string()))?;
            if got == 0 {
                return Err(SnapshotError::Truncated(self.read as usize));
            }
            let chunk = &buffer[..got];
            if self.hashing {
                self.hasher.update(chunk);
            }
            self.read += got as u64;
            left -= got as u64;
        }
        Ok(())
    }

    fn account(&mut self, bytes: &[u8]) {
        if self.hashing {
            self.hasher.update(bytes);
        }
        self.read += bytes.len() as u64;
    }

    /// The hash so far; then the stored checksum must follow, and nothing after it.
    fn checksum(&mut self) -> Result<(), SnapshotError> {
        let hash = self.hasher.finalize();
        self.hashing = false;
        let stored: [u8; CHECKSUM_BYTES] = self.array()?;
        if hash.as_bytes() != &stored {
            return Err(SnapshotError::BadChecksum);
        }
        let mut probe = [0u8; 1];
        match self.inner.read(&mut probe) {
            Ok(0) => Ok(()),
            Ok(_) => Err(SnapshotError::Undecodable(format!(
                "bytes after the checksum at byte {}",
                self.read
            ))),
            Err(e) => Err(SnapshotError::Unreadable(e.to_string())),
        }
    }
}

/// Checks the frame and checksum and decodes the body; the request records (the
/// body's own in versions 2 and 3, the sections' in version 4) go to `sections`, in
/// increasing id order (checked). The body returned holds none (and is `None` when
/// `mode` skips a version 4 body).
///
/// The snapshot is read once, from the start, so it may come from a file of any size:
/// only the body and one section are in memory at a time. A version 4 snapshot's
/// checksum is at its end, so `sections` sees records before it is checked.
fn parse<R: Read>(
    reader: R,
    mode: BodyMode,
    mut sections: impl FnMut(Vec<(RequestId, RequestRecord)>) -> Result<(), SnapshotError>,
) -> Result<Option<SnapshotBody>, SnapshotError> {
    let mut source = Source {
        inner: reader,
        hasher: blake3::Hasher::new(),
        hashing: false,
        read: 0,
    };
    let header: [u8; HEADER_BYTES] = source.array()?;
    if &header[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    let declared = u64::from_le_bytes(header[12..20].try_into().unwrap_or_default());
    if declared > codec::DECODE_BYTES_MAX as u64 {
        return Err(SnapshotError::BadLength {
            declared,
            limit: codec::DECODE_BYTES_MAX as u64,
        });
    }
    match version {
        2 | 3 => {
            source.hashing = true;
            let payload = source.bytes(declared)?;
            source.checksum()?;
            let mut body: SnapshotBody = if version == 2 {
                let v2: SnapshotBodyV2 =
                    codec::decode(&payload).map_err(SnapshotError::Undecodable)?;
                SnapshotBody {
                    marker: v2.marker,
                    state: v2.state,
                    events: v2.events,
                    events_kept_from: v2.events_kept_from,
                    rules: None,
                }
            } else {
                codec::decode(&payload).map_err(SnapshotError::Undecodable)?
            };
            let records = std::mem::take(&mut body.state.requests);
            sections(records.into_iter().collect())?;
            Ok(Some(body))
        }
        VERSION => {
            source.hashing = true;
            source.hasher.update(&header);
            let body = match mode {
                BodyMode::Decode => {
                    let payload = source.bytes(declared)?;
                    let body: SnapshotBody =
                        codec::decode(&payload).map_err(SnapshotError::Undecodable)?;
                    if !body.state.requests.is_empty() {
                        return Err(SnapshotError::Inconsistent(
                            "request records inside the body of a version 4 snapshot".into(),
                        ));
                    }
                    Some(body)
                }
                BodyMode::Skip => {
                    source.skip(declared)?;
                    None
                }
            };
            let mut last: Option<RequestId> = None;
            loop {
                let at = source.read;
                match source.array::<1>()?[0] {
                    END => break,
                    REQUESTS => {
                        let length = u32::from_le_bytes(source.array()?);
                        if length as usize > codec::DECODE_BYTES_MAX {
                            return Err(SnapshotError::BadLength {
                                declared: length.into(),
                                limit: codec::DECODE_BYTES_MAX as u64,
                            });
                        }
                        let payload = source.bytes(length.into())?;
                        let records: Vec<(RequestId, RequestRecord)> =
                            codec::decode(&payload).map_err(SnapshotError::Undecodable)?;
                        drop(payload);
                        for (id, _) in &records {
                            if last.as_ref().is_some_and(|last| last >= id) {
                                return Err(SnapshotError::Inconsistent(format!(
                                    "request id {} is out of order or repeated",
                                    id.0
                                )));
                            }
                            last = Some(id.clone());
                        }
                        sections(records)?;
                    }
                    _ => {
                        return Err(SnapshotError::Undecodable(format!(
                            "no section or end at byte {at}"
                        )))
                    }
                }
            }
            source.checksum()?;
            Ok(body)
        }
        other => Err(SnapshotError::BadVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;

    fn record(n: u64) -> (RequestId, RequestRecord) {
        (
            RequestId(format!("7:key-{n:04}")),
            RequestRecord {
                at_ms: 1_000_000 + n * 400,
                fingerprint: [n as u8; 16],
                outcome: Outcome::Rejected(crate::outcome::Rejection::NotOwner),
            },
        )
    }

    fn body() -> SnapshotBody {
        SnapshotBody {
            marker: vec![9],
            state: State {
                clock: 2_000_000,
                ..State::default()
            },
            events: vec![],
            events_kept_from: 0,
            rules: None,
        }
    }

    /// Three sections of two records each, written as a store streams them.
    fn sectioned(order: &[u64]) -> Vec<u8> {
        let mut writer = Writer::new(Vec::new(), &body()).unwrap();
        for pair in order.chunks(2) {
            let section: Vec<_> = pair.iter().map(|n| record(*n)).collect();
            writer.requests(&section).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn records_in_sections_decode_whole_or_lean_to_one_digest() {
        let bytes = sectioned(&[1, 2, 3, 4, 5, 6]);
        let whole = decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(whole.ledger.requests().len(), 6);
        assert_eq!(whole.ledger.full_state().requests.len(), 6);
        let mut seen = Vec::new();
        let lean = decode_lean(&bytes, &Limits::default(), |section| {
            seen.extend(section.iter().map(|(id, _)| id.clone()));
        })
        .unwrap();
        assert_eq!(seen.len(), 6);
        assert_eq!(lean.ledger.requests().resident_records().count(), 0);
        assert_eq!(lean.ledger.digest(), whole.ledger.digest());
        // The same records written by `encode` (one section) give the same digest.
        let mut body = body();
        body.state.requests = (1..=6).map(record).collect();
        let again = decode(&encode(&body), &Limits::default()).unwrap();
        assert_eq!(again.ledger.digest(), whole.ledger.digest());
    }

    #[test]
    fn records_out_of_order_or_repeated_are_refused() {
        for order in [&[1, 2, 2, 3][..], &[3, 4, 1, 2][..], &[2, 1][..]] {
            let error = decode(&sectioned(order), &Limits::default()).err();
            assert!(
                matches!(error, Some(SnapshotError::Inconsistent(_))),
                "{order:?}: {error:?}"
            );
        }
    }

    #[test]
    fn damaged_version_4_bytes_are_refused() {
        let good = sectioned(&[1, 2, 3, 4]);
        for at in [9, 15, 30, good.len() / 2, good.len() - 40, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad, &Limits::default()).is_err(), "flip at {at}");
        }
        for cut in [1, 33, good.len() / 2] {
            assert!(decode(&good[..good.len() - cut], &Limits::default()).is_err());
        }
        // Well checksummed, badly built: records in the body, a section past the end,
        // bytes after the end marker, no end marker.
        let mut inside = body();
        inside.state.requests = [record(1)].into_iter().collect();
        let cases = [
            frame_sections(&codec::encode(&inside), &[END]),
            frame_sections(&codec::encode(&body()), &[REQUESTS, 200, 0, 0, 0, 1, END]),
            frame_sections(&codec::encode(&body()), &[END, END]),
            frame_sections(&codec::encode(&body()), &[]),
        ];
        for (n, bytes) in cases.iter().enumerate() {
            assert!(decode(bytes, &Limits::default()).is_err(), "case {n}");
        }
        assert!(decode(
            &frame_sections(&codec::encode(&body()), &[END]),
            &Limits::default()
        )
        .is_ok());
    }
}
