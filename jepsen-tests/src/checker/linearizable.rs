//! Per-seat linearizability: is there one order of the operations on each seat,
//! consistent with real time, in which a sequential seat model explains every result?
//!
//! The search is Wing & Gong's, with Lowe's memoisation of (linearized set, model state)
//! pairs; the linearized set is kept as a prefix plus the few exceptions on either side
//! of it, so a state costs a handful of words however long the history is. The search
//! is bounded by `CheckOptions::max_states` per seat: past it the answer is `unknown`,
//! never a pass.
//!
//! # The model of one seat
//! `available`, `locked { lock, expires }` or `booked { lock }`, plus a lower bound on
//! the shard's log clock. The log clock is the leader's wall clock at proposal, so a
//! write takes effect at a log time no earlier than its invoke and no later than its
//! completion (within `clock_slack_ms`); a lock that has reached its expiry on the log
//! clock is available to every decision. Where the history allows a lock to be either
//! live or expired at an operation, both are explored.
//!
//! # What goes in, and the approximations
//! - Each seat is its own key (P-compositionality). A lock of several seats is split
//!   into one lock per seat: the search checks each seat's order but not that the seats
//!   changed together (that atomicity across seats is not checked here). A seat map read
//!   is likewise split into one read per seat.
//! - A `seats-taken` failure says, per seat, "taken" for the seats it names and "free"
//!   for the others; other failures of a lock (limits, rate limiting) change nothing and
//!   constrain nothing, so they are left out.
//! - A failed confirm or release (`lock-expired`, `not-found`, `wrong-booking-status`)
//!   says its lock was not live.
//! - Only reads that asked for `linearizable` are included; session and stale reads are
//!   the `reads` checker's.
//! - `info` operations may take effect at any time after their invoke, or never. A lock
//!   whose answer was lost has an unknown id and an expiry no earlier than its invoke
//!   plus its TTL.
//! - Bookings are never cancelled in these workloads, so `booked` is final.

use crate::checker::{too_large, Action, Anomaly, CheckOptions, CheckResult, Outcome, Prepared};
use crate::history::{ReadConsistency, SeatStatus};
use std::collections::{BTreeMap, HashMap, HashSet};

pub const NAME: &str = "linearizable";

/// Failure reasons that mean "this lock was not live when the request was decided".
pub const NOT_LIVE_REASONS: &[&str] = &["lock-expired", "not-found", "wrong-booking-status"];

/// What one operation does to one seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Effect {
    /// A lock took the seat; its id and expiry are unknown when its answer was lost.
    Lock {
        lock: Option<u32>,
        ttl_ms: u64,
        expires_at_ms: Option<u64>,
    },
    /// A lock was refused because this seat was locked or booked.
    Refused,
    /// A lock was refused for other seats; this one was free.
    SawFree,
    Confirm {
        lock: u32,
    },
    Release {
        lock: u32,
    },
    /// A confirm or release was refused: the lock was not live.
    NotLive {
        lock: u32,
    },
    Read(SeatStatus),
}

/// One operation on one seat.
#[derive(Clone, Debug)]
struct KeyOp {
    /// Index into `Prepared::calls`, for reports.
    call: usize,
    /// History index of the invoke.
    invoke: u64,
    /// Last history index at which it may take effect (`u64::MAX` for `info`).
    end: u64,
    /// `ok` and `fail` must be linearized; `info` may be left out.
    must: bool,
    /// The log clock at this operation is within `[lo_ms, hi_ms]`.
    lo_ms: u64,
    hi_ms: u64,
    effect: Effect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Seat {
    Available,
    /// The expiry is known exactly for acknowledged locks; for a lock whose answer was
    /// lost only a lower bound is known.
    Locked {
        lock: Option<u32>,
        expires_lo_ms: u64,
        expires_hi_ms: u64,
    },
    Booked {
        lock: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Model {
    seat: Seat,
    /// The log clock is at least this at the current point of the order.
    clock_lo_ms: u64,
}

impl Model {
    const INITIAL: Model = Model {
        seat: Seat::Available,
        clock_lo_ms: 0,
    };
}

/// The successors of `model` through `op`: one per way the seat's lock may be (live or
/// already expired) at the operation.
fn step(model: Model, op: &KeyOp) -> [Option<Model>; 2] {
    let clock = model.clock_lo_ms.max(op.lo_ms);
    if clock > op.hi_ms {
        return [None, None];
    }
    let (live, expired) = match model.seat {
        Seat::Locked {
            expires_lo_ms,
            expires_hi_ms,
            ..
        } => (
            (expires_hi_ms > clock).then_some(Model {
                seat: model.seat,
                clock_lo_ms: clock,
            }),
            (expires_lo_ms <= op.hi_ms).then_some(Model {
                seat: Seat::Available,
                clock_lo_ms: clock.max(expires_lo_ms),
            }),
        ),
        seat => (
            Some(Model {
                seat,
                clock_lo_ms: clock,
            }),
            None,
        ),
    };
    [
        live.and_then(|m| apply(m, op)),
        expired.and_then(|m| apply(m, op)),
    ]
}

/// The sequential seat: what `op` does to a seat whose lock, if any, is live.
fn apply(m: Model, op: &KeyOp) -> Option<Model> {
    let held = |lock: u32| matches!(m.seat, Seat::Locked { lock: Some(l), .. } if l == lock);
    match op.effect {
        Effect::Lock {
            lock,
            ttl_ms,
            expires_at_ms,
        } => {
            if m.seat != Seat::Available {
                return None;
            }
            let (expires_lo_ms, expires_hi_ms, clock) = match expires_at_ms {
                // The leader stamped the lock at `expires - ttl`; the clock is now past it.
                Some(at) => (at, at, m.clock_lo_ms.max(at.saturating_sub(ttl_ms))),
                None => (op.lo_ms.saturating_add(ttl_ms), u64::MAX, m.clock_lo_ms),
            };
            (clock <= op.hi_ms).then_some(Model {
                seat: Seat::Locked {
                    lock,
                    expires_lo_ms,
                    expires_hi_ms,
                },
                clock_lo_ms: clock,
            })
        }
        Effect::Refused => (m.seat != Seat::Available).then_some(m),
        Effect::SawFree => (m.seat == Seat::Available).then_some(m),
        Effect::Confirm { lock } => held(lock).then_some(Model {
            seat: Seat::Booked { lock: Some(lock) },
            ..m
        }),
        Effect::Release { lock } => held(lock).then_some(Model {
            seat: Seat::Available,
            ..m
        }),
        Effect::NotLive { lock } => (!held(lock)).then_some(m),
        Effect::Read(status) => {
            let shown = match m.seat {
                Seat::Available => SeatStatus::Available,
                Seat::Locked { .. } => SeatStatus::Locked,
                Seat::Booked { .. } => SeatStatus::Booked,
            };
            (shown == status).then_some(m)
        }
    }
}

/// The set of linearized operations: every `must` operation before `prefix` is in it;
/// `holes` are the `info` operations before `prefix` that are not; `extra` are those
/// after `prefix` that are. The representation is canonical, so it can be memoised.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Linearized {
    prefix: u32,
    holes: Vec<u32>,
    extra: Vec<u32>,
}

impl Linearized {
    fn start(ops: &[KeyOp]) -> Linearized {
        let mut set = Linearized {
            prefix: 0,
            holes: Vec::new(),
            extra: Vec::new(),
        };
        set.normalise(ops);
        set
    }

    fn contains(&self, i: u32) -> bool {
        if i < self.prefix {
            !self.holes.contains(&i)
        } else {
            self.extra.binary_search(&i).is_ok()
        }
    }

    fn count(&self) -> usize {
        self.prefix as usize - self.holes.len() + self.extra.len()
    }

    fn done(&self, ops: &[KeyOp]) -> bool {
        self.prefix as usize == ops.len()
    }

    fn with(&self, i: u32, ops: &[KeyOp]) -> Linearized {
        let mut next = self.clone();
        if i < next.prefix {
            next.holes.retain(|hole| *hole != i);
        } else if let Err(at) = next.extra.binary_search(&i) {
            next.extra.insert(at, i);
        }
        next.normalise(ops);
        next
    }

    fn normalise(&mut self, ops: &[KeyOp]) {
        while (self.prefix as usize) < ops.len() {
            if self.extra.first() == Some(&self.prefix) {
                self.extra.remove(0);
            } else if !ops[self.prefix as usize].must {
                self.holes.push(self.prefix);
            } else {
                break;
            }
            self.prefix += 1;
        }
    }

    /// Operations that may come next: not linearized, and invoked before every
    /// unlinearized `must` operation completed. Known outcomes come first (in invoke
    /// order), unknown ones last: an unknown operation can wait, and trying it early
    /// made the search backtrack through every place it could go (on a history with
    /// 40 unknown locks on four seats, 360,820 states against 2,830).
    fn candidates(&self, ops: &[KeyOp]) -> Vec<u32> {
        let mut must = Vec::new();
        let mut unknown = Vec::new();
        let mut first_end = u64::MAX;
        let mut i = self.prefix;
        while (i as usize) < ops.len() && ops[i as usize].invoke < first_end {
            if !self.contains(i) {
                if ops[i as usize].must {
                    must.push(i);
                    first_end = first_end.min(ops[i as usize].end);
                } else {
                    unknown.push(i);
                }
            }
            i += 1;
        }
        must.extend(unknown);
        must.extend(self.holes.iter().copied());
        must
    }
}

enum Verdict {
    Linearizable,
    /// No order exists; the deepest point the search reached, for the report.
    Not {
        linearized: Linearized,
        model: Model,
    },
    GaveUp,
}

/// Searches one seat's operations (sorted by invoke) within `budget` states.
fn search(ops: &[KeyOp], budget: u64, explored: &mut u64) -> Verdict {
    let start = (Linearized::start(ops), Model::INITIAL);
    let mut seen: HashSet<(Linearized, Model)> = HashSet::new();
    seen.insert(start.clone());
    let mut deepest = start.clone();
    let mut stack = vec![start];
    while let Some((linearized, model)) = stack.pop() {
        *explored += 1;
        if *explored > budget {
            return Verdict::GaveUp;
        }
        if linearized.done(ops) {
            return Verdict::Linearizable;
        }
        if linearized.count() > deepest.0.count() {
            deepest = (linearized.clone(), model);
        }
        // Pushed in reverse so that the first candidate is tried first.
        for candidate in linearized.candidates(ops).into_iter().rev() {
            for next in step(model, &ops[candidate as usize]).into_iter().flatten() {
                let state = (linearized.with(candidate, ops), next);
                if seen.insert(state.clone()) {
                    stack.push(state);
                }
            }
        }
    }
    Verdict::Not {
        linearized: deepest.0,
        model: deepest.1,
    }
}

/// Splits the calls into per-seat operations, in invoke order.
fn partition(prepared: &Prepared, options: &CheckOptions) -> BTreeMap<(String, u32), Vec<KeyOp>> {
    let mut locks: HashMap<String, u32> = HashMap::new();
    let mut intern = |lock: &str| {
        let next = locks.len() as u32;
        *locks.entry(lock.to_owned()).or_insert(next)
    };
    let mut keys: BTreeMap<(String, u32), Vec<KeyOp>> = BTreeMap::new();
    for (call_index, call) in prepared.calls.iter().enumerate() {
        let mut effects: Vec<(String, u32, Effect)> = Vec::new();
        match (&call.action, call.outcome) {
            (Action::Lock(v), Outcome::Ok | Outcome::Info) => {
                let lock = v.lock.as_deref().map(&mut intern);
                for seat in &v.seats {
                    let effect = Effect::Lock {
                        lock,
                        ttl_ms: v.ttl_ms,
                        expires_at_ms: v.expires_at_ms.filter(|_| call.is_ok()),
                    };
                    effects.push((v.show.clone(), *seat, effect));
                }
            }
            (Action::Lock(v), Outcome::Fail) if v.reason.as_deref() == Some("seats-taken") => {
                let taken = v.taken.clone().unwrap_or_default();
                for seat in &v.seats {
                    let effect = match taken.contains(seat) {
                        true => Effect::Refused,
                        false => Effect::SawFree,
                    };
                    effects.push((v.show.clone(), *seat, effect));
                }
            }
            (Action::Confirm(v) | Action::Release(v), outcome) => {
                let lock = intern(&v.lock);
                let effect = match (&call.action, outcome) {
                    (_, Outcome::Fail) => {
                        let not_live = v
                            .reason
                            .as_deref()
                            .is_some_and(|r| NOT_LIVE_REASONS.contains(&r));
                        if !not_live {
                            continue;
                        }
                        Effect::NotLive { lock }
                    }
                    (Action::Confirm(_), _) => Effect::Confirm { lock },
                    _ => Effect::Release { lock },
                };
                for seat in &v.seats {
                    effects.push((v.show.clone(), *seat, effect));
                }
            }
            (Action::Read(v), Outcome::Ok) if v.consistency == ReadConsistency::Linearizable => {
                for (seat, status) in v.seats.iter().flatten().enumerate() {
                    effects.push((v.show.clone(), seat as u32, Effect::Read(*status)));
                }
            }
            _ => {}
        }
        for (show, seat, effect) in effects {
            let info = call.outcome == Outcome::Info;
            let is_read = matches!(effect, Effect::Read(_));
            keys.entry((show, seat)).or_default().push(KeyOp {
                call: call_index,
                invoke: call.invoke_index,
                end: call.effect_end(),
                must: !info,
                // Writes are stamped after their invoke; reads stamp nothing.
                lo_ms: match is_read {
                    true => 0,
                    false => call.invoke_ms.saturating_sub(options.clock_slack_ms),
                },
                hi_ms: match info {
                    true => u64::MAX,
                    false => call
                        .complete_ms
                        .map_or(u64::MAX, |ms| ms.saturating_add(options.clock_slack_ms)),
                },
                effect,
            });
        }
    }
    for ops in keys.values_mut() {
        ops.sort_by_key(|op| op.invoke);
    }
    keys
}

pub fn check(prepared: &Prepared, options: &CheckOptions) -> CheckResult {
    let mut result = CheckResult::new(NAME);
    if let Some(why) = too_large(prepared, options) {
        result.unknown(why);
        return result;
    }
    let keys = partition(prepared, options);
    let mut explored_total = 0u64;
    let mut largest = 0usize;
    for ((show, seat), ops) in &keys {
        largest = largest.max(ops.len());
        let mut explored = 0u64;
        match search(ops, options.max_states, &mut explored) {
            Verdict::Linearizable => {}
            Verdict::GaveUp => result.unknown(format!(
                "seat {seat} of {show}: gave up after {} states ({} ops)",
                options.max_states,
                ops.len()
            )),
            Verdict::Not { linearized, model } => result.anomaly(
                report(prepared, show, *seat, ops, &linearized, model),
                options,
            ),
        }
        explored_total += explored;
    }
    result.note(format!(
        "{} seats, at most {largest} ops on one seat, {explored_total} states explored",
        keys.len()
    ));
    result
}

fn report(
    prepared: &Prepared,
    show: &str,
    seat: u32,
    ops: &[KeyOp],
    linearized: &Linearized,
    model: Model,
) -> Anomaly {
    let stuck: Vec<&KeyOp> = linearized
        .candidates(ops)
        .into_iter()
        .map(|i| &ops[i as usize])
        .filter(|op| op.must)
        .collect();
    let mut indexes = Vec::new();
    let described: Vec<String> = stuck
        .iter()
        .map(|op| {
            let call = &prepared.calls[op.call];
            indexes.extend(call.indexes());
            format!(
                "{:?} {} by process {} (ops {:?})",
                call.outcome,
                call.f.as_str(),
                call.process,
                call.indexes()
            )
        })
        .collect();
    Anomaly::new(
        "nonlinearizable",
        format!(
            "seat {seat} of {show}: after {} of {} ops in some valid order the seat is {:?} \
             (log clock >= {} ms) and none of these can come next: {}",
            linearized.count(),
            ops.len(),
            model.seat,
            model.clock_lo_ms,
            described.join("; ")
        ),
        indexes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::{assert_verdict, Builder};
    use crate::checker::Validity;

    const TTL: u64 = 10_000;

    #[test]
    fn a_lock_read_release_read_sequence_is_linearizable() {
        let mut h = Builder::new();
        let l = h.invoke_lock(1, "s", &[0], TTL);
        h.ok_lock(l, "l1");
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "la");
        let x = h.invoke_release(1, "s", "l1", &[0]);
        h.ok(x);
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "aa");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
    }

    #[test]
    fn concurrent_locks_of_one_seat_one_winning_are_linearizable() {
        let mut h = Builder::new();
        let a = h.invoke_lock(1, "s", &[0], TTL);
        let b = h.invoke_lock(2, "s", &[0], TTL);
        let r = h.invoke_read(3, "s");
        h.fail_lock(a, &[0]);
        h.ok_read(r, "a");
        h.ok_lock(b, "l2");
        let c = h.invoke_confirm(2, "s", "l2", &[0]);
        h.ok(c);
        let r = h.invoke_read(3, "s");
        h.ok_read(r, "b");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
    }

    #[test]
    fn two_acknowledged_locks_of_one_live_seat_are_caught() {
        let mut h = Builder::new();
        let a = h.invoke_lock(1, "s", &[0], TTL);
        h.ok_lock(a, "l1");
        let b = h.invoke_lock(2, "s", &[0], TTL);
        h.ok_lock(b, "l2");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("nonlinearizable"));
    }

    #[test]
    fn a_second_lock_after_the_first_expired_is_fine() {
        let mut h = Builder::new();
        let a = h.invoke_lock(1, "s", &[0], TTL);
        h.ok_lock(a, "l1");
        h.sleep_ms(TTL);
        let r = h.invoke_read(3, "s");
        h.ok_read(r, "a");
        let b = h.invoke_lock(2, "s", &[0], TTL);
        h.ok_lock(b, "l2");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_lock_is_caught() {
        let mut h = Builder::new();
        let a = h.invoke_lock(1, "s", &[0, 1], TTL);
        h.ok_lock(a, "l1");
        let r = h.invoke_read(2, "s");
        // Seat 1 of the two-seat lock shows available: the lock was lost on that seat.
        h.ok_read(r, "la");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("nonlinearizable"));
    }

    #[test]
    fn a_refusal_with_nothing_holding_the_seat_is_caught() {
        let mut h = Builder::new();
        let a = h.invoke_lock(1, "s", &[0], TTL);
        h.fail_lock(a, &[0]);
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("nonlinearizable"));
    }

    #[test]
    fn a_confirm_invoked_after_the_lock_expired_cannot_be_acknowledged() {
        let mut h = Builder::new();
        let a = h.invoke_lock(1, "s", &[0], TTL);
        h.ok_lock(a, "l1");
        h.sleep_ms(TTL + 100);
        let c = h.invoke_confirm(1, "s", "l1", &[0]);
        h.ok(c);
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("nonlinearizable"));
        // The same confirm refused is what the model expects.
        let mut h = Builder::new();
        let a = h.invoke_lock(1, "s", &[0], TTL);
        h.ok_lock(a, "l1");
        h.sleep_ms(TTL + 100);
        let c = h.invoke_confirm(1, "s", "l1", &[0]);
        h.fail(c, "lock-expired");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
    }

    #[test]
    fn an_unknown_lock_may_have_happened_later() {
        let mut h = Builder::new();
        let a = h.invoke_lock(1, "s", &[0], TTL);
        h.info(a);
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "a");
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "l");
        let b = h.invoke_lock(3, "s", &[0], TTL);
        h.fail_lock(b, &[0]);
        assert_verdict(&h.check(NAME), Validity::Valid, None);
        // But nothing explains a booked seat.
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "b");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("nonlinearizable"));
    }

    #[test]
    fn a_history_too_large_for_the_budget_is_unknown_not_valid() {
        let mut h = Builder::new();
        // Many unknown locks and releases keep every order open.
        let mut open = Vec::new();
        for p in 0..12 {
            open.push(h.invoke_lock(p, "s", &[0], TTL));
        }
        for invoke in open {
            h.info(invoke);
        }
        for p in 20..40 {
            let r = h.invoke_read(p, "s");
            h.ok_read(r, if p % 2 == 0 { "l" } else { "a" });
        }
        let options = CheckOptions {
            max_states: 50,
            ..CheckOptions::default()
        };
        let result = h.check_with(NAME, &options);
        assert_verdict(&result, Validity::Unknown, None);
        assert!(
            result.notes.iter().any(|n| n.contains("gave up")),
            "{result:?}"
        );
        let options = CheckOptions {
            max_calls: 10,
            ..CheckOptions::default()
        };
        assert_verdict(&h.check_with(NAME, &options), Validity::Unknown, None);
    }

    #[test]
    fn a_refusal_naming_one_seat_says_the_other_was_free() {
        let mut h = Builder::new();
        let a = h.invoke_lock(1, "s", &[0], TTL);
        h.ok_lock(a, "l1");
        let b = h.invoke_lock(2, "s", &[0, 1], TTL);
        h.fail_lock(b, &[0]);
        h.nemesis(crate::history::F::Kill, 2);
        let r = h.invoke_read(3, "s");
        h.ok_read(r, "la");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
        // A refusal that names a free seat as taken is wrong.
        let c = h.invoke_lock(2, "s", &[1], TTL);
        h.fail_lock(c, &[1]);
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("nonlinearizable"));
    }

    #[test]
    fn an_unknown_release_may_explain_a_free_seat() {
        let mut h = Builder::new();
        let a = h.invoke_lock(1, "s", &[0], TTL);
        h.ok_lock(a, "l1");
        let x = h.invoke_release(1, "s", "l1", &[0]);
        h.info(x);
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "l");
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "a");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
        // It cannot be undone, though.
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "l");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("nonlinearizable"));
    }
}
