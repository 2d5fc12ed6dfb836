//! The cost of a keyed write with the idempotency table on disk (issue #26, item 3).
//! Prints figures; asserts nothing about speed.
//!
//! `cargo bench -p state-machine --bench requests` (`-- --quick` for a short run).
//!
//! A store (RocksDB, buffered writes as under Raft) first takes T keyed writes (T = 0,
//! 1M, 4M; each a new client key), then is measured in batches of 64 (the size of a
//! busy shard's apply batches) on:
//! - writes without a key (the baseline: the same command, no table work);
//! - writes with a new key (a record read, written and counted);
//! - retries of keys from the prefill (answered from the record on disk);
//!
//! and reports the process's resident memory, the store's bytes on disk and the
//! snapshot's size per record. A bare ledger (records in memory, as every ledger kept
//! them before) takes the same prefill for the memory comparison.

use state_machine::*;
use std::time::Instant;

#[path = "common/disk.rs"]
mod disk;

const BATCH: usize = 64;

fn expire(id: Option<String>, at_ms: Millis) -> Command {
    Command {
        request_id: id.map(RequestId),
        at_ms,
        kind: CommandKind::ExpireLocks { max_locks: 1 },
    }
}

/// A client key as the api makes it from an `Idempotency-Key` (a UUID).
fn key(n: u64) -> String {
    format!(
        "{}:{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        1_000 + n % 100_000,
        n,
        n % 0xffff,
        n % 0xfff,
        (n / 7) % 0xfff,
        n.wrapping_mul(0x9e37_79b9)
    )
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

struct Clock {
    index: LogIndex,
    /// 5,000 writes per second of shard time: the table's buckets fill as at an on-sale.
    writes: u64,
}

impl Clock {
    fn next(&mut self) -> (LogIndex, Millis) {
        self.index += 1;
        self.writes += 1;
        (self.index, 1_000_000 + self.writes / 5)
    }
}

/// Nanoseconds per write of `count` writes made by `make`, applied in batches.
fn measure(
    store: &mut LedgerStore,
    clock: &mut Clock,
    count: u64,
    mut make: impl FnMut(u64, Millis) -> Command,
) -> f64 {
    let start = Instant::now();
    let mut n = 0;
    while n < count {
        let batch: Vec<_> = (0..(BATCH as u64).min(count - n))
            .map(|k| {
                let (index, at_ms) = clock.next();
                (index, make(n + k, at_ms))
            })
            .collect();
        n += batch.len() as u64;
        for result in store.apply_batch(&batch, b"m").expect("apply") {
            assert!(result.outcome.is_applied(), "{:?}", result.outcome);
        }
    }
    start.elapsed().as_nanos() as f64 / count as f64
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let tables: &[u64] = if quick {
        &[0, 200_000]
    } else {
        &[0, 1_000_000, 4_000_000]
    };
    let measured = if quick { 20_000 } else { 200_000 };
    println!("keyed writes with the idempotency table on disk (batches of {BATCH})\n");
    println!(
        "| table | ns/write, no key | ns/write, new key | ratio | ns/retry | ratio | \
         RSS | on disk | B/record on disk | snapshot B/record |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &table in tables {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store =
            LedgerStore::open(dir.path(), Limits::default(), Durability::Buffered).expect("open");
        let mut clock = Clock {
            index: 0,
            writes: 0,
        };
        measure(&mut store, &mut clock, table, |n, at| {
            expire(Some(key(n)), at)
        });
        let plain = measure(&mut store, &mut clock, measured, |_, at| expire(None, at));
        let offset = table + 10_000_000;
        let keyed = measure(&mut store, &mut clock, measured, |n, at| {
            expire(Some(key(offset + n)), at)
        });
        let prefilled = table.max(1);
        let retry = measure(&mut store, &mut clock, measured, |n, at| {
            expire(Some(key(n * 7_919 % prefilled)), at)
        });
        store.sync_to_disk().expect("flush");
        let records = store.ledger().requests().len();
        let rss = rss_mib();
        let disk = disk::dir_bytes(dir.path());
        let snapshot = store.export_snapshot().expect("snapshot").len();
        println!(
            "| {table} | {plain:.0} | {keyed:.0} | {:.2} | {retry:.0} | {:.2} | {rss:.0} MiB | \
             {:.0} MiB | {:.0} | {:.0} |",
            keyed / plain,
            retry / plain,
            disk as f64 / (1 << 20) as f64,
            disk as f64 / records.max(1) as f64,
            snapshot as f64 / records.max(1) as f64,
        );
    }
    // The same records in memory, as a bare ledger keeps them (and every ledger did
    // before the table moved to disk).
    let table = *tables.last().unwrap_or(&0);
    let before = rss_mib();
    let mut ledger = Ledger::new(Limits::default());
    let mut clock = Clock {
        index: 0,
        writes: 0,
    };
    for n in 0..table {
        let (index, at_ms) = clock.next();
        ledger.apply(index, &expire(Some(key(n)), at_ms));
    }
    println!(
        "\n{table} records held in memory (a bare ledger): RSS grew by {:.0} MiB ({:.0} B per record)",
        rss_mib() - before,
        (rss_mib() - before) * (1 << 20) as f64 / table.max(1) as f64
    );
    println!("(the store's figures above include RocksDB's memtables and block cache)");
}
