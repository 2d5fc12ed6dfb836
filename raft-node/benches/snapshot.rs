//! Snapshot catch-up benchmark (issue #26, item 1). Prints figures; asserts nothing
//! about speed.
//!
//! `cargo bench -p raft-node --bench snapshot` (`-- --quick` for a short run; `--pairs N`
//! for a larger shard).
//!
//! Three in-process nodes on loopback, one shard. A follower is stopped; the others take
//! N lock + release pairs with request ids (every pair leaves a booking, two request
//! records and two events in the shard); the leader snapshots and purges its log. Then
//! the follower restarts: it can catch up only through the snapshot, which the leader
//! sends in chunks (`snapshot_chunk_kib`, paced by `snapshot_send_mib_per_s`) while a
//! writer keeps locking. Printed: the snapshot's size, the time to build it (pin),
//! write it to a file (what the leader does once before sending), read and check the
//! file and write it into a store (what the receiver does), the catch-up time and its
//! rate, and the writer's latency before the restart and while the follower catches
//! up (p50, p99), so the cost of streaming shows as a ratio in the same run.

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "../../state-machine/benches/common/args.rs"]
mod args;
use args::arg;

use common::{lock, TestCluster};
use hdrhistogram::Histogram;
use raft_node::config::RaftTiming;
use state_machine::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn timing(chunk_kib: u64, mib_per_s: u64) -> RaftTiming {
    RaftTiming {
        // Snapshots only when asked (the benchmark asks once).
        snapshot_after_entries: u64::MAX / 2,
        keep_entries_after_snapshot: 10,
        log_wal_prefill_mib: 1,
        snapshot_chunk_kib: chunk_kib,
        snapshot_send_mib_per_s: mib_per_s,
        ..RaftTiming::default()
    }
}

/// Lock + release pairs from `tasks` (at most 190) concurrent writers; pair n uses user
/// 10,000 + n.
async fn load(cluster: &Arc<TestCluster>, show: ShowId, pairs: u64, tasks: u64) {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let cluster = cluster.clone();
        handles.push(tokio::spawn(async move {
            let mut n = task;
            while n < pairs {
                // Each task locks and releases its own seat, so tasks never collide.
                let seat = task as u32;
                let done = cluster
                    .write("mumbai", &format!("l{n}"), lock(show, 10_000 + n, &[seat]))
                    .await;
                let lock_id = match done.outcome {
                    Outcome::Applied(Applied::SeatsLocked { lock, .. }) => lock,
                    other => panic!("lock {n}: {other:?}"),
                };
                let release = CommandKind::ReleaseLock {
                    lock: lock_id,
                    user: UserId(10_000 + n),
                };
                cluster.write("mumbai", &format!("r{n}"), release).await;
                n += tasks;
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a loader task");
    }
}

/// One writer's lock + release latencies (per write) until `stop`.
async fn probe(
    cluster: Arc<TestCluster>,
    show: ShowId,
    stop: Arc<AtomicBool>,
    tag: &str,
) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let user = 900_000 + n;
        let started = Instant::now();
        let done = cluster
            .write("mumbai", &format!("{tag}-l{n}"), lock(show, user, &[199]))
            .await;
        let _ = histogram.record(started.elapsed().as_micros() as u64);
        if let Outcome::Applied(Applied::SeatsLocked { lock, .. }) = done.outcome {
            let started = Instant::now();
            let release = CommandKind::ReleaseLock {
                lock,
                user: UserId(user),
            };
            cluster
                .write("mumbai", &format!("{tag}-r{n}"), release)
                .await;
            let _ = histogram.record(started.elapsed().as_micros() as u64);
        }
        n += 1;
    }
    histogram
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let pairs = arg("--pairs").unwrap_or(if quick { 5_000 } else { 100_000 });
    let chunk_kib = arg("--chunk-kib").unwrap_or(1024);
    let mib_per_s = arg("--mib-per-s").unwrap_or(200);
    println!(
        "snapshot catch-up: 3 nodes, 1 shard, {pairs} lock + release pairs while a follower \
         is down; chunks of {chunk_kib} KiB, paced to {mib_per_s} MiB/s (0: unpaced)"
    );
    let mut cluster = TestCluster::start_with(3, &["mumbai"], timing(chunk_kib, mib_per_s)).await;
    let show = cluster.seed_show("mumbai").await;
    let leader = cluster.wait_leader("mumbai").await;
    let lagging = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    cluster.crash(lagging).await;
    let cluster = Arc::new(cluster);
    let started = Instant::now();
    load(&cluster, show, pairs, 32).await;
    let load_s = started.elapsed().as_secs_f64();
    println!(
        "load: {} writes in {load_s:.1} s ({:.0} writes/s)",
        2 * pairs,
        2.0 * pairs as f64 / load_s
    );

    // Build (pin) the snapshot and let the leader purge its log behind it.
    let leader = cluster.wait_leader("mumbai").await;
    let leader_shard = cluster.nodes[&leader].node.shard("mumbai").expect("shard");
    let started = Instant::now();
    cluster
        .admin_post(leader, "mumbai", "snapshot", serde_json::json!({}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while leader_shard.metrics().purged.is_none() {
        assert!(Instant::now() < deadline, "the leader never purged its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let build_s = started.elapsed().as_secs_f64();
    // What the leader and the follower do with it: write it to a file, then read and
    // check the file and write it into a store, in batches.
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let file = scratch.path().join("snapshot.bin");
    let started = Instant::now();
    let image = LedgerStore::pin_image(leader_shard.store.read().expect("store")).expect("pin");
    let out = std::io::BufWriter::new(std::fs::File::create(&file).expect("create"));
    let mut out = image.write_to(out).expect("write the snapshot");
    std::io::Write::flush(&mut out).expect("flush");
    drop((out, image));
    let encode_s = started.elapsed().as_secs_f64();
    let mb = std::fs::metadata(&file).expect("size").len() as f64 / 1e6;
    let started = Instant::now();
    let prepared = PreparedInstall::from_file(&file, &Limits::default()).expect("decode");
    let decode_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut target = LedgerStore::open(
        &scratch.path().join("store"),
        Limits::default(),
        Durability::Buffered,
    )
    .expect("open a store");
    target.commit_install(prepared).expect("install");
    let install_s = started.elapsed().as_secs_f64();
    drop(target);
    drop(scratch);
    println!(
        "snapshot: {mb:.1} MB; build (pin) + purge {build_s:.2} s; write to a file {encode_s:.2} s \
         ({:.0} MB/s); read + check the file {decode_s:.2} s ({:.0} MB/s); write into a \
         store {install_s:.2} s ({:.0} MB/s)",
        mb / encode_s,
        mb / decode_s,
        mb / install_s
    );

    // The writer's latency without a snapshot in flight, then during the catch-up.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(probe(cluster.clone(), show, stop.clone(), "before"));
    tokio::time::sleep(Duration::from_secs(if quick { 2 } else { 5 })).await;
    stop.store(true, Ordering::Relaxed);
    let before = writer.await.expect("writer");

    let mut cluster = Arc::try_unwrap(cluster).unwrap_or_else(|_| panic!("cluster still shared"));
    let started = Instant::now();
    cluster.restart(lagging).await;
    let cluster = Arc::new(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(probe(cluster.clone(), show, stop.clone(), "during"));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let target = cluster.applied(leader, "mumbai");
        let snapshot_in = cluster.nodes[&lagging]
            .node
            .shard("mumbai")
            .map(|s| s.metrics().snapshot.is_some())
            .unwrap_or(false);
        if snapshot_in && cluster.applied(lagging, "mumbai") + 10 >= target {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not catch up in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let catch_up_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.expect("writer");
    println!(
        "catch-up through the snapshot: {catch_up_s:.2} s from restart ({:.0} MB/s of snapshot)",
        mb / catch_up_s
    );
    println!(
        "writes (lock or release, one writer): before p50 {:.2} ms p99 {:.2} ms ({} writes); \
         during catch-up p50 {:.2} ms p99 {:.2} ms ({} writes); p99 ratio {:.2}",
        ms(&before, 0.5),
        ms(&before, 0.99),
        before.len(),
        ms(&during, 0.5),
        ms(&during, 0.99),
        during.len(),
        ms(&during, 0.99) / ms(&before, 0.99).max(0.001)
    );
    cluster.wait_converged("mumbai").await;
    println!("converged: equal digests on all three replicas");
    if let Ok(cluster) = Arc::try_unwrap(cluster) {
        cluster.stop_all().await;
    }
}
