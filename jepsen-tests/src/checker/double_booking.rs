//! No double booking: no seat is ever confirmed for two bookings.
//!
//! Evidence: every acknowledged confirm (with the seats of its lock), and every booking
//! the final `read-bookings` shows as `confirmed` (which covers confirms whose answer was
//! lost). The workloads never cancel a booking, so two confirmed bookings of one seat
//! can never be "at different times": any two are a double booking.

use crate::checker::{too_large, Action, Anomaly, CheckOptions, CheckResult, Outcome, Prepared};
use std::collections::BTreeMap;

pub const NAME: &str = "double-booking";

pub fn check(prepared: &Prepared, options: &CheckOptions) -> CheckResult {
    let mut result = CheckResult::new(NAME);
    if let Some(why) = too_large(prepared, options) {
        result.unknown(why);
        return result;
    }
    // (show, seat) -> lock -> the history indexes that show it confirmed.
    let mut confirmed: BTreeMap<(String, u32), BTreeMap<String, Vec<u64>>> = BTreeMap::new();
    let mut evidence = 0usize;
    for call in &prepared.calls {
        match (&call.action, call.outcome) {
            (Action::Confirm(v), Outcome::Ok) => {
                evidence += 1;
                for seat in &v.seats {
                    let by_lock = confirmed.entry((v.show.clone(), *seat)).or_default();
                    by_lock
                        .entry(v.lock.clone())
                        .or_default()
                        .extend(call.indexes());
                }
            }
            (Action::Bookings(v), Outcome::Ok) => {
                for record in v.bookings.iter().flatten() {
                    if record.status != "confirmed" {
                        continue;
                    }
                    evidence += 1;
                    for seat in &record.seats {
                        let by_lock = confirmed.entry((record.show.clone(), *seat)).or_default();
                        by_lock
                            .entry(record.lock.clone())
                            .or_default()
                            .extend(call.indexes());
                    }
                }
            }
            _ => {}
        }
    }
    for ((show, seat), by_lock) in &confirmed {
        if by_lock.len() > 1 {
            let locks: Vec<&String> = by_lock.keys().collect();
            let mut ops: Vec<u64> = by_lock.values().flatten().copied().collect();
            ops.sort_unstable();
            ops.dedup();
            let detail = format!("seat {seat} of {show} is confirmed for bookings {locks:?}");
            result.anomaly(Anomaly::new("double-booking", detail, ops), options);
        }
    }
    result.note(format!(
        "{evidence} confirms and confirmed records over {} seats",
        confirmed.len()
    ));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::{assert_verdict, record, Builder};
    use crate::checker::Validity;

    #[test]
    fn confirms_of_different_seats_are_fine() {
        let mut h = Builder::new();
        let c = h.invoke_confirm(1, "s", "l1", &[0, 1]);
        h.ok(c);
        let c = h.invoke_confirm(2, "s", "l2", &[2]);
        h.ok(c);
        let b = h.invoke_bookings(9, &[1, 2]);
        let now = h.now_ms();
        h.ok_bookings(
            b,
            &[
                record("l1", &[0, 1], "confirmed", now + 5_000, now),
                record("l3", &[0], "expired", now, now),
            ],
        );
        assert_verdict(&h.check(NAME), Validity::Valid, None);
    }

    #[test]
    fn two_confirms_of_one_seat_are_caught() {
        let mut h = Builder::new();
        let c = h.invoke_confirm(1, "s", "l1", &[0, 1]);
        h.ok(c);
        let c = h.invoke_confirm(2, "s", "l2", &[1, 2]);
        h.ok(c);
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("double-booking"));
    }

    #[test]
    fn a_lost_confirm_that_the_final_read_shows_counts_too() {
        let mut h = Builder::new();
        let c = h.invoke_confirm(1, "s", "l1", &[4]);
        h.ok(c);
        let c = h.invoke_confirm(2, "s", "l2", &[4]);
        h.info(c);
        let b = h.invoke_bookings(9, &[1, 2]);
        let now = h.now_ms();
        h.ok_bookings(b, &[record("l2", &[4], "confirmed", now + 5_000, now)]);
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("double-booking"));
    }
}
