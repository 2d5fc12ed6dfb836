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
//! Reads run in tasks of their own, so a caller that gives up (its connection closed)
//! does not strand the others.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
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

/// A read ended without an answer (its task panicked); the caller may retry.
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
    /// `read` is run by a task of its own, once per batch of callers, for as long as
    /// callers keep queueing; the first caller's `read` serves every batch of its run.
    pub async fn join<F, Fut>(self: &Arc<Self>, key: K, read: F) -> Result<V, Abandoned>
    where
        F: Fn(K) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut running = self.lock();
            match running.get_mut(&key) {
                Some(queued) => {
                    queued.get_or_insert_with(Vec::new).push(tx);
                    None
                }
                None => {
                    running.insert(key.clone(), None);
                    Some(tx)
                }
            }
        };
        if let Some(first) = first {
            tokio::spawn(self.clone().run(key, vec![first], read));
        }
        rx.await.map_err(|_| Abandoned)
    }

    fn lock(&self) -> MutexGuard<'_, Running<K, V>> {
        // Every change to the map is one insert, take or remove: a panic elsewhere
        // cannot leave it half-made.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads for `waiters`, then for whoever queued meanwhile, until nobody did; then
    /// frees the key under the same lock that saw nobody queued.
    async fn run<F, Fut>(self: Arc<Self>, key: K, mut waiters: Vec<oneshot::Sender<V>>, read: F)
    where
        F: Fn(K) -> Fut,
        Fut: Future<Output = V>,
    {
        let mut release = Release {
            flights: &self,
            key: &key,
            armed: true,
        };
        loop {
            let answer = read(key.clone()).await;
            metrics::histogram!("seat_ledger_api_shared_read_callers").record(waiters.len() as f64);
            for waiter in waiters.drain(..) {
                // A caller that gave up no longer listens; the others still do.
                let _ = waiter.send(answer.clone());
            }
            let mut running = self.lock();
            match running.get_mut(&key).and_then(Option::take) {
                Some(queued) => waiters = queued,
                None => {
                    running.remove(&key);
                    release.armed = false;
                    return;
                }
            }
        }
    }
}

/// Frees a key whose reading task ended early (a panic): its queued callers are
/// answered with [`Abandoned`] (their senders dropped) instead of waiting forever, and
/// the next caller starts a read again.
struct Release<'a, K: Hash + Eq, V> {
    flights: &'a Flights<K, V>,
    key: &'a K,
    armed: bool,
}

impl<K: Hash + Eq, V> Drop for Release<'_, K, V> {
    fn drop(&mut self) {
        if self.armed {
            let mut running = self
                .flights
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            running.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
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

    fn reader(
        store: &Arc<Store>,
    ) -> impl Fn(&'static str) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> + Send + 'static
    {
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

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn a_caller_arriving_during_a_read_gets_the_next_one_which_sees_writes_before_it() {
        let (flights, store) = (Arc::new(Flights::default()), store());
        let first = tokio::spawn({
            let (flights, read) = (flights.clone(), reader(&store));
            async move { flights.join("show", read).await }
        });
        settle().await;
        assert_eq!(
            store.reads.load(Ordering::SeqCst),
            1,
            "the first read started"
        );
        // A write is acknowledged while that read runs; then two callers arrive.
        store.value.store(1, Ordering::SeqCst);
        let later: Vec<_> = (0..2)
            .map(|_| {
                let (flights, read) = (flights.clone(), reader(&store));
                tokio::spawn(async move { flights.join("show", read).await })
            })
            .collect();
        settle().await;
        assert_eq!(
            store.reads.load(Ordering::SeqCst),
            1,
            "the two wait for the next read"
        );
        store.gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Ok(0));
        settle().await;
        assert_eq!(store.reads.load(Ordering::SeqCst), 2, "one read for both");
        store.gate.add_permits(1);
        for caller in later {
            assert_eq!(
                caller.await.unwrap(),
                Ok(1),
                "the write acknowledged before it"
            );
        }
        assert!(flights.lock().is_empty(), "the key is freed");
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
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
        store.value.store(5, Ordering::SeqCst);
        store.gate.add_permits(1);
        assert_eq!(flights.join("a", reader(&store)).await, Ok(5));
        assert_eq!(store.reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_read_that_panics_answers_its_callers_and_frees_the_key() {
        let flights: Arc<Flights<&'static str, u64>> = Arc::new(Flights::default());
        let answer = flights
            .join("show", |_| async { panic!("a read that fails badly") })
            .await;
        assert_eq!(answer, Err(Abandoned));
        assert!(flights.lock().is_empty(), "the key is freed");
        assert_eq!(flights.join("show", |_| async { 7 }).await, Ok(7));
    }
}
