//! Snapshots installed from files: a shard's snapshot of any size is installed with only
//! its body and one section of request records in memory, and an install a stopped
//! process left half done is finished when the store opens again.

#[path = "../benches/common/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

use state_machine::snapshot;
use state_machine::testkit::{request_record as record, write_request_snapshot};
use state_machine::*;
use std::path::Path;

/// Request records in the big snapshot: about 80 MB of sections.
const RECORDS: u64 = 2_000_000;

/// A snapshot of `records` request records in the file at `path`; answers its length.
fn write_snapshot(path: &Path, records: u64) -> u64 {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut out = write_request_snapshot(file, records).unwrap();
    std::io::Write::flush(&mut out).unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn open(dir: &Path) -> LedgerStore {
    LedgerStore::open(dir, Limits::default(), Durability::Buffered).unwrap()
}

fn outcome_of(store: &LedgerStore, n: u64) -> Option<Outcome> {
    match store
        .query(&Query::Request {
            request_id: record(n).0,
        })
        .unwrap()
        .unwrap()
    {
        QueryResponse::Request(outcome) => outcome,
        other => panic!("{other:?}"),
    }
}

/// Installing an 80 MB snapshot file takes a small fraction of its size in heap; the
/// installed store answers for its records and has the snapshot's digest.
#[test]
fn a_snapshot_file_installs_with_a_bounded_heap() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.bin");
    let bytes = write_snapshot(&file, RECORDS);
    let expected = snapshot::decode_lean_from(
        std::fs::File::open(&file).unwrap(),
        &Limits::default(),
        |_| {},
    )
    .unwrap()
    .ledger
    .digest();
    let mut store = open(&dir.path().join("store"));
    counting::reset_peak();
    let before = counting::held();
    store.install_snapshot_file(&file).unwrap();
    let grew = counting::peak() - before;
    println!(
        "installing a {:.1} MB snapshot file ({RECORDS} request records): peak heap +{:.1} MB",
        bytes as f64 / 1e6,
        grew as f64 / 1e6
    );
    assert!(
        (grew as u64) < bytes / 3,
        "installing a {bytes}-byte snapshot file held {grew} more heap bytes at its peak"
    );
    assert_eq!(store.ledger().digest(), expected);
    assert_eq!(store.marker(), b"snapshot-marker");
    for n in [0, RECORDS / 2, RECORDS - 1] {
        assert_eq!(
            outcome_of(&store, n),
            Some(Outcome::Rejected(Rejection::NotOwner))
        );
    }
    drop(store);
    let store = open(&dir.path().join("store"));
    assert_eq!(store.ledger().digest(), expected, "after a restart");
    assert_eq!(store.redone_install(), None);
}

/// A damaged or missing file is refused before the store changes.
#[test]
fn a_bad_snapshot_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.bin");
    let bytes = write_snapshot(&file, 120_000);
    let mut store = open(&dir.path().join("store"));
    store.apply_batch(&[], b"mine").unwrap();
    let before = store.ledger().digest();
    let good = std::fs::read(&file).unwrap();
    let damaged = |at: usize| {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        bad
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a bit flipped in the body", damaged(40)),
        ("a bit flipped in a section", damaged(good.len() / 2)),
        ("a bit flipped in the checksum", damaged(good.len() - 3)),
        ("cut short", good[..good.len() - 100].to_vec()),
        ("with bytes after its end", [&good[..], b"x"].concat()),
    ];
    let bad_file = dir.path().join("bad.bin");
    for (name, bad) in cases {
        std::fs::write(&bad_file, bad).unwrap();
        let error = store.install_snapshot_file(&bad_file);
        assert!(error.is_err(), "{name}: accepted");
        assert_eq!(
            store.ledger().digest(),
            before,
            "{name}: changed the ledger"
        );
        assert_eq!(store.marker(), b"mine", "{name}");
        assert!(!store.is_poisoned(), "{name}");
    }
    let missing = store.install_snapshot_file(&dir.path().join("missing.bin"));
    assert!(missing.is_err());
    store.install_snapshot_file(&file).unwrap();
    assert!(bytes > 0);
}
