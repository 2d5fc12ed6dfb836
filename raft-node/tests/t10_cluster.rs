//! Replication end to end: three in-process nodes on real sockets hosting two city
//! shards and `global`. Each test says what it checks in its name and first comment.

mod common;

use common::{lock, TestCluster};
use raft_node::protocol::{Consistency, ReadReply, WriteReply};
use state_machine::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const SHARDS: &[&str] = &["mumbai", "delhi", "global"];

fn locked(done: &raft_node::client::WriteDone) -> LockId {
    match &done.outcome {
        Outcome::Applied(Applied::SeatsLocked { lock, .. }) => *lock,
        other => panic!("expected a lock, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_writes_replicate_and_replicas_converge() {
    // Writes to two shards apply on every replica; digests agree after quiescence.
    let cluster = TestCluster::start(3, SHARDS).await;
    for shard in ["mumbai", "delhi"] {
        let show = cluster.seed_show(shard).await;
        for user in 0..10u64 {
            let done = cluster
                .write(
                    shard,
                    &format!("{shard}-l{user}"),
                    lock(show, user, &[user as u32 * 2, user as u32 * 2 + 1]),
                )
                .await;
            let lock_id = locked(&done);
            let confirm = CommandKind::ConfirmBooking {
                lock: lock_id,
                user: UserId(user),
                payment_ref: format!("pay-{user}"),
            };
            let done = cluster
                .write(shard, &format!("{shard}-c{user}"), confirm)
                .await;
            assert!(done.outcome.is_applied(), "{done:?}");
        }
        cluster.wait_converged(shard).await;
    }
    assert_ne!(cluster.digest(1, "mumbai"), cluster.digest(1, "delhi"));
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_follower_linearizable_read_sees_the_latest_write() {
    // A linearizable read on a follower reflects a write acknowledged just before it,
    // including when the leader counts the follower's vote as its acknowledgement.
    let acked_before = acked_read_indexes();
    let cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let leader = cluster.wait_leader("mumbai").await;
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    for seat in 0..5u32 {
        cluster
            .write(
                "mumbai",
                &format!("r{seat}"),
                lock(show, 100 + u64::from(seat), &[seat]),
            )
            .await;
        let reply = cluster
            .read_on(
                follower,
                "mumbai",
                Query::Show { show },
                Consistency::Linearizable,
            )
            .await;
        let ReadReply::Done {
            result: Ok(QueryResponse::Show(view)),
            node,
            ..
        } = reply
        else {
            panic!("{reply:?}")
        };
        assert_eq!(node, follower);
        assert_eq!(
            view.counts.locked,
            seat + 1,
            "the follower read missed an acknowledged lock"
        );
    }
    assert!(
        acked_read_indexes() > acked_before,
        "no follower read took the acknowledged read index"
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t25_a_deposed_leader_does_not_count_a_followers_old_vote() {
    // A follower's vote from before a leader change, sent to the old leader once that
    // one knows of the new term, gets no read index (it no longer leads, and no quorum
    // round can confirm it); the new leader answers the follower's current vote with an
    // index covering the latest write, and the stale vote only through its own round.
    let cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let old = cluster.wait_leader("mumbai").await;
    let mut followers = cluster.nodes.keys().copied().filter(|id| *id != old);
    let (asker, new) = (followers.next().unwrap(), followers.next().unwrap());
    let vote_of = |id: u64| {
        let raft = cluster.nodes[&id]
            .node
            .shard("mumbai")
            .unwrap()
            .raft
            .clone();
        async move {
            raft.with_raft_state(|state| *state.vote_ref())
                .await
                .unwrap()
        }
    };
    let read_index = |on: u64, vote: raft_node::network::Vote| {
        let handler = cluster.nodes[&on].node.peer_handler();
        async move {
            let bytes = handler
                .handle(
                    asker,
                    "mumbai".into(),
                    raft_node::network::method::READ_INDEX_ACKED,
                    codec::encode(&vote),
                )
                .await
                .unwrap();
            codec::decode::<Result<u64, String>>(&bytes).unwrap()
        }
    };
    let stale = vote_of(asker).await;
    cluster.transfer_leader("mumbai", old, new).await;
    let written = cluster.write("mumbai", "after", lock(show, 7, &[0])).await;
    // Until the old leader hears of the new term it may still answer, and that is safe:
    // the vote was current when sent. What is checked is the node once it knows.
    let deadline = Instant::now() + Duration::from_secs(5);
    while vote_of(old).await.leader_id().node_id == old {
        assert!(
            Instant::now() < deadline,
            "node {old} never heard of the new term"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answer = read_index(old, stale).await;
    assert!(answer.is_err(), "the deposed leader answered {answer:?}");
    let current = vote_of(asker).await;
    assert_ne!(current, stale, "the follower still holds its old vote");
    let index = read_index(new, current).await.unwrap();
    assert!(index >= written.index, "{index} < {}", written.index);
    let index = read_index(new, stale).await.unwrap();
    assert!(index >= written.index, "{index} < {}", written.index);
    cluster.stop_all().await;
}

/// Read indexes a leader answered by counting the requesting follower's vote, in this
/// process so far (the metrics registry is shared by the tests of this file).
fn acked_read_indexes() -> u64 {
    raft_node::http::prometheus()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix("seat_ledger_read_index_total{round=\"acked\"} "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_leader_crash_loses_no_acknowledged_write() {
    // kill -9 analogue of the leader under load: a new leader serves writes and every
    // lock acknowledged before or after the crash is present.
    let mut cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let mut acknowledged = Vec::new();
    for seat in 0..20u32 {
        let done = cluster
            .write(
                "mumbai",
                &format!("k{seat}"),
                lock(show, 1_000 + u64::from(seat), &[seat]),
            )
            .await;
        acknowledged.push(locked(&done));
    }
    let leader = cluster.wait_leader("mumbai").await;
    let crashed_at = Instant::now();
    cluster.crash(leader).await;
    let done = cluster
        .write("mumbai", "after-crash", lock(show, 5_000, &[150]))
        .await;
    let failover = crashed_at.elapsed();
    acknowledged.push(locked(&done));
    eprintln!("failover: first acknowledged write {failover:?} after the crash");
    let new_leader = cluster.wait_leader("mumbai").await;
    assert_ne!(new_leader, leader);
    for id in cluster.nodes.keys() {
        let reply = cluster
            .read_on(
                *id,
                "mumbai",
                Query::Show { show },
                Consistency::Linearizable,
            )
            .await;
        let ReadReply::Done {
            result: Ok(QueryResponse::Show(view)),
            ..
        } = reply
        else {
            panic!("{reply:?}")
        };
        assert_eq!(
            view.counts.locked as usize,
            acknowledged.len(),
            "node {id} lost locks"
        );
    }
    cluster.restart(leader).await;
    cluster.wait_converged("mumbai").await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t40_a_restarted_node_catches_up_through_a_snapshot() {
    // A stopped node misses enough writes that the log is purged behind a snapshot; on
    // restart it installs the snapshot and converges.
    let mut cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let leader = cluster.wait_leader("mumbai").await;
    let lagging = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    cluster.crash(lagging).await;
    let mut first_lock = None;
    for n in 0..250u64 {
        // Lock then release keeps seats free, so the loop can run long.
        let done = cluster
            .write(
                "mumbai",
                &format!("s{n}"),
                lock(show, 10_000 + n, &[(n % 200) as u32]),
            )
            .await;
        first_lock.get_or_insert_with(|| done.outcome.clone());
        let release = CommandKind::ReleaseLock {
            lock: locked(&done),
            user: UserId(10_000 + n),
        };
        cluster
            .write("mumbai", &format!("s{n}-release"), release)
            .await;
    }
    let leader_shard = cluster.nodes[&cluster.wait_leader("mumbai").await]
        .node
        .shard("mumbai")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader_shard.metrics().purged.is_none() {
        assert!(Instant::now() < deadline, "the leader never purged its log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The snapshot is many times the test's chunk size (4 KiB): it crosses in chunks.
    let snapshot_bytes = leader_shard
        .store
        .read()
        .unwrap()
        .export_snapshot()
        .unwrap()
        .len();
    assert!(
        snapshot_bytes > 8 * 4096,
        "snapshot of {snapshot_bytes} bytes"
    );
    cluster.restart(lagging).await;
    cluster.wait_converged("mumbai").await;
    let snapshot = cluster.nodes[&lagging]
        .node
        .shard("mumbai")
        .unwrap()
        .metrics()
        .snapshot;
    assert!(
        snapshot.is_some(),
        "the restarted node caught up without a snapshot"
    );
    // It arrived as a file, deleted once installed.
    let inbox = cluster.nodes[&lagging]
        .node
        .data_dir()
        .join("snapshots/mumbai/in");
    let left: Vec<_> = std::fs::read_dir(&inbox)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "received snapshot files left: {left:?}");
    // The snapshot carried the request ids (read from the leader's disk): led by the
    // node that installed it, a retry of the first lock gets its first answer, not a
    // second booking of the seat (free again since the release).
    let current = cluster.wait_leader("mumbai").await;
    cluster.transfer_leader("mumbai", current, lagging).await;
    assert_eq!(cluster.wait_leader("mumbai").await, lagging);
    let retry = cluster
        .write("mumbai", "s0", lock(show, 10_000, &[0]))
        .await;
    assert_eq!(
        Some(retry.outcome),
        first_lock,
        "the retry was locked again"
    );
    assert_eq!(retry.node, lagging);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_a_node_cut_off_from_the_majority_refuses_reads_and_writes() {
    // With two of three nodes down, the survivor serves neither linearizable reads nor
    // writes; stale reads still answer and say so.
    let mut cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let survivor = *cluster.nodes.keys().next().unwrap();
    let others: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != survivor)
        .collect();
    for id in others {
        cluster.crash(id).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let node = &cluster.nodes[&survivor].node;
    let reply = cluster
        .read_on(
            survivor,
            "mumbai",
            Query::Show { show },
            Consistency::Linearizable,
        )
        .await;
    assert!(matches!(reply, ReadReply::Unavailable { .. }), "{reply:?}");
    let write = node
        .write("mumbai", Some("minority".into()), lock(show, 1, &[0]))
        .await
        .unwrap();
    assert!(!matches!(write, WriteReply::Done { .. }), "{write:?}");
    let stale = cluster
        .read_on(survivor, "mumbai", Query::Show { show }, Consistency::Stale)
        .await;
    assert!(
        matches!(
            stale,
            ReadReply::Done {
                consistency: Consistency::Stale,
                ..
            }
        ),
        "{stale:?}"
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t60_duplicate_request_id_across_a_leader_change_applies_once() {
    // A lock retried with the same request id at a new leader returns the first outcome
    // and does not lock twice.
    let mut cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let first = cluster
        .write("mumbai", "once", lock(show, 7, &[3, 4]))
        .await;
    let leader = cluster.wait_leader("mumbai").await;
    cluster.crash(leader).await;
    let again = cluster
        .write("mumbai", "once", lock(show, 7, &[3, 4]))
        .await;
    assert_eq!(first.outcome, again.outcome);
    let survivor = *cluster.nodes.keys().next().unwrap();
    let reply = cluster
        .read_on(
            survivor,
            "mumbai",
            Query::UserBookings {
                user: UserId(7),
                before: None,
                limit: 10,
            },
            Consistency::Linearizable,
        )
        .await;
    let ReadReply::Done {
        result: Ok(QueryResponse::Bookings { items, .. }),
        ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!(items.len(), 1, "the retried lock applied twice");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t70_transfer_leader_and_membership_change_while_writing() {
    // Leadership moves on request; a fourth node joins as learner, is promoted, and an
    // old node is removed, while a writer keeps writing; no acknowledged write is lost.
    let cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let writer = {
        let client = cluster.client.clone();
        tokio::spawn(async move {
            let mut acked = BTreeSet::new();
            for n in 0..60u64 {
                if let Ok(done) = client
                    .write(
                        "mumbai",
                        &format!("w{n}"),
                        lock(show, 20_000 + n, &[n as u32]),
                        common::WRITE_TIMEOUT,
                    )
                    .await
                {
                    acked.insert(locked(&done));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    let leader = cluster.wait_leader("mumbai").await;
    let target = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    cluster.transfer_leader("mumbai", leader, target).await;
    // Start a fourth node that hosts no shard yet, then add it as a learner.
    let mut file = cluster.file.clone();
    let extra = common::TestCluster::start_extra_node(&cluster, &mut file, 4).await;
    let info = serde_json::json!({ "node_id": 4, "info": { "peer_addr": extra.peer_addr.to_string(), "client_addr": extra.client_addr.to_string(), "region": "region-0" } });
    cluster.admin_post(target, "mumbai", "learners", info).await;
    let voters: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .chain([4])
        .collect();
    let membership = serde_json::json!({ "voters": voters });
    cluster
        .admin_post(target, "mumbai", "membership", membership)
        .await;
    let acked = writer.await.unwrap();
    assert!(
        acked.len() >= 50,
        "too few writes succeeded during the changes: {}",
        acked.len()
    );
    let reply = extra
        .node
        .read(
            "mumbai",
            raft_node::protocol::ReadRequest {
                query: Query::Show { show },
                consistency: Consistency::Linearizable,
                min_index: None,
            },
        )
        .await
        .unwrap();
    let ReadReply::Done {
        result: Ok(QueryResponse::Show(view)),
        ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!(
        view.counts.locked as usize,
        acked.len(),
        "acknowledged locks missing on the new member"
    );
    extra.stop().await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t80_strangers_and_garbage_on_the_peer_port_are_refused() {
    // Random bytes and a client with the wrong secret are refused; the node stays ready.
    use tokio::io::AsyncWriteExt;
    let cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let target = cluster.entry(1);
    for garbage in [
        vec![0xffu8; 64],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0, 0, 0, 4, 1, 2, 3, 4],
    ] {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(&target.peer_addr).await {
            let _ = stream.write_all(&garbage).await;
        }
    }
    let stranger = raft_node::transport::PeerClient::new(
        raft_node::transport::TransportConfig::new("test", b"not-the-secret-at-all-0000".to_vec()),
        99,
    );
    let refused = stranger
        .call(
            1,
            &target.peer_addr,
            "mumbai",
            raft_node::network::method::VOTE,
            vec![1, 2, 3],
            Duration::from_secs(2),
        )
        .await;
    assert!(refused.is_err(), "a stranger got an answer");
    // Still healthy: ready within a few seconds (a moment of apply lag under load is fine).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = reqwest::get(format!("http://{}/health/ready", target.client_addr))
            .await
            .unwrap();
        if ready.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {:?}",
            ready.text().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = cluster
        .write("mumbai", "still-fine", lock(show, 1, &[0]))
        .await;
    assert!(done.outcome.is_applied());
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t82_the_client_protocol_takes_json_and_binary_and_refuses_bad_bodies() {
    // The same write and read in JSON and in the binary form; a malformed binary body, an
    // unknown media type and a JSON write without request id are refused (4xx, an error
    // that says what was wrong) and lock nothing.
    use raft_node::protocol::{Binary, ReadRequest, WriteRequest, BINARY_MEDIA_TYPE};
    let cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let leader = cluster.wait_leader("mumbai").await;
    let base = format!(
        "http://{}/v1/shards/mumbai",
        cluster.entry(leader).client_addr
    );
    let http = reqwest::Client::new();
    let post = |path: &str, content_type: &str, body: Vec<u8>, binary_reply: bool| {
        let mut request = http
            .post(format!("{base}/{path}"))
            .header("content-type", content_type)
            .body(body);
        if binary_reply {
            request = request.header("accept", BINARY_MEDIA_TYPE);
        }
        request.send()
    };
    let json_write = serde_json::to_vec(&WriteRequest {
        request_id: Some("json-1".into()),
        command: lock(show, 1, &[0]),
    })
    .unwrap();
    let answer = post("write", "application/json", json_write, false)
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let reply: WriteReply = answer.json().await.unwrap();
    assert!(matches!(reply, WriteReply::Done { outcome, .. } if outcome.is_applied()));
    let binary_write = WriteRequest {
        request_id: Some("binary-1".into()),
        command: lock(show, 2, &[1]),
    }
    .into_binary();
    let answer = post("write", BINARY_MEDIA_TYPE, binary_write.clone(), true)
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], BINARY_MEDIA_TYPE);
    let reply = WriteReply::from_binary(&answer.bytes().await.unwrap()).unwrap();
    assert!(matches!(reply, WriteReply::Done { outcome, .. } if outcome.is_applied()));

    let truncated = binary_write[..binary_write.len() / 2].to_vec();
    let refused = [
        (
            "write",
            BINARY_MEDIA_TYPE,
            truncated,
            400,
            "malformed binary write request",
        ),
        ("write", BINARY_MEDIA_TYPE, vec![0xff; 32], 400, "malformed"),
        (
            "write",
            "text/plain",
            b"lock seat 5".to_vec(),
            415,
            "application/json",
        ),
        (
            "write",
            "application/json",
            serde_json::to_vec(&serde_json::json!({ "command": lock(show, 3, &[5]) })).unwrap(),
            422,
            "request_id is required",
        ),
        (
            "read",
            BINARY_MEDIA_TYPE,
            b"{}".to_vec(),
            400,
            "malformed binary read request",
        ),
    ];
    for (path, content_type, body, status, named) in refused {
        let answer = post(path, content_type, body, true).await.unwrap();
        assert_eq!(answer.status(), status, "{path} {content_type}");
        let text = answer.text().await.unwrap();
        assert!(text.contains(named), "{path} {content_type}: {text}");
    }

    // Both forms of the seat map agree: seats 0 and 1 locked, nothing else.
    let read = ReadRequest {
        query: Query::SeatMap { show },
        consistency: Consistency::Linearizable,
        min_index: None,
    };
    let answer = post("read", BINARY_MEDIA_TYPE, read.clone().into_binary(), true)
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let binary = ReadReply::from_binary(&answer.bytes().await.unwrap()).unwrap();
    let answer = post(
        "read",
        "application/json",
        serde_json::to_vec(&read).unwrap(),
        false,
    )
    .await
    .unwrap();
    let json: ReadReply = answer.json().await.unwrap();
    let seats = |reply: ReadReply| match reply {
        ReadReply::Done {
            result: Ok(QueryResponse::SeatMap(map)),
            ..
        } => map
            .seats
            .iter()
            .filter(|seat| seat.status != SeatStatus::Available)
            .map(|seat| seat.seat.0)
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(seats(binary), vec![0, 1]);
    assert_eq!(seats(json), vec![0, 1]);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t85_a_leader_with_a_skewed_clock_stops_stamping_and_hands_over() {
    // A leader whose clock jumps 5 s ahead of its quorum's refuses to stamp commands and
    // hands leadership to a voter that agrees; writes go on, and the shard clock never
    // runs ahead of real time by more than the bound.
    let cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let leader = cluster.wait_leader("mumbai").await;
    cluster.nodes[&leader].node.set_clock_offset_ms(5_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = cluster.leader("mumbai").await;
        if now.is_some() && now != Some(leader) {
            break;
        }
        assert!(Instant::now() < deadline, "the skewed leader kept leading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = cluster
        .write("mumbai", "after-skew", lock(show, 1, &[0]))
        .await;
    assert!(done.outcome.is_applied(), "{done:?}");
    let skewed = &cluster.nodes[&leader].node;
    let refused = skewed
        .write("mumbai", Some("from-skewed".into()), lock(show, 2, &[1]))
        .await
        .unwrap();
    assert!(!matches!(refused, WriteReply::Done { .. }), "{refused:?}");
    let new_leader = cluster.wait_leader("mumbai").await;
    let clock = cluster.nodes[&new_leader]
        .node
        .shard("mumbai")
        .unwrap()
        .store
        .read()
        .unwrap()
        .ledger()
        .clock();
    let bound = raft_node::clock::CLOCK_SKEW_MS_MAX as u64;
    assert!(
        clock <= raft_node::node::now_ms() + bound,
        "the shard clock ran ahead: {clock}"
    );
    cluster.stop_all().await;
}

/// Issue #26, item 6: ledger limits came from each node's own cluster file, so one
/// replica started with other limits applied the same log under other rules and
/// diverged (here: it refused a lock the others applied). The leader now replicates
/// the rules through the log, and every replica applies those.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t70_a_replica_with_other_limits_in_its_file_ends_with_the_same_digest() {
    let mut cluster = TestCluster::start(3, &["mumbai"]).await;
    let show = cluster.seed_show("mumbai").await;
    let leader = cluster.wait_leader("mumbai").await;
    let odd = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    cluster.wait_converged("mumbai").await;
    cluster.crash(odd).await;
    cluster.node_limits.insert(
        odd,
        Limits {
            seats_per_user_per_show_max: 2,
            seats_per_lock_max: 2,
            ..Limits::default()
        },
    );
    cluster.restart(odd).await;
    // Four seats for one user: the shard's rules allow ten, the odd file two.
    let done = cluster
        .write("mumbai", "four-seats", lock(show, 77, &[1, 2, 3, 4]))
        .await;
    assert!(done.outcome.is_applied(), "{:?}", done.outcome);
    cluster.wait_converged("mumbai").await;
    // And with the odd node leading, it stamps under the shard's rules too.
    let leader = cluster.wait_leader("mumbai").await;
    if leader != odd {
        cluster.transfer_leader("mumbai", leader, odd).await;
    }
    let done = cluster
        .write("mumbai", "four-more", lock(show, 78, &[5, 6, 7, 8]))
        .await;
    assert!(done.outcome.is_applied(), "{:?}", done.outcome);
    cluster.wait_converged("mumbai").await;
    cluster.stop_all().await;
}
