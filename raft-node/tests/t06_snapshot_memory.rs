//! A received snapshot goes to disk as it arrives: the receiver's heap holds a chunk,
//! not the snapshot, however large the shard.

#[path = "../../state-machine/benches/common/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

use raft_node::snapshot_transfer::{Inbox, Received, SnapshotChunk};

const CHUNK: u64 = 1 << 20;
const TOTAL: u64 = 256 * CHUNK;

/// Chunk `n` of a made-up snapshot (bytes that do not repeat between chunks).
fn chunk_data(n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHUNK as usize);
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < CHUNK as usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

#[test]
fn receiving_a_256_mib_snapshot_holds_about_one_chunk_of_heap() {
    let mut hasher = blake3::Hasher::new();
    for n in 0..TOTAL / CHUNK {
        hasher.update(&chunk_data(n));
    }
    let mut transfer = [0u8; 16];
    transfer.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::new(dir.path().join("in"));
    counting::reset_peak();
    let before = counting::held();
    let mut complete = None;
    for n in 0..TOTAL / CHUNK {
        let chunk = SnapshotChunk {
            vote: raft_node::network::Vote::new(1, 1),
            meta: Default::default(),
            transfer,
            total: TOTAL,
            offset: n * CHUNK,
            data: chunk_data(n),
        };
        match inbox.receive(chunk).expect("chunk accepted") {
            Received::Next(next) => assert_eq!(next, (n + 1) * CHUNK),
            Received::Complete { file, .. } => complete = Some(file),
        }
    }
    let grew = counting::peak() - before;
    println!(
        "receiving a {} MiB snapshot in {} KiB chunks: peak heap +{:.1} MiB",
        TOTAL >> 20,
        CHUNK >> 10,
        grew as f64 / f64::from(1 << 20)
    );
    let file = complete.expect("the last chunk completes the transfer");
    assert_eq!(std::fs::metadata(file.path()).unwrap().len(), TOTAL);
    assert!(
        grew < 8 * CHUNK as isize,
        "receiving a {TOTAL}-byte snapshot held {grew} more heap bytes at its peak"
    );
}
