//! The catalog (theaters, screens, seat layouts, shows) and the seat inventory
//! (seat states and bookings) that the ledger owns.
//!
//! Append-only format: theaters, shows, seat states and bookings are stored in RocksDB
//! and snapshots with the codec's positional encoding. A new enum variant goes at the end
//! of its enum; any other change (a field added even at the end, removed, reordered or
//! retyped; a variant inserted or moved) needs a new store format version
//! (`store::FORMAT_VERSION`) with a migration; `tests/golden.rs` checks the bytes.
//!
//! These are plain data: they know how to describe themselves (seat labels, prices)
//! but never change themselves; every change goes through `Ledger::apply`.

use crate::ids::{BookingId, LockId, Millis, ScreenIndex, SeatId, ShowId, TheaterId, UserId};
use serde::{Deserialize, Serialize};

/// The price class of a seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Category {
    Normal,
    Premium,
    Vip,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Normal => "normal",
            Category::Premium => "premium",
            Category::Vip => "vip",
        }
    }
}

/// Price of one seat per category, in minor units (paise, cents) of the show's currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    pub normal_minor: u64,
    pub premium_minor: u64,
    pub vip_minor: u64,
}

impl Prices {
    pub fn of(&self, category: Category) -> u64 {
        match category {
            Category::Normal => self.normal_minor,
            Category::Premium => self.premium_minor,
            Category::Vip => self.vip_minor,
        }
    }
}

/// One row of a screen: a label ("A"), how many seats, and their category.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowSpec {
    pub label: String,
    pub seats: u16,
    pub category: Category,
}

/// A screen and its seat layout. Seats are numbered row by row from 0, so a `SeatId`
/// is the seat's position in this layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screen {
    pub name: String,
    pub rows: Vec<RowSpec>,
}

/// Where a seat is in its screen: the row label, its 1-based number in the row, and
/// its category.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatPlace {
    pub row: String,
    pub number: u16,
    pub category: Category,
}

impl Screen {
    pub fn seat_count(&self) -> u32 {
        self.rows.iter().map(|row| u32::from(row.seats)).sum()
    }

    /// The row and number of a seat, or `None` when the screen has no such seat.
    pub fn place(&self, seat: SeatId) -> Option<SeatPlace> {
        let mut first = 0u32;
        for row in &self.rows {
            let next = first + u32::from(row.seats);
            if seat.0 < next {
                let number = u16::try_from(seat.0 - first + 1).ok()?;
                return Some(SeatPlace {
                    row: row.label.clone(),
                    number,
                    category: row.category,
                });
            }
            first = next;
        }
        None
    }

    /// Every seat's category in layout order.
    pub fn categories(&self) -> impl Iterator<Item = Category> + '_ {
        self.rows
            .iter()
            .flat_map(|row| std::iter::repeat_n(row.category, row.seats.into()))
    }
}

/// A cinema or venue. Coordinates are in millionths of a degree so that the ledger
/// stays free of floating point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Theater {
    pub id: TheaterId,
    pub city: String,
    pub name: String,
    pub address: String,
    pub lat_micro_deg: i32,
    pub lon_micro_deg: i32,
    /// The user who may publish and cancel shows here (besides admins, whom the api
    /// authorises).
    pub owner: UserId,
    pub screens: Vec<Screen>,
    pub created_at: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShowStatus {
    Published,
    Cancelled,
}

/// One performance on one screen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Show {
    pub id: ShowId,
    pub theater: TheaterId,
    pub screen: ScreenIndex,
    pub title: String,
    pub genre: String,
    pub start_ms: Millis,
    pub end_ms: Millis,
    pub prices: Prices,
    /// ISO 4217 code such as "INR".
    pub currency: String,
    pub status: ShowStatus,
    pub published_at: Millis,
}

/// The state of one seat of one show. Sixteen bytes, so a million seats fit in 16 MB.
///
/// A `Locked` seat whose lock has passed its `expires_at` on the shard clock is free in
/// every decision even before the sweeper marks it so: correctness never waits for the
/// sweeper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SeatState {
    #[default]
    Available,
    Locked(LockId),
    Booked(BookingId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BookingStatus {
    /// Seats are locked and wait for payment until `expires_at`.
    PendingPayment,
    Confirmed,
    /// The lock ran out before a confirm.
    Expired,
    /// The owner released the lock before paying.
    Released,
    /// A confirmed booking was cancelled (by its owner or because the show was).
    Cancelled,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::PendingPayment => "pending_payment",
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Expired => "expired",
            BookingStatus::Released => "released",
            BookingStatus::Cancelled => "cancelled",
        }
    }

    /// Whether a booking in this status holds its seats (a pending one only while its
    /// lock is live: `Booking::holds_seats`).
    pub fn holds_seats(self) -> bool {
        matches!(
            self,
            BookingStatus::PendingPayment | BookingStatus::Confirmed
        )
    }
}

/// A lock and the booking it becomes share one record: the lock is the booking while
/// its status is `PendingPayment`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    pub id: BookingId,
    pub show: ShowId,
    pub user: UserId,
    /// Sorted, without duplicates.
    pub seats: Vec<SeatId>,
    pub total_price_minor: u64,
    pub currency: String,
    pub status: BookingStatus,
    pub created_at: Millis,
    /// When the lock stops being live; meaningful while `PendingPayment`.
    pub expires_at: Millis,
    pub payment_ref: Option<String>,
    /// What must be paid back to the customer after a cancel of a paid booking.
    pub refund_due_minor: u64,
    pub updated_at: Millis,
}

impl Booking {
    pub fn lock_id(&self) -> LockId {
        self.id.lock()
    }

    /// True while the lock holds its seats at shard time `clock`.
    pub fn is_live_lock(&self, clock: Millis) -> bool {
        self.status == BookingStatus::PendingPayment && clock < self.expires_at
    }

    /// True while the booking keeps its seats from others at shard time `clock`.
    pub fn holds_seats(&self, clock: Millis) -> bool {
        self.status == BookingStatus::Confirmed || self.is_live_lock(clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_places_follow_the_layout() {
        let screen = Screen {
            name: "Audi 1".into(),
            rows: vec![
                RowSpec {
                    label: "A".into(),
                    seats: 2,
                    category: Category::Normal,
                },
                RowSpec {
                    label: "B".into(),
                    seats: 3,
                    category: Category::Vip,
                },
            ],
        };
        assert_eq!(screen.seat_count(), 5);
        let place = screen.place(SeatId(2)).unwrap();
        assert_eq!(
            (place.row.as_str(), place.number, place.category),
            ("B", 1, Category::Vip)
        );
        assert!(screen.place(SeatId(5)).is_none());
        assert_eq!(screen.categories().count(), 5);
        assert_eq!(std::mem::size_of::<SeatState>(), 16);
    }
}
