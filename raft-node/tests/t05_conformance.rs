//! openraft's storage conformance suite against the pair a node really runs: the RocksDB
//! Raft log (`LogStore<TypeConfig>`) and the ledger state machine (`LedgerStateMachine`
//! over a `state_machine::LedgerStore`, opened as `Node::add_shard` opens it).
//!
//! `suite_test_all` runs the whole suite as openraft ships it. The suite stops at the
//! first failing case (usually with a panic inside an `assert_eq!`), so the remaining
//! tests run the state-machine-sensitive cases one by one: a failure then names its case.

use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use openraft::RaftTypeConfig;
use openraft::StorageError;
use raft_node::ledger_sm::LedgerStateMachine;
use raft_node::log_store::{open_db, LogDb, LogStore};
use raft_node::types::{Membership, ShardCommand, TypeConfig};
use state_machine::testkit;
use state_machine::{
    CommandKind, Durability, LedgerStore, Limits, Query, QueryResponse, SeatId, UserId,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tempfile::TempDir;

type C = TypeConfig;
type Log = LogStore<C>;
type Entry<C> = <C as RaftTypeConfig>::Entry;

/// As on a node, one Raft log database holds the logs of many shards: every case gets a
/// new shard of a shared database (whose other shards hold the earlier cases' data, so a
/// leak between shards would fail the suite) and a fresh ledger store in its own
/// directory, which is the case's guard and is removed when the case ends.
struct RealPairBuilder {
    _log_dir: TempDir,
    log_db: LogDb,
    next_shard: AtomicU64,
}

fn storage_error(error: impl std::fmt::Display) -> StorageError<C> {
    let error = std::io::Error::other(error.to_string());
    StorageError::write(C::err_from_error(&error))
}

impl RealPairBuilder {
    fn new() -> RealPairBuilder {
        let log_dir = TempDir::new().expect("temp dir");
        // Prefilled, so the suite runs on a recycled write-ahead log as a node's does.
        let log_db =
            open_db(log_dir.path().join("raft-log"), 1 << 20).expect("open the raft log db");
        RealPairBuilder {
            _log_dir: log_dir,
            log_db,
            next_shard: AtomicU64::new(0),
        }
    }

    async fn pair(&self) -> Result<(TempDir, Log, LedgerStateMachine), StorageError<C>> {
        let n = self.next_shard.fetch_add(1, Ordering::Relaxed);
        let log =
            LogStore::new(self.log_db.clone(), &format!("city-{n}")).map_err(storage_error)?;
        let dir = TempDir::new().map_err(storage_error)?;
        let store = LedgerStore::open(
            &dir.path().join("ledger"),
            Limits::default(),
            Durability::Buffered,
        )
        .map_err(storage_error)?;
        let state_machine =
            LedgerStateMachine::new(Arc::new(RwLock::new(store)), dir.path().join("snapshots"))
                .map_err(storage_error)?;
        Ok((dir, log, state_machine))
    }
}

impl StoreBuilder<C, Log, LedgerStateMachine, TempDir> for RealPairBuilder {
    async fn build(&self) -> Result<(TempDir, Log, LedgerStateMachine), StorageError<C>> {
        self.pair().await
    }
}

type RealSuite = Suite<C, Log, LedgerStateMachine, RealPairBuilder, TempDir>;

#[tokio::test]
async fn suite_test_all() {
    let started = std::time::Instant::now();
    RealSuite::test_all(RealPairBuilder::new())
        .await
        .expect("openraft storage suite on LogStore + LedgerStateMachine");
    eprintln!("openraft storage suite passed in {:?}", started.elapsed());
}

/// One test per suite case that touches the state machine, so a failure names the case.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            let builder = RealPairBuilder::new();
            let (_dir, log, state_machine) = builder.pair().await.expect("build the pair");
            RealSuite::$case(log, state_machine)
                .await
                .expect(concat!("suite case ", stringify!($case)));
        }
    )*};
}

cases!(
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_membership_from_empty_log_and_sm,
    get_initial_state_membership_from_sm_inlog_is_smaller,
    get_initial_state_membership_from_log_insm_is_smaller,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_re_apply_committed,
    last_applied_state,
    snapshot_meta,
    snapshot_meta_optional,
    apply_single,
    apply_multiple,
);

#[tokio::test]
async fn transfer_snapshot() {
    RealSuite::transfer_snapshot(&RealPairBuilder::new())
        .await
        .expect("suite case transfer_snapshot");
}

// The suite cannot build `C::D`, so it never applies a normal entry. These cases do, with
// real ledger commands: they change the ledger, survive a reopen of the store, and
// travel in a snapshot.

fn log_id(index: u64) -> raft_node::types::LogId {
    openraft::LogId {
        leader_id: <C as RaftTypeConfig>::LeaderId::new_committed(2, 1),
        index,
    }
}

fn normal(index: u64, request_id: &str, kind: CommandKind) -> Entry<C> {
    let command = testkit::command(request_id, 1_000_000 + index, kind);
    Entry::<C>::new_normal(log_id(index), ShardCommand(command))
}

async fn apply(state_machine: &mut LedgerStateMachine, entries: Vec<Entry<C>>) {
    let stream = futures_util::stream::iter(
        entries
            .into_iter()
            .map(|entry| Ok::<EntryResponder<C>, std::io::Error>((entry, None))),
    );
    state_machine.apply(stream).await.expect("apply");
}

fn query(state_machine: &LedgerStateMachine, query: Query) -> QueryResponse {
    let store = state_machine.store().read().expect("store lock");
    store.ledger().query(&query).expect("query")
}

fn digest(state_machine: &LedgerStateMachine) -> [u8; 32] {
    state_machine
        .store()
        .read()
        .expect("store lock")
        .ledger()
        .digest()
}

#[tokio::test]
async fn normal_entries_apply_survive_a_reopen_and_travel_in_a_snapshot() {
    let builder = RealPairBuilder::new();
    let (dir, _log, mut state_machine) = builder.pair().await.expect("pair");
    let membership = Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], []);
    apply(
        &mut state_machine,
        vec![
            Entry::<C>::new_membership(log_id(1), membership.clone()),
            normal(
                2,
                "theater",
                testkit::create_theater("mumbai", UserId(1), vec![testkit::screen("A", 5, 10)]),
            ),
        ],
    )
    .await;
    let QueryResponse::Theaters { items, .. } = query(
        &state_machine,
        Query::Theaters {
            city: "mumbai".into(),
            after: None,
            limit: 10,
        },
    ) else {
        panic!("not a theater list")
    };
    let theater = items.first().expect("the theater was created").id;
    let start = 1_000_000 + 48 * 3_600_000;
    apply(
        &mut state_machine,
        vec![
            Entry::<C>::new_blank(log_id(3)),
            normal(
                4,
                "show",
                testkit::publish_show(theater, 0, start, "Pathaan"),
            ),
        ],
    )
    .await;
    let QueryResponse::Shows { items, .. } = query(
        &state_machine,
        Query::TheaterShows {
            theater,
            from_ms: 0,
            to_ms: u64::MAX,
        },
    ) else {
        panic!("not a show list")
    };
    let show = items.first().expect("the show was published").show.id;
    let lock = |seat: u32| CommandKind::LockSeats {
        show,
        user: UserId(100 + u64::from(seat)),
        seats: vec![SeatId(seat)],
        ttl_ms: None,
    };
    apply(
        &mut state_machine,
        (0..5u32)
            .map(|seat| normal(5 + u64::from(seat), &format!("lock-{seat}"), lock(seat)))
            .collect(),
    )
    .await;
    let QueryResponse::Show(view) = query(&state_machine, Query::Show { show }) else {
        panic!("not a show")
    };
    assert_eq!(view.counts.locked, 5);
    let applied = state_machine.applied_state().await.expect("applied state");
    assert_eq!(applied.0, Some(log_id(9)));
    assert_eq!(applied.1.log_id(), &Some(log_id(1)));
    assert_eq!(applied.1.membership(), &membership);
    let before = digest(&state_machine);

    // A snapshot of a non-empty ledger installs on a fresh state machine.
    let snapshot = state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(9)));
    let (_other_dir, _other_log, mut other) = builder.pair().await.expect("pair");
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .expect("install snapshot");
    assert_eq!(other.applied_state().await.expect("applied"), applied);
    assert_eq!(digest(&other), before);

    // Reopening the store (a restart) recovers the ledger and openraft's applied state.
    // A built snapshot is an image pinned in the store's database: it goes first.
    drop(snapshot);
    drop(state_machine);
    let store = LedgerStore::open(
        &dir.path().join("ledger"),
        Limits::default(),
        Durability::Buffered,
    )
    .expect("reopen the ledger store");
    let mut reopened =
        LedgerStateMachine::new(Arc::new(RwLock::new(store)), dir.path().join("snapshots"))
            .expect("reopen");
    assert_eq!(reopened.applied_state().await.expect("applied"), applied);
    assert_eq!(digest(&reopened), before);
}
