//! Group commit for a RocksDB instance whose writes are made without fsync.
//!
//! A [`GroupCommit`] owns one thread per RocksDB instance. Writers write with `sync = false`
//! (the data is then readable but not yet durable) and hand a completion to
//! [`GroupCommit::after_sync`]. The thread takes every completion waiting, syncs the
//! instance's write-ahead log once (`FlushWAL(sync = true)`, which covers every write made
//! before it started), and runs the completions in the order they were handed in. While one
//! sync runs, new completions gather for the next, so under load one fsync serves many writes,
//! from every shard whose log lives in the instance.
//!
//! This module knows nothing of Raft; the log store uses it for appends (whose openraft
//! callback fires here) and for votes, truncations and purges (which wait for it).
//!
//! # Failure
//!
//! A failed sync is sticky: after an fsync error the kernel may have dropped dirty pages, so
//! no later sync can prove the earlier writes durable. Every completion waiting then, and every
//! one handed in later, gets the error, and the node must be restarted (it then recovers what
//! the write-ahead log really holds).

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rocksdb::DB;

/// What runs once the writes made before it was handed in are on disk (or cannot be).
pub type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

/// The sync thread of one RocksDB instance; dropping the last handle finishes the syncs
/// already asked for and stops the thread.
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    waiting: Vec<Completion>,
    /// Why syncing failed for good, once it has.
    failed: Option<String>,
    stop: bool,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // Completions run outside the lock, so a poisoned lock only means a panic between two
    // plain field updates; the state is still consistent.
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupCommit {
    /// Starts the sync thread of `db`.
    pub fn start(db: Arc<DB>) -> io::Result<GroupCommit> {
        GroupCommit::start_with(move || db.flush_wal(true).map_err(|e| e.to_string()))
    }

    /// Starts a sync thread that makes writes durable with `sync` (tests inject failures).
    fn start_with(
        sync: impl FnMut() -> Result<(), String> + Send + 'static,
    ) -> io::Result<GroupCommit> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn({
                let shared = shared.clone();
                move || run(sync, &shared)
            })?;
        Ok(GroupCommit {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `done` once every write made to the instance before this call is durable, after
    /// the completions handed in before it; with the error if syncing failed.
    pub fn after_sync(&self, done: Completion) {
        let mut state = lock(&self.shared);
        if let Some(reason) = &state.failed {
            let error = sync_error(reason);
            drop(state);
            done(Err(error));
            return;
        }
        state.waiting.push(done);
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Waits until every write made to the instance before this call is durable and every
    /// completion handed in before it has run.
    pub async fn synced(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_sync(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        rx.await
            .map_err(|_| io::Error::other("the raft log's sync thread stopped"))?
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.wake.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // Joining keeps the thread's handle on the database from outliving ours, so the
            // instance is closed (and its lock file released) once the last handle is gone.
            let _ = thread.join();
        }
    }
}

fn sync_error(reason: &str) -> io::Error {
    io::Error::other(format!(
        "syncing the raft log failed ({reason}); writes since the last good sync cannot be \
         made durable: restart the node (it recovers what the log really holds)"
    ))
}

fn run(mut sync: impl FnMut() -> Result<(), String>, shared: &Shared) {
    loop {
        let batch = {
            let mut state = lock(shared);
            while state.waiting.is_empty() && !state.stop {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.waiting.is_empty() {
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        metrics::histogram!("seat_ledger_log_sync_batch").record(batch.len() as f64);
        match sync() {
            Ok(()) => {
                for done in batch {
                    done(Ok(()));
                }
            }
            Err(reason) => {
                tracing::error!(error = %reason, "syncing the raft log failed; refusing further writes");
                let waiting = {
                    let mut state = lock(shared);
                    state.failed = Some(reason.clone());
                    std::mem::take(&mut state.waiting)
                };
                for done in batch.into_iter().chain(waiting) {
                    done(Err(sync_error(&reason)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn completions_run_in_order_after_the_sync() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let db = Arc::new(DB::open_default(dir.path()).expect("open"));
        let group = GroupCommit::start(db.clone()).expect("start");
        let order = Arc::new(Mutex::new(Vec::new()));
        for i in 0..100 {
            db.put(format!("k{i}"), b"v").expect("put");
            let order = order.clone();
            group.after_sync(Box::new(move |r| {
                r.expect("sync");
                order.lock().expect("lock").push(i);
            }));
        }
        group.synced().await.expect("synced");
        assert_eq!(*order.lock().expect("lock"), (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failed_sync_fails_what_waits_and_everything_after_it() {
        let syncs = Arc::new(AtomicUsize::new(0));
        let group = GroupCommit::start_with({
            let syncs = syncs.clone();
            move || {
                // The first sync succeeds, every later one fails.
                match syncs.fetch_add(1, Ordering::SeqCst) {
                    0 => Ok(()),
                    _ => Err("injected EIO".into()),
                }
            }
        })
        .expect("start");
        group.synced().await.expect("the first sync succeeds");
        let error = group.synced().await.expect_err("the second sync fails");
        assert!(error.to_string().contains("injected EIO"), "{error}");
        // Sticky: nothing handed in later is reported durable, and no sync is tried.
        let tried = syncs.load(Ordering::SeqCst);
        for _ in 0..3 {
            let error = group.synced().await.expect_err("after a failure");
            assert!(error.to_string().contains("restart the node"), "{error}");
        }
        assert_eq!(
            syncs.load(Ordering::SeqCst),
            tried,
            "no sync after the failure"
        );
    }

    #[test]
    fn dropping_the_handle_runs_what_waits_and_releases_the_database() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let ran = Arc::new(AtomicUsize::new(0));
        {
            let db = Arc::new(DB::open_default(dir.path()).expect("open"));
            let group = GroupCommit::start(db.clone()).expect("start");
            for _ in 0..10 {
                let ran = ran.clone();
                group.after_sync(Box::new(move |r| {
                    r.expect("sync");
                    ran.fetch_add(1, Ordering::SeqCst);
                }));
            }
        }
        assert_eq!(ran.load(Ordering::SeqCst), 10);
        // The sync thread's handle is gone too, so the database opens again.
        DB::open_default(dir.path()).expect("reopen after the last handle dropped");
    }
}
