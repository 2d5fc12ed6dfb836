//! Drives one target with one scenario: closed loop (N clients, each sends its next
//! operation when the last one is answered) or open loop (operations due at a fixed
//! rate, each timed from when it was due). Both warm up first, then measure for a
//! bounded window; every operation is bounded by a timeout, and the run by its window
//! plus a grace period after which unfinished operations are counted, not awaited.

use crate::histogram::LatencySet;
use crate::scenario::{Op, ScenarioSpec, ShowPool};
use crate::schedule::Schedule;
use crate::target::{LockOutcome, Target};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Distinct error messages kept per run; the rest are only counted.
const ERROR_SAMPLES_MAX: usize = 8;
/// Most sessions (connections) one run opens; in open loop they bound the operations
/// in flight, and an operation due while all are busy waits for one (that wait
/// counts in its latency).
pub const SESSIONS_MAX: usize = 1_024;

/// How load is offered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Mode {
    /// `clients` loops, each waiting for its answer before the next operation.
    Closed { clients: usize },
    /// Operations due at `rate` per second, answered by up to `sessions` connections.
    Open { rate: f64, sessions: usize },
}

impl Mode {
    /// Concurrency for the report's x axis: clients, or connections in open loop.
    pub fn concurrency(&self) -> usize {
        match self {
            Mode::Closed { clients } => *clients,
            Mode::Open { sessions, .. } => *sessions,
        }
    }
}

/// A run's bounds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Bounds {
    pub warmup: Duration,
    pub measure: Duration,
    /// Longest wait for one target call.
    pub op_timeout: Duration,
    pub seed: u64,
}

/// What happened in the measured window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Operations that finished (a booking counts once, lock and confirm together).
    pub operations: u64,
    /// Lock requests answered, either way.
    pub locks: u64,
    pub locks_ok: u64,
    /// Locks refused because a seat was taken: a correct answer under contention.
    pub conflicts: u64,
    pub confirms_ok: u64,
    pub reads_ok: u64,
    /// Timeouts, unexpected answers, broken connections.
    pub errors: u64,
    /// Operations due in the window that never finished within the grace period.
    pub unfinished: u64,
}

impl Counts {
    fn merge(&mut self, other: &Counts) {
        self.operations += other.operations;
        self.locks += other.locks;
        self.locks_ok += other.locks_ok;
        self.conflicts += other.conflicts;
        self.confirms_ok += other.confirms_ok;
        self.reads_ok += other.reads_ok;
        self.errors += other.errors;
        self.unfinished += other.unfinished;
    }
}

/// Counts, latencies and error samples of the measured window.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub counts: Counts,
    pub latencies: LatencySet,
    pub error_samples: BTreeMap<String, u64>,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.counts.errors += 1;
        if let Some(count) = self.error_samples.get_mut(&message) {
            *count += 1;
        } else if self.error_samples.len() < ERROR_SAMPLES_MAX {
            self.error_samples.insert(message, 1);
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.counts.merge(&other.counts);
        self.latencies.merge(&other.latencies);
        for (message, count) in &other.error_samples {
            if let Some(mine) = self.error_samples.get_mut(message) {
                *mine += count;
            } else if self.error_samples.len() < ERROR_SAMPLES_MAX {
                self.error_samples.insert(message.clone(), *count);
            }
        }
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct RunOutput {
    pub tally: Tally,
    /// Length of the measured window.
    pub measured: Duration,
    pub pool_exhausted: bool,
    pub shows_used: usize,
}

/// Performs `op`, recording into `tally` when `measured`. `origin` is when the
/// operation started (closed loop) or was due (open loop): its first step's latency
/// is counted from there.
async fn execute<T: Target>(
    target: &T,
    session: &mut T::Session,
    pool: &ShowPool<T::Show>,
    op: Op,
    origin: Instant,
    op_timeout: Duration,
    tally: &mut Tally,
) {
    match op {
        Op::Book {
            city,
            seats,
            user,
            confirm,
        } => {
            let (index, show) = pool.current(city);
            let locked =
                tokio::time::timeout(op_timeout, target.lock(session, show, &seats, user)).await;
            // Granted and refused locks cost different work (a refusal commits nothing in
            // PostgreSQL, but is a replicated log entry for us): separate histograms.
            let label = match &locked {
                Ok(Ok(LockOutcome::Locked(_))) => "lock",
                Ok(Ok(LockOutcome::Taken)) => "lock_refused",
                _ => "lock_failed",
            };
            tally.latencies.record(label, origin.elapsed());
            let lock = match locked {
                Err(_) => return tally.error("lock: timed out".into()),
                Ok(Err(message)) => return tally.error(format!("lock: {message}")),
                Ok(Ok(LockOutcome::Taken)) => {
                    tally.counts.locks += 1;
                    tally.counts.conflicts += 1;
                    tally.counts.operations += 1;
                    return;
                }
                Ok(Ok(LockOutcome::Locked(lock))) => lock,
            };
            tally.counts.locks += 1;
            tally.counts.locks_ok += 1;
            pool.record_locked(city, index, seats.len() as u64);
            if confirm {
                let started = Instant::now();
                let confirmed =
                    tokio::time::timeout(op_timeout, target.confirm(session, lock, user)).await;
                tally.latencies.record("confirm", started.elapsed());
                tally.latencies.record("lock_and_confirm", origin.elapsed());
                match confirmed {
                    Err(_) => return tally.error("confirm: timed out".into()),
                    Ok(Err(message)) => return tally.error(format!("confirm: {message}")),
                    Ok(Ok(())) => tally.counts.confirms_ok += 1,
                }
            }
            tally.counts.operations += 1;
        }
        Op::Read { city, kind } => {
            let (_, show) = pool.current(city);
            let read = tokio::time::timeout(op_timeout, target.read(session, show, kind)).await;
            tally
                .latencies
                .record(target.read_label(kind), origin.elapsed());
            match read {
                Err(_) => tally.error("read: timed out".into()),
                Ok(Err(message)) => tally.error(format!("read: {message}")),
                Ok(Ok(0)) => tally.error("read: empty seat map".into()),
                Ok(Ok(_)) => {
                    tally.counts.reads_ok += 1;
                    tally.counts.operations += 1;
                }
            }
        }
    }
}

/// Runs `spec` against `target` in `mode` on the prepared `pool`.
pub async fn run<T: Target>(
    target: Arc<T>,
    spec: &ScenarioSpec,
    pool: Arc<ShowPool<T::Show>>,
    mode: Mode,
    bounds: Bounds,
) -> Result<RunOutput, String> {
    let sessions_wanted = mode.concurrency().clamp(1, SESSIONS_MAX);
    let mut sessions = Vec::with_capacity(sessions_wanted);
    for index in 0..sessions_wanted {
        sessions.push(target.session(index).await?);
    }
    let tally = match mode {
        Mode::Closed { .. } => closed_loop(&target, spec, &pool, sessions, bounds).await,
        Mode::Open { rate, .. } => open_loop(&target, spec, &pool, sessions, rate, bounds).await?,
    };
    Ok(RunOutput {
        tally,
        measured: bounds.measure,
        pool_exhausted: pool.exhausted(),
        shows_used: pool.shows_used(),
    })
}

/// How long after the window ends the runner waits for operations still in flight.
fn grace(bounds: &Bounds) -> Duration {
    // A booking is two target calls, each bounded by the operation timeout.
    bounds.op_timeout * 2 + Duration::from_secs(1)
}

async fn closed_loop<T: Target>(
    target: &Arc<T>,
    spec: &ScenarioSpec,
    pool: &Arc<ShowPool<T::Show>>,
    sessions: Vec<T::Session>,
    bounds: Bounds,
) -> Tally {
    let start = Instant::now();
    let measure_from = start + bounds.warmup;
    let end = measure_from + bounds.measure;
    let sequence = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(sessions.len());
    for (index, mut session) in sessions.into_iter().enumerate() {
        let (target, pool, spec, sequence) =
            (target.clone(), pool.clone(), spec.clone(), sequence.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(
                bounds.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            let mut measured = Tally::default();
            let mut discarded = Tally::default();
            loop {
                let origin = Instant::now();
                if origin >= end {
                    break;
                }
                let op = spec.next_op(&mut rng, sequence.fetch_add(1, Ordering::Relaxed));
                let tally = if origin >= measure_from {
                    &mut measured
                } else {
                    &mut discarded
                };
                execute(
                    &*target,
                    &mut session,
                    &pool,
                    op,
                    origin,
                    bounds.op_timeout,
                    tally,
                )
                .await;
            }
            measured
        }));
    }
    let mut total = Tally::default();
    let deadline = tokio::time::Instant::from_std(end + grace(&bounds));
    for mut task in tasks {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(tally)) => total.merge(&tally),
            Ok(Err(join_error)) => total.error(format!("client task failed: {join_error}")),
            Err(_) => {
                task.abort();
                total.counts.unfinished += 1;
            }
        }
    }
    total
}

async fn open_loop<T: Target>(
    target: &Arc<T>,
    spec: &ScenarioSpec,
    pool: &Arc<ShowPool<T::Show>>,
    sessions: Vec<T::Session>,
    rate: f64,
    bounds: Bounds,
) -> Result<Tally, String> {
    let start = Instant::now();
    let schedule = Schedule::new(start, rate)?;
    let measure_from = start + bounds.warmup;
    let end = measure_from + bounds.measure;
    let due_total = schedule.due_within(end - start);
    let give_up = end + grace(&bounds);
    // One slot per session: holding a slot guarantees a free session, and a session
    // goes back to the pool before its slot is released.
    let session_count = sessions.len();
    let free = Arc::new(Mutex::new(sessions));
    let slots = Arc::new(tokio::sync::Semaphore::new(session_count));
    let measured = Arc::new(Mutex::new(Tally::default()));
    let mut rng = fastrand::Rng::with_seed(bounds.seed);
    let mut dispatched = 0u64;
    let mut never_sent = 0u64;
    for index in 0..due_total {
        let intended = schedule.intended(index);
        tokio::time::sleep_until(tokio::time::Instant::from_std(intended)).await;
        let op = spec.next_op(&mut rng, index);
        let deadline = tokio::time::Instant::from_std(give_up);
        let permit = match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                // Never sent within the grace period: charged as unfinished, not dropped.
                never_sent = (index..due_total)
                    .filter(|i| schedule.intended(*i) >= measure_from)
                    .count() as u64;
                break;
            }
        };
        let session = free
            .lock()
            .map_err(|_| "session pool poisoned")?
            .pop()
            .ok_or("a slot was free but no session: the session pool is broken")?;
        spawn_open(
            target,
            pool,
            &free,
            &measured,
            op,
            (intended, measure_from),
            bounds,
            permit,
            session,
        );
        dispatched += 1;
    }
    // Wait for operations in flight: every slot back, or the grace period over.
    let all = u32::try_from(session_count).unwrap_or(u32::MAX);
    let returned = tokio::time::timeout_at(
        tokio::time::Instant::from_std(give_up),
        slots.acquire_many(all),
    )
    .await;
    let mut tally = measured.lock().map_err(|_| "tally poisoned")?.clone();
    tally.counts.unfinished += never_sent;
    if !matches!(returned, Ok(Ok(_))) {
        let in_flight = session_count - slots.available_permits();
        tally.counts.unfinished += in_flight as u64;
    }
    tracing::debug!(dispatched, due_total, "open loop done");
    Ok(tally)
}

#[allow(clippy::too_many_arguments)]
fn spawn_open<T: Target>(
    target: &Arc<T>,
    pool: &Arc<ShowPool<T::Show>>,
    free: &Arc<Mutex<Vec<T::Session>>>,
    measured: &Arc<Mutex<Tally>>,
    op: Op,
    (intended, measure_from): (Instant, Instant),
    bounds: Bounds,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut session: T::Session,
) {
    let (target, pool, free, measured) =
        (target.clone(), pool.clone(), free.clone(), measured.clone());
    tokio::spawn(async move {
        let mut tally = Tally::default();
        execute(
            &*target,
            &mut session,
            &pool,
            op,
            intended,
            bounds.op_timeout,
            &mut tally,
        )
        .await;
        if let Ok(mut sessions) = free.lock() {
            sessions.push(session);
        }
        if intended >= measure_from {
            if let Ok(mut total) = measured.lock() {
                total.merge(&tally);
            }
        }
        drop(permit);
    });
}
