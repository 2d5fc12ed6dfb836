//! The ledger's invariants in one function, used by debug assertions, the property
//! tests and replica comparisons alike.

use crate::ids::{BookingId, SeatId};
use crate::ledger::Ledger;
use crate::model::{BookingStatus, SeatState};
use std::collections::BTreeMap;

impl Ledger {
    /// Checks every invariant of the ledger and names the first one broken.
    ///
    /// - every record is filed under its own id (a snapshot from elsewhere may not be);
    /// - a seat is held by at most one lock or booking, and that holder lists the seat;
    /// - every seat of a pending booking is `Locked` by it, of a confirmed one `Booked`
    ///   by it, and no seat points at an ended booking;
    /// - a user holds at most the per-show cap of seats;
    /// - the derived indexes agree with the state;
    /// - support tickets start with their customer's message and stay within their
    ///   bounds; consumer cursors never replay past their own position.
    pub fn check_invariants(&self) -> Result<(), String> {
        let state = &self.state;
        check_keys("theater", state.theaters.iter().map(|(k, v)| (k, &v.id)))?;
        check_keys("show", state.shows.iter().map(|(k, v)| (k, &v.id)))?;
        check_keys("booking", state.bookings.iter().map(|(k, v)| (k, &v.id)))?;
        check_keys("user", state.users.iter().map(|(k, v)| (k, &v.id)))?;
        let mut seen: BTreeMap<BookingId, Vec<SeatId>> = BTreeMap::new();
        for (show_id, seats) in &state.seats {
            let show = state
                .shows
                .get(show_id)
                .ok_or(format!("seats of unknown show {show_id}"))?;
            let screen = state
                .theaters
                .get(&show.theater)
                .and_then(|theater| theater.screens.get(usize::from(show.screen.0)))
                .ok_or(format!("show {show_id} is on an unknown theater or screen"))?;
            if seats.len() != screen.seat_count() as usize {
                return Err(format!(
                    "show {show_id} has {} seats, its screen {}",
                    seats.len(),
                    screen.seat_count()
                ));
            }
            for (position, seat) in seats.iter().enumerate() {
                let (holder, wanted) = match seat {
                    SeatState::Available => continue,
                    SeatState::Locked(lock) => {
                        (BookingId::of_lock(*lock), BookingStatus::PendingPayment)
                    }
                    SeatState::Booked(booking) => (*booking, BookingStatus::Confirmed),
                };
                let booking = state.bookings.get(&holder).ok_or(format!(
                    "seat {position} of {show_id} held by unknown {holder}"
                ))?;
                if booking.status != wanted || booking.show != *show_id {
                    return Err(format!(
                        "seat {position} of {show_id} held by {holder} which is \
                        {} for show {}",
                        booking.status.as_str(),
                        booking.show
                    ));
                }
                seen.entry(holder)
                    .or_default()
                    .push(SeatId(position as u32));
            }
        }
        for booking in state.bookings.values() {
            let held = seen.remove(&booking.id).unwrap_or_default();
            let holds = booking.status.holds_seats();
            let expected = if holds {
                booking.seats.clone()
            } else {
                Vec::new()
            };
            if held != expected {
                return Err(format!(
                    "booking {} ({}) lists seats {:?} but holds {:?}",
                    booking.id,
                    booking.status.as_str(),
                    booking.seats,
                    held
                ));
            }
            let pending = booking.status == BookingStatus::PendingPayment;
            let indexed = self
                .indexes
                .lock_expiry
                .contains(&(booking.expires_at, booking.lock_id()));
            if pending != indexed {
                return Err(format!("expiry index disagrees about {}", booking.id));
            }
            if !self.indexes.by_user.contains(&(booking.user, booking.id)) {
                return Err(format!("user index misses {}", booking.id));
            }
            let key = (booking.user, booking.show, booking.id);
            if self.indexes.holding.contains(&key) != holds {
                return Err(format!("holding index disagrees about {}", booking.id));
            }
            let cap = u64::from(self.limits.seats_per_user_per_show_max);
            if holds && self.seats_held(booking.user, booking.show) > cap {
                return Err(format!(
                    "{} holds more than {cap} seats of {}",
                    booking.user, booking.show
                ));
            }
        }
        if self.indexes.lock_expiry.len()
            != state
                .bookings
                .values()
                .filter(|b| b.status == BookingStatus::PendingPayment)
                .count()
        {
            return Err("expiry index has entries for no pending booking".into());
        }
        if self.indexes.holding.len()
            != state
                .bookings
                .values()
                .filter(|b| b.status.holds_seats())
                .count()
        {
            return Err("holding index has entries for no holding booking".into());
        }
        if !state.requests.is_empty() {
            return Err("request records in the state instead of the request table".into());
        }
        self.requests.check()?;
        self.check_audit()?;
        self.check_ticket_invariants()?;
        self.check_cursor_invariants()?;
        self.check_payment_invariants()?;
        self.check_coupon_invariants()?;
        self.check_referral_invariants()?;
        self.check_channel_invariants()?;
        Ok(())
    }
}

/// Every `(key, record's own id)` pair agrees; the derived indexes are built from the
/// records' ids and looked up by keys, so a mismatch would make them disagree.
fn check_keys<'a, K: PartialEq + std::fmt::Display + 'a>(
    what: &str,
    pairs: impl Iterator<Item = (&'a K, &'a K)>,
) -> Result<(), String> {
    for (key, id) in pairs {
        if key != id {
            return Err(format!("{what} {id} is filed under the key {key}"));
        }
    }
    Ok(())
}
