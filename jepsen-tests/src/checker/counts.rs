//! Seat counts are never negative, never over capacity, and add up: a show's
//! `available + locked + booked` is its capacity in every `read-counts`, and every seat
//! map has exactly `capacity` seats. Booked seats cannot outnumber the seats that
//! confirms invoked so far could have booked.

use crate::checker::{
    too_large, Action, Anomaly, Call, CheckOptions, CheckResult, Outcome, Prepared,
};
use std::collections::{BTreeMap, BTreeSet};

pub const NAME: &str = "counts";

pub fn check(prepared: &Prepared, options: &CheckOptions) -> CheckResult {
    let mut result = CheckResult::new(NAME);
    if let Some(why) = too_large(prepared, options) {
        result.unknown(why);
        return result;
    }
    let mut capacity: BTreeMap<&str, u64> = BTreeMap::new();
    for call in &prepared.calls {
        if let Action::Counts(v) = &call.action {
            capacity.insert(&v.show, v.capacity);
        }
    }
    // Confirms (acknowledged or unknown) by invoke; reads by completion. Sweeping both
    // gives, at each read, the seats that confirms invoked before it ended could book.
    let mut confirms: Vec<(u64, &str, &[u32])> = Vec::new();
    for call in &prepared.calls {
        if let (Action::Confirm(v), Outcome::Ok | Outcome::Info) = (&call.action, call.outcome) {
            confirms.push((call.invoke_index, &v.show, &v.seats));
        }
    }
    confirms.sort_by_key(|(invoke, _, _)| *invoke);
    let mut reads: Vec<&Call> = prepared.calls.iter().filter(|c| c.is_ok()).collect();
    reads.sort_by_key(|c| c.complete_index);
    let mut confirmable: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    let mut next_confirm = 0;
    let (mut counts_checked, mut maps_checked) = (0usize, 0usize);
    for call in reads {
        let read_end = call.complete_index.unwrap_or(u64::MAX);
        while let Some((invoke, show, seats)) = confirms.get(next_confirm) {
            if *invoke >= read_end {
                break;
            }
            confirmable.entry(show).or_default().extend(seats.iter());
            next_confirm += 1;
        }
        match &call.action {
            Action::Counts(v) => {
                counts_checked += 1;
                let (a, l, b) = (
                    v.available.unwrap_or(0),
                    v.locked.unwrap_or(0),
                    v.booked.unwrap_or(0),
                );
                let cap = i64::try_from(v.capacity).unwrap_or(i64::MAX);
                let each_in_range = [a, l, b].iter().all(|n| (0..=cap).contains(n));
                if !each_in_range || a.saturating_add(l).saturating_add(b) != cap {
                    let detail = format!(
                        "{}: available {a}, locked {l}, booked {b} for capacity {cap}",
                        v.show
                    );
                    result.anomaly(Anomaly::new("bad-counts", detail, call.indexes()), options);
                }
                let possible = confirmable.get(v.show.as_str()).map_or(0, |s| s.len());
                if b > possible as i64 {
                    let detail = format!(
                        "{}: {b} seats booked but confirms so far could book only {possible}",
                        v.show
                    );
                    let anomaly = Anomaly::new("phantom-booked-count", detail, call.indexes());
                    result.anomaly(anomaly, options);
                }
            }
            Action::Read(v) => {
                let (Some(cap), Some(seats)) = (capacity.get(v.show.as_str()), &v.seats) else {
                    continue;
                };
                maps_checked += 1;
                if seats.len() as u64 != *cap {
                    let detail = format!(
                        "{}: the seat map has {} seats, the show {cap}",
                        v.show,
                        seats.len()
                    );
                    result.anomaly(
                        Anomaly::new("seat-map-size", detail, call.indexes()),
                        options,
                    );
                }
            }
            _ => {}
        }
    }
    result.note(format!(
        "{counts_checked} count reads and {maps_checked} seat maps checked"
    ));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::{assert_verdict, Builder};
    use crate::checker::Validity;

    #[test]
    fn counts_that_add_up_are_fine() {
        let mut h = Builder::new();
        let c = h.invoke_confirm(0, "s", "l1", &[0]);
        h.ok(c);
        let r = h.invoke_counts(1, "s", 4);
        h.ok_counts(r, 2, 1, 1);
        let r = h.invoke_read(1, "s");
        h.ok_read(r, "blaa");
        assert_verdict(&h.check(NAME), Validity::Valid, None);
    }

    #[test]
    fn negative_or_excess_counts_are_caught() {
        for (a, l, b) in [(5, -1, 0), (3, 1, 1), (0, 0, 0)] {
            let mut h = Builder::new();
            let r = h.invoke_counts(1, "s", 4);
            h.ok_counts(r, a, l, b);
            assert_verdict(&h.check(NAME), Validity::Invalid, Some("bad-counts"));
        }
    }

    #[test]
    fn booked_seats_nobody_confirmed_are_caught() {
        let mut h = Builder::new();
        let r = h.invoke_counts(1, "s", 4);
        h.ok_counts(r, 3, 0, 1);
        assert_verdict(
            &h.check(NAME),
            Validity::Invalid,
            Some("phantom-booked-count"),
        );
    }

    #[test]
    fn a_seat_map_of_the_wrong_size_is_caught() {
        let mut h = Builder::new();
        let r = h.invoke_counts(1, "s", 4);
        h.ok_counts(r, 4, 0, 0);
        let r = h.invoke_read(1, "s");
        h.ok_read(r, "aaaaa");
        assert_verdict(&h.check(NAME), Validity::Invalid, Some("seat-map-size"));
    }

    #[test]
    fn a_confirm_invoked_while_the_read_ran_may_show_in_it() {
        let mut h = Builder::new();
        let r = h.invoke_counts(1, "s", 4);
        let c = h.invoke_confirm(0, "s", "l1", &[2]);
        h.ok_counts(r, 3, 0, 1);
        h.info(c);
        assert_verdict(&h.check(NAME), Validity::Valid, None);
    }
}
