//! Snapshots sent in bounded chunks over the peer transport (`method::SNAPSHOT_CHUNK`).
//!
//! A busy shard's snapshot (every booking, the request ids, the kept events) outgrows
//! any single frame within minutes of an on-sale; sent whole, it was refused by the
//! frame limit and openraft retried forever, so a follower behind the purge point could
//! never catch up. Now the leader writes the snapshot to a file once
//! (`LedgerImage::file`) and sends it in chunks of `snapshot_chunk_kib` read from that
//! file, one at a time (each waits for its answer, so heartbeats, votes and clock
//! samples of every shard on the shared connection wait behind at most one chunk), at
//! most `snapshot_send_mib_per_s` (a catching-up replica cannot starve the leader).
//!
//! The receiver keeps one transfer per shard (`Inbox`), named by the BLAKE3 hash of the
//! whole snapshot, appending each chunk to a file and hashing as it goes: neither side
//! holds a snapshot in memory, so its size is bounded by the disk, not by RAM. A sender
//! that lost its connection, or a new leader sending the same snapshot, first asks
//! where to resume (a chunk with no data) and goes on from there. A chunk of another
//! transfer replaces the one held. When the last byte arrives the file must hash to the
//! transfer's name; then it is installed from the file (and the snapshot format checks
//! its own frame, checksum and invariants before anything changes); bad chunks are
//! refused with an error and change nothing else.

use crate::ledger_sm::SnapshotFile;
use crate::network::Vote;
use crate::types::{SnapshotMeta, TypeConfig};
use openraft::raft::SnapshotResponse;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// Largest snapshot a receiver accepts: 256 GiB, far past any shard (the disk is the
/// real bound; a transfer that fills it fails and is retried).
pub const SNAPSHOT_BYTES_MAX: u64 = 256 << 30;

/// One piece of a snapshot. A chunk with no data asks where to resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    /// The transfer's name: the first 16 bytes of the BLAKE3 hash of the whole snapshot.
    pub transfer: [u8; 16],
    pub total: u64,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The receiver's answer to a chunk.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChunkReply {
    /// Send from this offset next.
    Next(u64),
    /// The last chunk arrived and the snapshot was installed.
    Installed(SnapshotResponse<TypeConfig>),
}

/// The name of a transfer of `bytes`.
pub fn transfer_name(bytes: &[u8]) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(bytes);
    name_of(hasher)
}

/// The transfer name of everything `hasher` saw.
pub fn name_of(hasher: blake3::Hasher) -> [u8; 16] {
    let hash = hasher.finalize();
    let mut name = [0u8; 16];
    name.copy_from_slice(&hash.as_bytes()[..16]);
    name
}

/// A writer that hashes and counts what passes through it.
pub struct Hashing<W> {
    out: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W> Hashing<W> {
    pub fn new(out: W) -> Hashing<W> {
        Hashing {
            out,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        }
    }

    /// The output, the hash of what was written and its length.
    pub fn finish(self) -> (W, blake3::Hasher, u64) {
        (self.out, self.hasher, self.bytes)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// What a received chunk leads to.
#[derive(Debug)]
pub enum Received {
    /// Ask the sender for this offset next.
    Next(u64),
    /// Every byte is here, in a file that hashes to the transfer's name: install it.
    Complete {
        vote: Vote,
        meta: SnapshotMeta,
        file: SnapshotFile,
    },
}

struct Partial {
    transfer: [u8; 16],
    total: u64,
    /// Deleted with the transfer, unless it completes.
    file: SnapshotFile,
    out: std::fs::File,
    hasher: blake3::Hasher,
    held: u64,
}

/// A shard's snapshot transfer in progress, on the receiving side, kept in a file
/// under its directory.
pub struct Inbox {
    dir: PathBuf,
    partial: Mutex<Option<Partial>>,
}

impl Inbox {
    /// An inbox writing under `dir` (created when the first transfer starts; the
    /// caller clears it when the shard opens).
    pub fn new(dir: PathBuf) -> Inbox {
        Inbox {
            dir,
            partial: Mutex::new(None),
        }
    }

    /// Takes one chunk (writes to disk: call it off the async executor). Errors name
    /// what is wrong with the chunk; a refused chunk leaves the transfer held as it
    /// was, except that a complete transfer whose bytes do not hash to its name, or
    /// one whose file could not be written, is dropped (it must start again).
    pub fn receive(&self, chunk: SnapshotChunk) -> Result<Received, String> {
        let SnapshotChunk {
            vote,
            meta,
            transfer,
            total,
            offset,
            data,
        } = chunk;
        if total == 0 || total > SNAPSHOT_BYTES_MAX {
            return Err(format!(
                "snapshot chunk: a total of {total} bytes is outside 1..={SNAPSHOT_BYTES_MAX}"
            ));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= total)
            .ok_or_else(|| {
                format!(
                    "snapshot chunk: {} bytes at offset {offset} pass the total of {total}",
                    data.len()
                )
            })?;
        let mut slot = self
            .partial
            .lock()
            .map_err(|_| "snapshot inbox poisoned by a panic".to_owned())?;
        let same = slot
            .as_ref()
            .is_some_and(|p| p.transfer == transfer && p.total == total);
        if !same {
            // Another snapshot (or the first chunk of one): it replaces what was held,
            // whose file is deleted before the new one takes disk.
            *slot = None;
            *slot = Some(self.start(transfer, total)?);
        }
        let Some(partial) = slot.as_mut() else {
            return Err("snapshot inbox lost its transfer".into());
        };
        if offset != partial.held || data.is_empty() {
            // A probe, a repeat or a gap: say where to go on.
            return Ok(Received::Next(partial.held));
        }
        if let Err(error) = partial.out.write_all(&data) {
            *slot = None;
            return Err(format!(
                "snapshot transfer: writing to {} failed: {error}; it starts again",
                self.dir.display()
            ));
        }
        partial.hasher.update(&data);
        partial.held = end;
        if end < total {
            return Ok(Received::Next(end));
        }
        let Some(Partial {
            mut file,
            out,
            hasher,
            ..
        }) = slot.take()
        else {
            return Err("snapshot inbox lost its transfer".into());
        };
        if name_of(hasher) != transfer {
            return Err(
                "snapshot transfer: the assembled bytes do not match their hash; \
                        it starts again"
                    .into(),
            );
        }
        out.sync_all()
            .map_err(|e| format!("snapshot transfer: syncing the received file failed: {e}"))?;
        file.set_bytes(total);
        Ok(Received::Complete { vote, meta, file })
    }

    fn start(&self, transfer: [u8; 16], total: u64) -> Result<Partial, String> {
        let failed = |e: std::io::Error| {
            format!(
                "snapshot transfer: cannot create a file under {}: {e}",
                self.dir.display()
            )
        };
        let path = crate::ledger_sm::next_file(&self.dir, "in").map_err(failed)?;
        let out = std::fs::File::create(&path).map_err(failed)?;
        Ok(Partial {
            transfer,
            total,
            file: SnapshotFile::adopt(path, 0, transfer),
            out,
            hasher: blake3::Hasher::new(),
            held: 0,
        })
    }

    /// Bytes held of the transfer in progress (status and tests).
    pub fn held_bytes(&self) -> u64 {
        self.partial
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|p| p.held))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(bytes: &[u8], transfer: [u8; 16], offset: usize, len: usize) -> SnapshotChunk {
        SnapshotChunk {
            vote: Vote::new(1, 1),
            meta: SnapshotMeta::default(),
            transfer,
            total: bytes.len() as u64,
            offset: offset as u64,
            data: bytes[offset..offset + len].to_vec(),
        }
    }

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| entries.count())
    }

    fn next(received: Result<Received, String>) -> u64 {
        match received {
            Ok(Received::Next(offset)) => offset,
            other => panic!("expected Next, got {other:?}"),
        }
    }

    #[test]
    fn chunks_assemble_and_resume_where_the_receiver_is() {
        let bytes: Vec<u8> = (0..10_000u32).map(|n| (n * 7) as u8).collect();
        let name = transfer_name(&bytes);
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path().to_owned());
        assert_eq!(next(inbox.receive(chunk(&bytes, name, 0, 0))), 0, "probe");
        assert_eq!(next(inbox.receive(chunk(&bytes, name, 0, 4_000))), 4_000);
        // The connection dropped; the sender starts over and is told where to resume.
        assert_eq!(next(inbox.receive(chunk(&bytes, name, 0, 4_000))), 4_000);
        assert_eq!(next(inbox.receive(chunk(&bytes, name, 0, 0))), 4_000);
        assert_eq!(
            next(inbox.receive(chunk(&bytes, name, 8_000, 2_000))),
            4_000,
            "gap"
        );
        assert_eq!(
            next(inbox.receive(chunk(&bytes, name, 4_000, 4_000))),
            8_000
        );
        match inbox.receive(chunk(&bytes, name, 8_000, 2_000)) {
            Ok(Received::Complete { file, .. }) => {
                assert_eq!(std::fs::read(file.path()).unwrap(), bytes);
                assert_eq!(file.bytes(), bytes.len() as u64);
                drop(file);
                assert_eq!(files(dir.path()), 0, "the installed file is deleted");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(inbox.held_bytes(), 0, "a finished transfer is not held");
    }

    #[test]
    fn another_snapshot_replaces_the_transfer_held() {
        let first = vec![1u8; 1_000];
        let second = vec![2u8; 1_000];
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path().to_owned());
        next(inbox.receive(chunk(&first, transfer_name(&first), 0, 500)));
        assert_eq!(inbox.held_bytes(), 500);
        let name = transfer_name(&second);
        assert_eq!(next(inbox.receive(chunk(&second, name, 0, 0))), 0);
        assert_eq!(files(dir.path()), 1, "the first transfer's file is gone");
        next(inbox.receive(chunk(&second, name, 0, 500)));
        assert!(matches!(
            inbox.receive(chunk(&second, name, 500, 500)),
            Ok(Received::Complete { .. })
        ));
    }

    #[test]
    fn bad_chunks_are_refused() {
        let bytes = vec![3u8; 100];
        let name = transfer_name(&bytes);
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path().to_owned());
        let mut past_end = chunk(&bytes, name, 50, 50);
        past_end.offset = 60;
        assert!(inbox
            .receive(past_end)
            .unwrap_err()
            .contains("pass the total"));
        let mut huge = chunk(&bytes, name, 0, 10);
        huge.total = SNAPSHOT_BYTES_MAX + 1;
        assert!(inbox.receive(huge).unwrap_err().contains("outside"));
        let mut overflow = chunk(&bytes, name, 0, 10);
        overflow.offset = u64::MAX;
        assert!(inbox.receive(overflow).is_err());
        // Bytes that do not hash to the transfer's name are never installed.
        let forged = [9u8; 16];
        next(inbox.receive(chunk(&bytes, forged, 0, 50)));
        let error = inbox.receive(chunk(&bytes, forged, 50, 50)).unwrap_err();
        assert!(error.contains("do not match"), "{error}");
        assert_eq!(inbox.held_bytes(), 0);
        assert_eq!(files(dir.path()), 0, "a refused transfer leaves no file");
    }
}
