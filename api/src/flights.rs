//! Reads shared by the callers that ask the same thing at the same time.
//!
//! During an on-sale thousands of people refresh the same show's seat map. A [`Flights`]
//! lets the callers of one key share a read, without ever answering a caller from a read
//! that started before it arrived: such a read might miss a write acknowledged in
//! between, and a linearizable read must not.
//!
//! So while a key's read runs, callers queue for the next one, which starts when it ends
//! and answers all of them. A key has at most one read running and one batch waiting; a
//! caller waits for at most two reads. Every read starts after each of its callers
//! arrived, so each gets what a read of its own, started then, could have answered.
//!
//! A caller that finds its key idle reads at once, in its own task; each later batch is
//! read by a task of its own. A caller that gives up (its connection closed) or a read
//! that panics does not strand the callers queued behind it: they still get a read.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

type Running<K, V> = HashMap<K, Option<Vec<oneshot::Sender<V>>>>;

/// The reads in flight, by key.
pub struct Flights<K, V> {
    /// A key is here while its read runs; `Some` holds the callers queued for the next.
    running: Mutex<Running<K, V>>,
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            running: Mutex::new(HashMap::new()),
        }
    }
}

/// A read ended without an answer (it panicked, or no runtime was left to run it); the
/// caller may retry.
#[derive(Debug, PartialEq, Eq)]
pub struct Abandoned;

impl<K, V> Flights<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    /// The answer of a `read` of `key` that starts after this call: one already queued
    /// for the key, or a new one.
    ///
    /// A caller that finds the key idle reads at once, in its own task (no hand-off for a
    /// lone caller). Callers that arrive meanwhile queue; when that read ends, a task of
    /// their own reads for them, and so on while callers keep coming.
    pub async fn join<F, Fut>(self: &Arc<Self>, key: K, read: F) -> Result<V, Abandoned>
    where
        F: Fn(K) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        let queued = {
            let mut running = self.lock();
            match running.get_mut(&key) {
                Some(queued) => {
                    let (tx, rx) = oneshot::channel();
                    queued.get_or_insert_with(Vec::new).push(tx);
                    Some(rx)
                }
                None => {
                    running.insert(key.clone(), None);
                    None
                }
            }
        };
        if let Some(rx) = queued {
            return rx.await.map_err(|_| Abandoned);
        }
        // Should this caller go away mid-read, `turn` still passes the key on.
        let mut turn = Turn::new(self.clone(), key, read);
        let answer = (turn.read)(turn.key.clone()).await;
        metrics::histogram!("seat_ledger_api_shared_read_callers").record(1.0);
        turn.pass_on();
        Ok(answer)
    }

    fn lock(&self) -> MutexGuard<'_, Running<K, V>> {
        // Every change to the map is one insert, take or remove: a panic elsewhere
        // cannot leave it half-made.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A key's read while it runs: when it ends (answered, abandoned by its caller, or
/// panicking), the callers queued meanwhile get a read of their own, or the key is freed.
/// (The bounds are repeated on the impls because `Drop` must carry the struct's own; `Fut`
/// is a parameter so that they can name the read's future.)
struct Turn<K, V, F, Fut>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    F: Fn(K) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = V> + Send + 'static,
{
    flights: Arc<Flights<K, V>>,
    key: K,
    read: F,
    passed: bool,
    _read: PhantomData<fn() -> Fut>,
}

impl<K, V, F, Fut> Turn<K, V, F, Fut>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    F: Fn(K) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = V> + Send + 'static,
{
    fn new(flights: Arc<Flights<K, V>>, key: K, read: F) -> Self {
        Turn {
            flights,
            key,
            read,
            passed: false,
            _read: PhantomData,
        }
    }

    /// Hands the callers queued for the key to a task that reads for them, or frees the
    /// key (under the same lock that saw nobody queued). Once per turn.
    fn pass_on(&mut self) {
        if std::mem::replace(&mut self.passed, true) {
            return;
        }
        let mut running = self.flights.lock();
        let Some(waiters) = running.get_mut(&self.key).and_then(Option::take) else {
            running.remove(&self.key);
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (shutting down): the queued callers get `Abandoned`.
            running.remove(&self.key);
            return;
        };
        drop(running);
        let next = Turn::new(self.flights.clone(), self.key.clone(), self.read.clone());
        runtime.spawn(next.read_for(waiters));
    }

    /// Reads once for `waiters`, then passes the key on.
    async fn read_for(mut self, waiters: Vec<oneshot::Sender<V>>) {
        let answer = (self.read)(self.key.clone()).await;
        metrics::histogram!("seat_ledger_api_shared_read_callers").record(waiters.len() as f64);
        for waiter in waiters {
            // A caller that gave up no longer listens; the others still do.
            let _ = waiter.send(answer.clone());
        }
        self.pass_on();
    }
}

impl<K, V, F, Fut> Drop for Turn<K, V, F, Fut>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    F: Fn(K) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = V> + Send + 'static,
{
    fn drop(&mut self) {
        // Ended early (its caller went away, or the read panicked): whoever queued
        // meanwhile still gets a read.
        self.pass_on();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// A store whose reads take what it holds when they start, then wait for a permit.
    struct Store {
        value: AtomicU64,
        reads: AtomicU64,
        gate: Semaphore,
    }

    fn store() -> Arc<Store> {
        Arc::new(Store {
            value: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            gate: Semaphore::new(0),
        })
    }

    type Reading = std::pin::Pin<Box<dyn Future<Output = u64> + Send>>;

    fn reader(store: &Arc<Store>) -> impl Fn(&'static str) -> Reading + Clone + Send + 'static {
        let store = store.clone();
        move |_key| {
            let store = store.clone();
            Box::pin(async move {
                store.reads.fetch_add(1, Ordering::SeqCst);
                let seen = store.value.load(Ordering::SeqCst);
                store.gate.acquire().await.expect("gate").forget();
                seen
            })
        }
    }

    /// Waits until `holds` (polling; a loaded machine may take a while), or fails.
    async fn until(what: &str, holds: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !holds() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn reads(store: &Store) -> u64 {
        store.reads.load(Ordering::SeqCst)
    }

    /// Callers queued for the next read of `key`.
    fn queued(flights: &Flights<&'static str, u64>, key: &str) -> usize {
        flights
            .lock()
            .get(key)
            .and_then(Option::as_ref)
            .map_or(0, Vec::len)
    }

    #[tokio::test]
    async fn a_caller_arriving_during_a_read_gets_the_next_one_which_sees_writes_before_it() {
        let (flights, store) = (Arc::new(Flights::default()), store());
        let first = tokio::spawn({
            let (flights, read) = (flights.clone(), reader(&store));
            async move { flights.join("show", read).await }
        });
        until("the first read started", || reads(&store) == 1).await;
        // A write is acknowledged while that read runs; then two callers arrive.
        store.value.store(1, Ordering::SeqCst);
        let later: Vec<_> = (0..2)
            .map(|_| {
                let (flights, read) = (flights.clone(), reader(&store));
                tokio::spawn(async move { flights.join("show", read).await })
            })
            .collect();
        until("both queued", || queued(&flights, "show") == 2).await;
        assert_eq!(reads(&store), 1, "the two wait for the next read");
        store.gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Ok(0));
        until("the next read started", || reads(&store) == 2).await;
        store.gate.add_permits(1);
        for caller in later {
            assert_eq!(
                caller.await.unwrap(),
                Ok(1),
                "the write acknowledged before it"
            );
        }
        assert_eq!(reads(&store), 2, "one read for both");
        until("the key is freed", || flights.lock().is_empty()).await;
    }

    #[tokio::test]
    async fn keys_do_not_share_and_a_freed_key_reads_again() {
        let (flights, store) = (Arc::new(Flights::default()), store());
        store.gate.add_permits(2);
        let (a, b) = tokio::join!(
            flights.join("a", reader(&store)),
            flights.join("b", reader(&store))
        );
        assert_eq!((a, b), (Ok(0), Ok(0)));
        assert_eq!(reads(&store), 2);
        store.value.store(5, Ordering::SeqCst);
        store.gate.add_permits(1);
        assert_eq!(flights.join("a", reader(&store)).await, Ok(5));
        assert_eq!(reads(&store), 3);
    }

    #[tokio::test]
    async fn a_read_that_ends_early_still_leaves_the_queued_callers_a_read() {
        for how in ["caller gone", "read panicked"] {
            let (flights, store) = (Arc::new(Flights::default()), store());
            let panicked = Arc::new(AtomicBool::new(false));
            let read = {
                let (read, panicked) = (reader(&store), panicked.clone());
                move |key| {
                    let reading = read(key);
                    let panics = how == "read panicked" && !panicked.swap(true, Ordering::SeqCst);
                    async move {
                        let seen = reading.await;
                        assert!(!panics, "a read that fails badly");
                        seen
                    }
                }
            };
            let first = tokio::spawn({
                let (flights, read) = (flights.clone(), read.clone());
                async move { flights.join("show", read).await }
            });
            until("the first read started", || reads(&store) == 1).await;
            store.value.store(1, Ordering::SeqCst);
            let later = tokio::spawn({
                let (flights, read) = (flights.clone(), read.clone());
                async move { flights.join("show", read).await }
            });
            until("the later caller queued", || queued(&flights, "show") == 1).await;
            if how == "caller gone" {
                first.abort();
            } else {
                store.gate.add_permits(1);
            }
            assert!(first.await.is_err(), "{how}");
            store.gate.add_permits(1);
            assert_eq!(later.await.unwrap(), Ok(1), "{how}");
            until("the key is freed", || flights.lock().is_empty()).await;
            store.gate.add_permits(1);
            assert_eq!(flights.join("show", read).await, Ok(1), "{how}");
        }
    }
}
