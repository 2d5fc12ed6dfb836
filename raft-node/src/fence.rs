//! The node's memory of how far its Raft state has gone, kept beside the data a restore
//! replaces, and the restore marker that keeps a restored node out of the voters.
//!
//! Raft's safety rests on every voter's log and vote only moving forward: a vote given
//! in a term is never given again, an entry acknowledged is never forgotten. A node whose
//! `raft-log` goes back to a backup (or to an older copy made by hand) breaks both: its
//! old vote lets it vote twice in a term, and a majority formed with it can elect a
//! leader without entries the cluster acknowledged. openraft's leaders also assume it
//! (a follower's matched index only grows): in debug builds they panic, in release builds
//! they resend the same entries forever.
//!
//! Two records in the data directory guard this; neither is inside `raft-log` or
//! `shards`, so neither comes back with a backup or a copy of those directories:
//!
//! - The fence ([`FENCE_FILE`]): the highest term of a vote this node persisted, per
//!   shard, and a RocksDB sequence number of the log database that was durable. The log
//!   store raises the term after it has made a vote durable (so one small fsync per
//!   election, none per write), and the node raises the sequence number about once a
//!   second, after a sync of the log's WAL has covered it. Both are written after what
//!   they describe is durable, so a crash can leave them behind the log, never ahead.
//!   Every write to the log database takes a new sequence number, so a database whose
//!   latest sequence number is below the fence's has lost writes it once had durably:
//!   it went backwards, even within one term (a copy taken since the last election). At
//!   open, a vote below the fence's term or a sequence number below its own refuses the
//!   start ([`check_log`]), naming the safe order.
//! - The restore marker ([`RESTORED_FILE`]): written by `bookingctl restore` (through
//!   [`crate::backup::restore`]), which also resets the fence to the restored database. A
//!   node that starts with it asks its peers for each restored shard's membership
//!   ([`crate::node`], peer method `MEMBERSHIPS`) and refuses to start while the newest
//!   membership any peer knows still counts it as a voter, or while no peer answers for
//!   a shard ([`restored_voter_shards`]). Once it has been re-added (a membership
//!   after the backup's applied index names it) the marker is removed.
//!
//! What this cannot see: a data directory replaced as a whole, fence included, by hand.
//! Its node has no fence and starts (as a node upgraded from a release without fences
//! does); `bookingctl restore` is the way that is guarded. A fence of another node id is
//! refused.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The fence's file name in the data directory (beside `raft-log` and `shards`).
pub const FENCE_FILE: &str = "fence.json";
/// The restore marker's file name in the data directory.
pub const RESTORED_FILE: &str = "restored.json";
/// The format of both files this code writes and reads.
pub const FORMAT: u32 = 1;

/// What the node says when it must not start as a voter with the data it has.
pub const SAFE_ORDER: &str = "the safe order: for every shard it hosts, `bookingctl member \
     remove --shard S --node N` while it is stopped; then `bookingctl restore` a backup into \
     its data directory (or give it an empty one); start it; then `bookingctl member add` it \
     as a learner and `bookingctl member promote` it (deploy/runbooks/restore-from-backup.md)";

/// The fence as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceRecord {
    pub format: u32,
    /// The node whose data directory this is: a fence of another node is refused.
    pub node_id: NodeId,
    /// A RocksDB sequence number of the log database known durable: the database's latest
    /// sequence number is never below it unless the database went backwards.
    pub log_sequence: u64,
    /// Per shard, the highest term of a vote this node made durable.
    pub terms: BTreeMap<String, u64>,
}

/// The restore marker as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredMarker {
    pub format: u32,
    pub node_id: NodeId,
    /// The backup restored (its directory, as given to `bookingctl restore`).
    pub backup: String,
    /// Per restored shard, the applied index of the backup: a membership naming this node
    /// at a later index shows it was re-added after the restore.
    pub shards: BTreeMap<String, u64>,
}

/// One peer's view of one shard's membership, the answer to the `MEMBERSHIPS` peer method.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMembership {
    pub shard: String,
    /// The log index of the membership entry (0 if none is known).
    pub membership_index: u64,
    /// Every node that votes in it (both halves of a joint configuration).
    pub voters: Vec<NodeId>,
}

fn io_error(path: &Path, problem: impl std::fmt::Display) -> String {
    format!("{}: {problem}", path.display())
}

/// Writes `value` as JSON to `path` durably: a temporary file, fsync, rename, fsync of
/// the directory. A crash leaves the old file or the new one, never a torn one.
pub fn write_json_durably<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| io_error(path, "has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io_error(path, "has no file name"))?;
    let temporary = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| io_error(path, e))?;
    let mut file = std::fs::File::create(&temporary).map_err(|e| io_error(&temporary, e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&temporary, e))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|e| io_error(path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        io_error(
            path,
            format!("unreadable ({e}); it is not this build's file"),
        )
    })
}

/// A file of this module, with its format number.
trait Versioned: serde::de::DeserializeOwned {
    fn format(&self) -> u32;
}

impl Versioned for FenceRecord {
    fn format(&self) -> u32 {
        self.format
    }
}

impl Versioned for RestoredMarker {
    fn format(&self) -> u32 {
        self.format
    }
}

/// Reads `file` of a data directory, if it has one, refusing another format.
fn read_versioned<T: Versioned>(data_dir: &Path, file: &str) -> Result<Option<T>, String> {
    let path = data_dir.join(file);
    match read_json::<T>(&path)? {
        Some(value) if value.format() != FORMAT => Err(io_error(
            &path,
            format!(
                "format {} (this build reads {FORMAT}); start the node with the release \
                 that wrote it",
                value.format()
            ),
        )),
        other => Ok(other),
    }
}

/// Reads the fence of a data directory, if it has one.
pub fn read_fence(data_dir: &Path) -> Result<Option<FenceRecord>, String> {
    read_versioned(data_dir, FENCE_FILE)
}

/// Reads the restore marker of a data directory, if it has one.
pub fn read_marker(data_dir: &Path) -> Result<Option<RestoredMarker>, String> {
    read_versioned(data_dir, RESTORED_FILE)
}

/// Removes the restore marker durably (the node has been re-added).
pub fn clear_marker(data_dir: &Path) -> Result<(), String> {
    let path = data_dir.join(RESTORED_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(data_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&path, e)),
    }
}

/// Compares the log database a node is about to open with its fence. `terms` holds the
/// term of each shard's stored vote (absent: no vote stored), `log_sequence` the
/// database's latest sequence number. Refuses a fence of another node, a vote below the
/// fence's term and a sequence number below the fence's.
pub fn check_log(
    fence: &FenceRecord,
    node_id: NodeId,
    terms: &BTreeMap<String, u64>,
    log_sequence: u64,
) -> Result<(), String> {
    if fence.node_id != node_id {
        return Err(format!(
            "the data directory's {FENCE_FILE} belongs to node {}, this is node {node_id}: \
             never start a node on another node's data",
            fence.node_id
        ));
    }
    for (shard, &fenced) in &fence.terms {
        let stored = terms.get(shard).copied().unwrap_or(0);
        if stored < fenced {
            return Err(format!(
                "node {node_id}: shard {shard}'s Raft vote went backwards: the log holds a \
                 vote of term {stored}, but this node once voted in term {fenced} \
                 ({FENCE_FILE}); its raft-log was restored or copied from an older state \
                 outside bookingctl. Starting it as a voter could elect a leader without \
                 acknowledged writes, so it refuses; use {SAFE_ORDER}"
            ));
        }
    }
    if log_sequence < fence.log_sequence {
        return Err(format!(
            "node {node_id}: the Raft log database went backwards: its latest write is \
             number {log_sequence}, but write {} was once durable here ({FENCE_FILE}); its \
             raft-log was restored or copied from an older state outside bookingctl. \
             Starting it as a voter could lose acknowledged writes, so it refuses; use \
             {SAFE_ORDER}",
            fence.log_sequence
        ));
    }
    Ok(())
}

/// The restored shards of which the cluster still counts `node_id` a voter, or cannot
/// say. For each shard of the marker the newest membership any peer reported decides
/// (the one with the highest log index); no answer for a shard counts as a voter, since
/// nobody can vouch that it was removed.
pub fn restored_voter_shards(
    marker: &RestoredMarker,
    node_id: NodeId,
    answers: &[ShardMembership],
) -> Vec<(String, &'static str)> {
    let mut refused = Vec::new();
    for shard in marker.shards.keys() {
        let newest = answers
            .iter()
            .filter(|a| &a.shard == shard)
            .max_by_key(|a| a.membership_index);
        match newest {
            None => refused.push((shard.clone(), "no peer answered for it")),
            Some(m) if m.voters.contains(&node_id) => {
                refused.push((shard.clone(), "it is still a voter"))
            }
            Some(_) => {}
        }
    }
    refused
}

/// The live fence of a running node: raised as votes and the log move on.
#[derive(Debug)]
pub struct Fence {
    path: PathBuf,
    record: Mutex<FenceRecord>,
}

impl Fence {
    /// A fence of `data_dir` starting at `record` (checked or freshly made by the caller),
    /// written durably now.
    pub fn create(data_dir: &Path, record: FenceRecord) -> Result<Fence, String> {
        let path = data_dir.join(FENCE_FILE);
        write_json_durably(&path, &record)?;
        Ok(Fence {
            path,
            record: Mutex::new(record),
        })
    }

    /// Records that a vote of `term` is durable in `shard`'s log (writes only when it
    /// raises the fence).
    pub fn raise_term(&self, shard: &str, term: u64) -> Result<(), String> {
        self.update(|record| {
            let fenced = record.terms.entry(shard.to_owned()).or_insert(0);
            if term > *fenced {
                *fenced = term;
                true
            } else {
                false
            }
        })
    }

    /// Records that every write of the log database up to `sequence` is durable.
    pub fn raise_sequence(&self, sequence: u64) -> Result<(), String> {
        self.update(|record| {
            if sequence > record.log_sequence {
                record.log_sequence = sequence;
                true
            } else {
                false
            }
        })
    }

    /// The fenced sequence number.
    pub fn log_sequence(&self) -> u64 {
        self.record
            .lock()
            .map(|record| record.log_sequence)
            .unwrap_or(u64::MAX)
    }

    fn update(&self, change: impl FnOnce(&mut FenceRecord) -> bool) -> Result<(), String> {
        // Held while writing, so the file always holds the highest values, in order.
        let mut record = self
            .record
            .lock()
            .map_err(|_| io_error(&self.path, "fence lock poisoned"))?;
        let mut next = record.clone();
        if change(&mut next) {
            write_json_durably(&self.path, &next)?;
            *record = next;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(terms: &[(&str, u64)], sequence: u64) -> FenceRecord {
        FenceRecord {
            format: FORMAT,
            node_id: 2,
            log_sequence: sequence,
            terms: terms.iter().map(|(s, t)| (s.to_string(), *t)).collect(),
        }
    }

    fn terms(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(s, t)| (s.to_string(), *t)).collect()
    }

    #[test]
    fn a_log_at_or_past_the_fence_opens() {
        let fence = fence(&[("mumbai", 3), ("global", 1)], 100);
        check_log(&fence, 2, &terms(&[("mumbai", 3), ("global", 1)]), 100).unwrap();
        check_log(&fence, 2, &terms(&[("mumbai", 4), ("global", 2)]), 500).unwrap();
    }

    #[test]
    fn a_vote_below_the_fence_is_refused_with_the_safe_order() {
        let fence = fence(&[("mumbai", 3)], 100);
        let error = check_log(&fence, 2, &terms(&[("mumbai", 2)]), 900).unwrap_err();
        assert!(error.contains("went backwards"), "{error}");
        assert!(error.contains("member remove"), "{error}");
        let error = check_log(&fence, 2, &terms(&[]), 900).unwrap_err();
        assert!(error.contains("term 0"), "{error}");
    }

    #[test]
    fn a_database_behind_the_fenced_sequence_is_refused_even_in_the_same_term() {
        let fence = fence(&[("mumbai", 3)], 100);
        let error = check_log(&fence, 2, &terms(&[("mumbai", 3)]), 99).unwrap_err();
        assert!(error.contains("went backwards"), "{error}");
    }

    #[test]
    fn another_nodes_fence_is_refused() {
        let error = check_log(&fence(&[], 0), 3, &terms(&[]), 0).unwrap_err();
        assert!(error.contains("belongs to node 2"), "{error}");
    }

    #[test]
    fn the_newest_membership_decides_and_silence_refuses() {
        let marker = RestoredMarker {
            format: FORMAT,
            node_id: 2,
            backup: "b1".into(),
            shards: [("mumbai".to_string(), 50), ("global".to_string(), 9)].into(),
        };
        let member = |shard: &str, index, voters: &[NodeId]| ShardMembership {
            shard: shard.into(),
            membership_index: index,
            voters: voters.to_vec(),
        };
        // A stale peer still counts node 2; the newest membership has removed it.
        let answers = [
            member("mumbai", 10, &[1, 2, 3]),
            member("mumbai", 60, &[1, 3]),
            member("global", 12, &[1, 3]),
        ];
        assert!(restored_voter_shards(&marker, 2, &answers).is_empty());
        let answers = [member("mumbai", 60, &[1, 2, 3])];
        assert_eq!(
            restored_voter_shards(&marker, 2, &answers),
            vec![
                ("global".to_string(), "no peer answered for it"),
                ("mumbai".to_string(), "it is still a voter"),
            ]
        );
    }

    #[test]
    fn the_fence_only_rises_and_survives_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let live = Fence::create(dir.path(), fence(&[], 0)).unwrap();
        live.raise_term("mumbai", 4).unwrap();
        live.raise_term("mumbai", 2).unwrap();
        live.raise_sequence(70).unwrap();
        live.raise_sequence(30).unwrap();
        let stored = read_fence(dir.path()).unwrap().unwrap();
        assert_eq!(stored, fence(&[("mumbai", 4)], 70));
    }

    #[test]
    fn an_unreadable_fence_or_marker_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FENCE_FILE), b"{ not json").unwrap();
        std::fs::write(dir.path().join(RESTORED_FILE), b"\xff\x00").unwrap();
        assert!(read_fence(dir.path()).unwrap_err().contains("unreadable"));
        assert!(read_marker(dir.path()).unwrap_err().contains("unreadable"));
        clear_marker(dir.path()).unwrap();
        assert_eq!(read_marker(dir.path()).unwrap(), None);
    }
}
