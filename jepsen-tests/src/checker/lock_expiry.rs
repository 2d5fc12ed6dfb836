//! Locks live exactly their TTL on the log clock, and no confirm is accepted after its
//! lock expired on the log clock.
//!
//! # Evidence
//! - A lock's `ok` carries `expires_at_ms`, which the ledger computed as the log time of
//!   the lock plus its TTL. That log time is the leader's wall clock at proposal, so it
//!   must lie between the lock's invoke and completion (within `clock_slack_ms`):
//!   otherwise the lock lives longer or shorter than asked (`lock-ttl`).
//! - A confirm's command is stamped no earlier than the confirm's invoke, so a confirm
//!   acknowledged although it was invoked at or after its lock's expiry was accepted on
//!   an expired lock (`confirm-after-expiry`, client-clock evidence).
//! - The final `read-bookings` holds, for each confirmed booking, `updated_at_ms`: the
//!   log time of its confirm (bookings are never changed after a confirm in these
//!   workloads). It must be before `expires_at_ms` (`confirm-after-expiry`, log-time
//!   evidence), and `expires_at_ms` must be what the lock's `ok` said (`expiry-changed`;
//!   the workloads never extend locks).
//!
//! An acknowledged confirm without a booking record has no log-time evidence; then the
//! answer is `unknown` unless another anomaly was found.

use crate::checker::{too_large, Action, Anomaly, Call, CheckOptions, CheckResult, Prepared};
use crate::history::{BookingRecord, LockValue};
use std::collections::BTreeMap;

pub const NAME: &str = "lock-expiry";

pub fn check(prepared: &Prepared, options: &CheckOptions) -> CheckResult {
    let mut result = CheckResult::new(NAME);
    if let Some(why) = too_large(prepared, options) {
        result.unknown(why);
        return result;
    }
    let slack = options.clock_slack_ms;
    let mut locks: BTreeMap<&str, (&Call, &LockValue, u64)> = BTreeMap::new();
    let mut records: BTreeMap<&str, (&Call, &BookingRecord)> = BTreeMap::new();
    for call in prepared.calls.iter().filter(|c| c.is_ok()) {
        match &call.action {
            Action::Lock(v) => {
                if let (Some(lock), Some(expires)) = (&v.lock, v.expires_at_ms) {
                    locks.insert(lock, (call, v, expires));
                    check_ttl(call, v, expires, slack, &mut result, options);
                }
            }
            Action::Bookings(v) => {
                for record in v.bookings.iter().flatten() {
                    records.insert(&record.lock, (call, record));
                }
            }
            _ => {}
        }
    }
    for (call, record) in records.values() {
        if record.status == "confirmed" && record.updated_at_ms >= record.expires_at_ms {
            let detail = format!(
                "booking {} was confirmed at log time {} ms, at or after its lock expired at {} ms",
                record.booking, record.updated_at_ms, record.expires_at_ms
            );
            let anomaly = Anomaly::new("confirm-after-expiry", detail, call.indexes());
            result.anomaly(anomaly, options);
        }
        if let Some((lock_call, _, expires)) = locks.get(record.lock.as_str()) {
            if *expires != record.expires_at_ms {
                let detail = format!(
                    "lock {} was acknowledged to expire at {expires} ms; the ledger holds {} ms",
                    record.lock, record.expires_at_ms
                );
                let mut ops = lock_call.indexes();
                ops.extend(call.indexes());
                result.anomaly(Anomaly::new("expiry-changed", detail, ops), options);
            }
        }
    }
    let (mut by_client_clock, mut by_log_time) = (0usize, 0usize);
    for confirm in prepared.calls.iter().filter(|c| c.is_ok()) {
        let Action::Confirm(v) = &confirm.action else {
            continue;
        };
        match locks.get(v.lock.as_str()) {
            Some((lock_call, _, expires)) => {
                by_client_clock += 1;
                if confirm.invoke_ms.saturating_sub(slack) >= *expires {
                    let detail = format!(
                        "confirm of {} was invoked at {} ms, after its lock expired at \
                         {expires} ms, and was acknowledged",
                        v.lock, confirm.invoke_ms
                    );
                    let mut ops = lock_call.indexes();
                    ops.extend(confirm.indexes());
                    let anomaly = Anomaly::new("confirm-after-expiry", detail, ops);
                    result.anomaly(anomaly, options);
                }
            }
            None => result.note(format!("confirm of {} has no acknowledged lock", v.lock)),
        }
        match records.get(v.lock.as_str()) {
            Some(_) => by_log_time += 1,
            None => result.unknown(format!(
                "confirm of {} (op {}) has no booking record: no log-time evidence",
                v.lock, confirm.invoke_index
            )),
        }
    }
    result.note(format!(
        "{} locks checked against their TTL; {by_client_clock} confirms checked by the client \
         clock, {by_log_time} by their log time",
        locks.len()
    ));
    result
}

/// The lock's log time, `expires - ttl`, must fall within its call.
fn check_ttl(
    call: &Call,
    lock: &LockValue,
    expires: u64,
    slack: u64,
    result: &mut CheckResult,
    options: &CheckOptions,
) {
    let stamped = expires.saturating_sub(lock.ttl_ms);
    let earliest = call.invoke_ms.saturating_sub(slack);
    let latest = call.effect_end_ms().saturating_add(slack);
    if stamped < earliest || stamped > latest {
        let detail = format!(
            "lock {:?} with TTL {} ms expires at {expires} ms, so it was stamped at {stamped} \
             ms, outside its call [{}, {}] ms",
            lock.lock,
            lock.ttl_ms,
            call.invoke_ms,
            call.effect_end_ms()
        );
        result.anomaly(Anomaly::new("lock-ttl", detail, call.indexes()), options);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::{assert_verdict, record, Builder};
    use crate::checker::Validity;

    const TTL: u64 = 10_000;

    /// A lock, a confirm `wait_ms` later, and the final record with the given log time
    /// of the confirm (relative to the lock's expiry).
    fn history(wait_ms: u64, confirmed_before_expiry_ms: i64) -> Builder {
        let mut h = Builder::new();
        let l = h.invoke_lock(0, "s", &[3], TTL);
        h.ok_lock(l, "l1");
        let expires = h.now_ms() - 1 + TTL;
        h.sleep_ms(wait_ms);
        let c = h.invoke_confirm(0, "s", "l1", &[3]);
        h.ok(c);
        let b = h.invoke_bookings(9, &[0]);
        let updated = (expires as i64 - confirmed_before_expiry_ms) as u64;
        h.ok_bookings(b, &[record("l1", &[3], "confirmed", expires, updated)]);
        h
    }

    #[test]
    fn a_confirm_inside_the_lock_life_is_fine() {
        assert_verdict(&history(100, 9_000).check(NAME), Validity::Valid, None);
    }

    #[test]
    fn a_confirm_after_expiry_is_caught_by_the_client_clock() {
        let h = history(TTL + 50, 9_000);
        assert_verdict(
            &h.check(NAME),
            Validity::Invalid,
            Some("confirm-after-expiry"),
        );
    }

    #[test]
    fn a_confirm_after_expiry_is_caught_by_its_log_time() {
        let h = history(100, -5);
        assert_verdict(
            &h.check(NAME),
            Validity::Invalid,
            Some("confirm-after-expiry"),
        );
    }

    #[test]
    fn a_lock_living_longer_than_its_ttl_is_caught() {
        let mut h = Builder::new();
        let l = h.invoke_lock(0, "s", &[3], TTL);
        let expires = h.now_ms() + TTL + 60_000;
        h.ok_lock_expiring(l, "l1", expires);
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("lock-ttl"));
    }

    #[test]
    fn a_confirm_without_log_time_evidence_is_unknown() {
        let mut h = Builder::new();
        let l = h.invoke_lock(0, "s", &[3], TTL);
        h.ok_lock(l, "l1");
        let c = h.invoke_confirm(0, "s", "l1", &[3]);
        h.ok(c);
        assert_verdict(&h.check(NAME), Validity::Unknown, None);
    }
}
