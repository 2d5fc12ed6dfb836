//! Installing a large snapshot (issue #26, item 1): from a file, in batches, against
//! the same snapshot held in memory and installed in one batch (how every install
//! worked before). Prints figures; asserts nothing about speed.
//!
//! `cargo bench -p state-machine --bench install` (`-- --quick` for 100 MB, `--mb N`
//! for another size; 1 GB by default).
//!
//! The snapshot is a small ledger with request records (`testkit::
//! write_request_snapshot`): the records are what makes a shard's snapshot large
//! (bookings, events and the rest are in memory anyway). Printed per path: the time to
//! read and check it (frame, checksum, invariants), to write it into a fresh store,
//! the rate over the snapshot's bytes, and the peak heap above the start (RocksDB's
//! own buffers are C++ allocations, not counted: about the batch's size for the one
//! batch path, one `INSTALL_RECORDS_PER_BATCH` batch for the file path).

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

#[path = "common/args.rs"]
mod args;
use args::arg;

use state_machine::testkit::write_request_snapshot;
use state_machine::*;
use std::time::Instant;

struct Figures {
    check_s: f64,
    write_s: f64,
    peak: isize,
}

fn store(dir: &std::path::Path) -> LedgerStore {
    LedgerStore::open(dir, Limits::default(), Durability::Buffered).expect("open a store")
}

fn from_file(file: &std::path::Path, dir: &std::path::Path) -> Figures {
    let mut target = store(dir);
    counting::reset_peak();
    let before = counting::held();
    let started = Instant::now();
    let prepared = PreparedInstall::from_file(file, &Limits::default()).expect("check");
    let check_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    target.commit_install(prepared).expect("install");
    let write_s = started.elapsed().as_secs_f64();
    Figures {
        check_s,
        write_s,
        peak: counting::peak() - before,
    }
}

fn in_memory(file: &std::path::Path, dir: &std::path::Path) -> Figures {
    let mut target = store(dir);
    counting::reset_peak();
    let before = counting::held();
    let started = Instant::now();
    let bytes = std::fs::read(file).expect("read the snapshot");
    let prepared = PreparedInstall::new(&bytes, &Limits::default()).expect("check");
    let check_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    target.commit_install(prepared).expect("install");
    let write_s = started.elapsed().as_secs_f64();
    drop(bytes);
    Figures {
        check_s,
        write_s,
        peak: counting::peak() - before,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mb = arg("--mb").unwrap_or(if quick { 100 } else { 1_000 });
    // About 39 bytes a record in the snapshot.
    let records = mb * 1_000_000 / 39;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("snapshot.bin");
    let started = Instant::now();
    let out = std::io::BufWriter::new(std::fs::File::create(&file).expect("create"));
    let mut out = write_request_snapshot(out, records).expect("write the snapshot");
    std::io::Write::flush(&mut out).expect("flush");
    drop(out);
    let bytes = std::fs::metadata(&file).expect("size").len();
    let size = bytes as f64 / 1e6;
    println!(
        "a {size:.0} MB snapshot ({records} request records) written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    for (name, install) in [
        (
            "from the file, in batches",
            from_file as fn(&_, &_) -> Figures,
        ),
        ("held in memory, one batch", in_memory),
    ] {
        let target = dir.path().join(name.replace([' ', ','], "-"));
        let figures = install(&file, &target);
        std::fs::remove_dir_all(&target).ok();
        println!(
            "{name}: check {:.1} s ({:.0} MB/s), write {:.1} s ({:.0} MB/s), \
             install {:.0} MB/s, peak heap +{:.1} MB",
            figures.check_s,
            size / figures.check_s,
            figures.write_s,
            size / figures.write_s,
            size / (figures.check_s + figures.write_s),
            figures.peak as f64 / 1e6
        );
        rows.push(figures);
    }
    let (file_path, memory) = (&rows[0], &rows[1]);
    println!(
        "from the file against in memory: time {:.2}x, peak heap {:.3}x",
        (file_path.check_s + file_path.write_s) / (memory.check_s + memory.write_s),
        file_path.peak as f64 / memory.peak.max(1) as f64
    );
}
