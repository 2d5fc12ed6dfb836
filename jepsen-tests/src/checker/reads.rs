//! Read consistency, checked directly (without a search) on every seat of every read:
//!
//! - A read labelled `linearizable` never returns state older than an acknowledged
//!   write that finished before the read began: a seat whose lock was acknowledged
//!   before the read began must not show `available` while that lock can neither have
//!   expired (the read ended before the expiry, within `clock_slack_ms`) nor been
//!   released (no release of it was invoked before the read ended); a seat whose confirm
//!   was acknowledged before the read began must show `booked`.
//! - A `session` read sees its own process's writes: the same two rules, with only the
//!   writes of the reading process.
//! - An answer must carry the consistency it was asked for (`X-Read-Consistency`).
//!
//! Stale reads are allowed to be stale and are not judged. Bookings are never cancelled
//! in these workloads, so a confirmed seat stays booked.

use crate::checker::{too_large, Action, Anomaly, Call, CheckOptions, CheckResult, Prepared};
use crate::checker::{Outcome, Validity};
use crate::history::{ReadConsistency, SeatStatus};
use std::collections::BTreeMap;

pub const NAME: &str = "reads";

/// An acknowledged write of a seat.
struct Write<'a> {
    call: &'a Call,
    lock: &'a str,
    /// `Some(expiry)` for a lock, `None` for a confirm.
    expires_at_ms: Option<u64>,
}

pub fn check(prepared: &Prepared, options: &CheckOptions) -> CheckResult {
    let mut result = CheckResult::new(NAME);
    if let Some(why) = too_large(prepared, options) {
        result.unknown(why);
        return result;
    }
    let mut writes: BTreeMap<(&str, u32), Vec<Write>> = BTreeMap::new();
    // Lock -> invoke indexes of releases that may have happened (ok or unknown).
    let mut releases: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for call in &prepared.calls {
        match (&call.action, call.outcome) {
            (Action::Lock(v), Outcome::Ok) => {
                for seat in &v.seats {
                    writes.entry((&v.show, *seat)).or_default().push(Write {
                        call,
                        lock: v.lock.as_deref().unwrap_or_default(),
                        expires_at_ms: v.expires_at_ms,
                    });
                }
            }
            (Action::Confirm(v), Outcome::Ok) => {
                for seat in &v.seats {
                    writes.entry((&v.show, *seat)).or_default().push(Write {
                        call,
                        lock: &v.lock,
                        expires_at_ms: None,
                    });
                }
            }
            (Action::Release(v), Outcome::Ok | Outcome::Info) => {
                releases.entry(&v.lock).or_default().push(call.invoke_index);
            }
            _ => {}
        }
    }
    let (mut linearizable, mut session) = (0usize, 0usize);
    for read in prepared.calls.iter().filter(|c| c.is_ok()) {
        let Action::Read(v) = &read.action else {
            continue;
        };
        let own_only = match v.consistency {
            ReadConsistency::Linearizable => false,
            ReadConsistency::Session => true,
            ReadConsistency::Stale => continue,
        };
        if v.served.is_some_and(|served| served != v.consistency) {
            let detail = format!(
                "asked for {:?} and was answered at {:?}",
                v.consistency, v.served
            );
            let anomaly = Anomaly::new("consistency-mismatch", detail, read.indexes());
            result.anomaly(anomaly, options);
        }
        match own_only {
            true => session += 1,
            false => linearizable += 1,
        }
        for (seat, status) in v.seats.iter().flatten().enumerate() {
            let Some(seat_writes) = writes.get(&(v.show.as_str(), seat as u32)) else {
                continue;
            };
            let stale = seat_writes.iter().find(|w| {
                (!own_only || w.call.process == read.process)
                    && w.call.precedes(read)
                    && hides(w, *status, read, &releases, options.clock_slack_ms)
            });
            if let Some(write) = stale {
                let detail = format!(
                    "{:?} read of seat {seat} of {} shows {status:?} although {} of {} was \
                     acknowledged before the read began",
                    v.consistency,
                    v.show,
                    write.call.f.as_str(),
                    write.lock
                );
                let mut ops = write.call.indexes();
                ops.extend(read.indexes());
                result.anomaly(Anomaly::new("stale-read", detail, ops), options);
            }
        }
    }
    result.note(format!(
        "{linearizable} linearizable and {session} session reads checked"
    ));
    if result.valid == Validity::Valid && linearizable + session == 0 {
        result.note("no linearizable or session reads in the history");
    }
    result
}

/// True when `status` cannot be seen after `write` completed: the read would have
/// missed the write.
fn hides(
    write: &Write,
    status: SeatStatus,
    read: &Call,
    releases: &BTreeMap<&str, Vec<u64>>,
    slack_ms: u64,
) -> bool {
    match write.expires_at_ms {
        // A confirm: the seat is booked for good.
        None => status != SeatStatus::Booked,
        Some(expires) => {
            let read_end = read.complete_index.unwrap_or(u64::MAX);
            let released = releases
                .get(write.lock)
                .is_some_and(|invokes| invokes.iter().any(|invoke| *invoke < read_end));
            let before_expiry = read.effect_end_ms().saturating_add(slack_ms) < expires;
            status == SeatStatus::Available && before_expiry && !released
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::{assert_verdict, Builder};

    const TTL: u64 = 10_000;

    #[test]
    fn reads_that_follow_the_writes_are_fine() {
        let mut h = Builder::new();
        let l = h.invoke_lock(1, "s", &[0], TTL);
        h.ok_lock(l, "l1");
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "la");
        let x = h.invoke_release(1, "s", "l1", &[0]);
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "aa");
        h.ok(x);
        let l = h.invoke_lock(1, "s", &[1], TTL);
        h.ok_lock(l, "l2");
        h.sleep_ms(TTL);
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "aa");
        let r = h.invoke_session_read(1, "s", 5);
        h.ok_read(r, "aa");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
    }

    #[test]
    fn a_linearizable_read_missing_an_acknowledged_lock_is_caught() {
        let mut h = Builder::new();
        let l = h.invoke_lock(1, "s", &[0], TTL);
        h.ok_lock(l, "l1");
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "aa");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("stale-read"));
    }

    #[test]
    fn a_linearizable_read_missing_an_acknowledged_confirm_is_caught() {
        let mut h = Builder::new();
        let c = h.invoke_confirm(1, "s", "l1", &[1]);
        h.ok(c);
        let r = h.invoke_read(2, "s");
        h.ok_read(r, "al");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("stale-read"));
    }

    #[test]
    fn a_session_read_missing_its_own_write_is_caught_but_not_others() {
        let mut h = Builder::new();
        let l = h.invoke_lock(1, "s", &[0], TTL);
        h.ok_lock(l, "l1");
        // Another process's session read need not see process 1's lock.
        let r = h.invoke_session_read(2, "s", 1);
        h.ok_read(r, "aa");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
        let r = h.invoke_session_read(1, "s", 1);
        h.ok_read(r, "aa");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("stale-read"));
    }

    #[test]
    fn an_answer_at_another_consistency_is_caught() {
        let mut h = Builder::new();
        let r = h.invoke_read(2, "s");
        h.complete(
            r,
            crate::history::OpType::Ok,
            serde_json::json!({"seats": ["available"], "served": "stale"}),
        );
        assert_verdict(
            &h.check(NAME),
            Validity::Invalid,
            Some("consistency-mismatch"),
        );
    }
}
