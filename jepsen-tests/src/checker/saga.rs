//! The booking saga's money promise, judged on the final state: every booking is either
//! confirmed and paid exactly its price once, or not confirmed and charged nothing (its
//! payments failed, were cancelled, or were refunded in full). Together with
//! `double_booking` and `lost_confirm` (a seat is booked only by a confirmed booking),
//! this is "every seat is booked with a completed payment or free with no net charge".
//!
//! Evidence: the final linearizable bookings read and the gateway's own books (every
//! payment it holds), taken after the saga settled. A payment still pending at the
//! gateway after the settling bound is an anomaly: the saga must resolve every
//! payment. Unlike the other checkers this one needs the gateway's books, so it runs
//! at the end of a run (not on a history file alone).

use super::{Anomaly, CheckOptions, CheckResult};
use crate::history::BookingRecord;
use gateway::wire::PaymentObject;
use std::collections::BTreeMap;

/// What the gateway holds of a payment now: captured minus refunded.
fn net_charge(payment: &PaymentObject) -> u64 {
    match payment.status.as_str() {
        "succeeded" | "refunded" => payment.amount_minor.saturating_sub(payment.refunded_minor),
        _ => 0,
    }
}

pub fn check(
    bookings: &[BookingRecord],
    payments: &[PaymentObject],
    settled: bool,
    options: &CheckOptions,
) -> CheckResult {
    let mut result = CheckResult::new("saga");
    let mut by_booking: BTreeMap<&str, Vec<&PaymentObject>> = BTreeMap::new();
    for payment in payments {
        match payment.metadata.get("booking_id") {
            Some(booking) => by_booking
                .entry(booking.as_str())
                .or_default()
                .push(payment),
            None => result.anomaly(
                Anomaly::new(
                    "orphan-payment",
                    format!("payment {} names no booking", payment.id),
                    vec![],
                ),
                options,
            ),
        }
        if payment.status == "pending" {
            result.anomaly(
                Anomaly::new(
                    "unresolved-payment",
                    format!(
                        "payment {} of {:?} is still pending after the saga had time to settle",
                        payment.id,
                        payment.metadata.get("booking_id")
                    ),
                    vec![],
                ),
                options,
            );
        }
    }
    let (mut paid, mut free) = (0usize, 0usize);
    for booking in bookings {
        let held = by_booking
            .remove(booking.booking.as_str())
            .unwrap_or_default();
        let charged: u64 = held.iter().map(|p| net_charge(p)).sum();
        if booking.status == "confirmed" {
            let fine = held.len() == 1 && charged == held[0].amount_minor;
            // Bookings confirmed outside the saga (no payment) are not this workload's.
            if !held.is_empty() && !fine {
                result.anomaly(
                    Anomaly::new(
                        "confirmed-not-paid-once",
                        format!(
                            "{} is confirmed but the gateway holds {charged} over {} payments",
                            booking.booking,
                            held.len()
                        ),
                        vec![],
                    ),
                    options,
                );
            }
            paid += 1;
        } else {
            if charged > 0 {
                result.anomaly(
                    Anomaly::new(
                        "charged-not-booked",
                        format!(
                            "{} is {} but the gateway still holds {charged} of the customer's money",
                            booking.booking, booking.status
                        ),
                        vec![],
                    ),
                    options,
                );
            }
            free += 1;
        }
    }
    for (booking, held) in by_booking {
        let charged: u64 = held.iter().map(|p| net_charge(p)).sum();
        if charged > 0 {
            result.anomaly(
                Anomaly::new(
                    "charged-unknown-booking",
                    format!("the gateway holds {charged} for {booking}, which no final read shows"),
                    vec![],
                ),
                options,
            );
        }
    }
    if !settled {
        result.note("the ledger still had open payments at the settling bound");
    }
    result.note(format!(
        "{} payments; {paid} bookings confirmed and paid, {free} not confirmed",
        payments.len()
    ));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;

    fn booking(id: &str, status: &str) -> BookingRecord {
        BookingRecord {
            show: "mumbai-1".into(),
            booking: id.into(),
            lock: id.into(),
            user: 1,
            seats: vec![0],
            status: status.into(),
            created_at_ms: 0,
            expires_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn payment(id: &str, booking: &str, status: &str, refunded: u64) -> PaymentObject {
        PaymentObject {
            id: id.into(),
            status: status.into(),
            version: 2,
            amount_minor: 100,
            currency: "INR".into(),
            method: "sandbox-approve".into(),
            metadata: [("booking_id".to_owned(), booking.to_owned())].into(),
            payment_url: String::new(),
            refunded_minor: refunded,
            failure_reason: None,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn paid_confirmed_and_uncharged_free_bookings_are_valid() {
        let bookings = [
            booking("b1", "confirmed"),
            booking("b2", "released"),
            booking("b3", "expired"),
            booking("b4", "expired"),
        ];
        let payments = [
            payment("p1", "b1", "succeeded", 0),
            payment("p2", "b2", "failed", 0),
            payment("p3", "b3", "canceled", 0),
            payment("p4", "b4", "refunded", 100),
        ];
        let result = check(&bookings, &payments, true, &CheckOptions::default());
        assert_eq!(result.valid, Validity::Valid, "{result:?}");
    }

    #[test]
    fn every_broken_promise_is_named() {
        let options = CheckOptions::default();
        let kinds = |bookings: &[BookingRecord], payments: &[PaymentObject]| {
            let result = check(bookings, payments, true, &options);
            assert_eq!(result.valid, Validity::Invalid);
            result
                .anomalies
                .iter()
                .map(|a| a.kind.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(
                &[booking("b1", "expired")],
                &[payment("p1", "b1", "succeeded", 0)]
            ),
            ["charged-not-booked"]
        );
        assert_eq!(
            kinds(
                &[booking("b1", "expired")],
                &[payment("p1", "b1", "refunded", 40)]
            ),
            ["charged-not-booked"]
        );
        assert_eq!(
            kinds(
                &[booking("b1", "confirmed")],
                &[
                    payment("p1", "b1", "succeeded", 0),
                    payment("p2", "b1", "succeeded", 0)
                ]
            ),
            ["confirmed-not-paid-once"]
        );
        assert_eq!(
            kinds(
                &[booking("b1", "confirmed")],
                &[payment("p1", "b1", "failed", 0)]
            ),
            ["confirmed-not-paid-once"]
        );
        assert_eq!(
            kinds(
                &[booking("b1", "pending_payment")],
                &[payment("p1", "b1", "pending", 0)]
            ),
            ["unresolved-payment"]
        );
        assert_eq!(
            kinds(&[], &[payment("p1", "b9", "succeeded", 0)]),
            ["charged-unknown-booking"]
        );
    }
}
