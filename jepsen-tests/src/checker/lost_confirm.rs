//! No lost acknowledged confirm: every confirm that was acknowledged shows as booked in
//! the final read, and its booking as `confirmed` in the final `read-bookings`. The
//! other way round, a seat booked in the final read must have been confirmed by some
//! call (acknowledged or unknown): nothing books itself.
//!
//! The final read is taken after every client stopped and the cluster healed; without
//! one there is no evidence, and the answer is `unknown`.

use crate::checker::{
    too_large, Action, Anomaly, Call, CheckOptions, CheckResult, Outcome, Prepared,
};
use crate::history::{BookingsValue, SeatStatus};
use std::collections::{BTreeMap, BTreeSet};

pub const NAME: &str = "lost-confirm";

pub fn check(prepared: &Prepared, options: &CheckOptions) -> CheckResult {
    let mut result = CheckResult::new(NAME);
    if let Some(why) = too_large(prepared, options) {
        result.unknown(why);
        return result;
    }
    // The last final read of each show, and the last bookings read.
    let mut finals: BTreeMap<&str, (&Call, &Vec<SeatStatus>)> = BTreeMap::new();
    let mut bookings: Option<(&Call, &BookingsValue)> = None;
    for call in prepared.calls.iter().filter(|c| c.is_ok()) {
        match &call.action {
            Action::Read(v) if v.final_read => {
                if let Some(seats) = &v.seats {
                    finals.insert(&v.show, (call, seats));
                }
            }
            Action::Bookings(v) => bookings = Some((call, v)),
            _ => {}
        }
    }
    // Seats that some confirm, acknowledged or not, may have booked.
    let mut may_book: BTreeSet<(&str, u32)> = BTreeSet::new();
    let mut checked = 0usize;
    for confirm in &prepared.calls {
        let Action::Confirm(v) = &confirm.action else {
            continue;
        };
        if confirm.outcome != Outcome::Fail {
            may_book.extend(v.seats.iter().map(|seat| (v.show.as_str(), *seat)));
        }
        if !confirm.is_ok() {
            continue;
        }
        let Some((read, seats)) = finals.get(v.show.as_str()) else {
            result.unknown(format!(
                "no final read of {} to check confirms against",
                v.show
            ));
            continue;
        };
        if !confirm.precedes(read) {
            result.unknown(format!(
                "the final read {} does not follow confirm {}",
                read.invoke_index, confirm.invoke_index
            ));
            continue;
        }
        checked += 1;
        for seat in &v.seats {
            let shown = seats.get(*seat as usize);
            if shown != Some(&SeatStatus::Booked) {
                let detail = format!(
                    "confirm of {} was acknowledged but seat {seat} of {} is {shown:?} in \
                     the final read",
                    v.lock, v.show
                );
                let mut ops = confirm.indexes();
                ops.extend(read.indexes());
                result.anomaly(Anomaly::new("lost-confirm", detail, ops), options);
            }
        }
        if let Some((read, records)) = bookings.filter(|(read, _)| confirm.precedes(read)) {
            if !records.users.contains(&v.user) {
                continue;
            }
            let record = records.bookings.iter().flatten().find(|r| r.lock == v.lock);
            let status = record.map(|r| r.status.as_str());
            if status != Some("confirmed") {
                let detail = format!(
                    "confirm of {} was acknowledged but the final bookings read shows {status:?}",
                    v.lock
                );
                let mut ops = confirm.indexes();
                ops.extend(read.indexes());
                result.anomaly(Anomaly::new("lost-confirm", detail, ops), options);
            }
        }
    }
    for (show, (read, seats)) in &finals {
        for (seat, status) in seats.iter().enumerate() {
            if *status == SeatStatus::Booked && !may_book.contains(&(*show, seat as u32)) {
                let detail = format!("seat {seat} of {show} is booked but nobody confirmed it");
                result.anomaly(
                    Anomaly::new("phantom-booking", detail, read.indexes()),
                    options,
                );
            }
        }
    }
    result.note(format!(
        "{checked} acknowledged confirms checked against {} final reads",
        finals.len()
    ));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::{assert_verdict, record, Builder};
    use crate::checker::Validity;

    fn confirmed_then(final_statuses: &str, final_record_status: &str) -> Builder {
        let mut h = Builder::new();
        let l = h.invoke_lock(0, "s", &[1, 2], 10_000);
        h.ok_lock(l, "l1");
        let c = h.invoke_confirm(0, "s", "l1", &[1, 2]);
        h.ok(c);
        let r = h.invoke_final_read(9, "s");
        h.ok_read(r, final_statuses);
        let b = h.invoke_bookings(9, &[0]);
        let now = h.now_ms();
        let records = [record("l1", &[1, 2], final_record_status, now, now)];
        h.ok_bookings(b, &records);
        h
    }

    #[test]
    fn an_acknowledged_confirm_in_the_final_read_is_fine() {
        let h = confirmed_then("abba", "confirmed");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
    }

    #[test]
    fn an_acknowledged_confirm_missing_from_the_final_read_is_caught() {
        let h = confirmed_then("abaa", "confirmed");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("lost-confirm"));
        let h = confirmed_then("abba", "expired");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("lost-confirm"));
    }

    #[test]
    fn a_booked_seat_nobody_confirmed_is_caught() {
        let h = confirmed_then("bbba", "confirmed");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("phantom-booking"));
    }

    #[test]
    fn without_a_final_read_confirms_cannot_be_judged() {
        let mut h = Builder::new();
        let c = h.invoke_confirm(0, "s", "l1", &[1]);
        h.ok(c);
        assert_verdict(&h.check(NAME), Validity::Unknown, None);
    }

    #[test]
    fn an_unknown_confirm_may_have_booked_its_seat() {
        let mut h = Builder::new();
        let c = h.invoke_confirm(0, "s", "l1", &[0]);
        h.info(c);
        let r = h.invoke_final_read(9, "s");
        h.ok_read(r, "ba");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
    }
}
