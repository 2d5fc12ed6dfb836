//! Read-only questions to the ledger and their answers.
//!
//! Queries see the state at the shard clock of the last applied command: a lock whose
//! expiry has passed on that clock shows as available even before the sweep frees it.

use crate::accounts::User;
use crate::ids::{BookingId, Millis, RequestId, SeatId, ShowId, TheaterId, UserId};
use crate::ledger::Ledger;
use crate::limits::LimitName;
use crate::model::{Booking, Category, SeatState, Show, Theater};
use crate::outcome::{Outcome, Rejection};
use crate::payments::{Payment, RatingSummary};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// Every seat of a show with its place, price and status.
    SeatMap {
        show: ShowId,
    },
    /// The seat map, unless its [`SeatMap::digest`] is still `digest`: then only
    /// [`QueryResponse::SeatMapUnchanged`] (a reader that kept the map it rendered
    /// skips the transfer and the rendering).
    SeatMapIfChanged {
        show: ShowId,
        digest: u64,
    },
    /// A show with its theater and seat counts.
    Show {
        show: ShowId,
    },
    Booking {
        booking: BookingId,
    },
    /// A user's bookings, newest first; `before` is the cursor from the previous page.
    UserBookings {
        user: UserId,
        before: Option<BookingId>,
        limit: u32,
    },
    Theater {
        theater: TheaterId,
    },
    /// Theaters of a city by id; `after` is the cursor.
    Theaters {
        city: String,
        after: Option<TheaterId>,
        limit: u32,
    },
    /// Shows of a theater starting in `[from_ms, to_ms)`.
    TheaterShows {
        theater: TheaterId,
        from_ms: Millis,
        to_ms: Millis,
    },
    /// Published shows of a city starting in `[from_ms, to_ms)` whose title or genre
    /// contains `text` (case-insensitive), by start time; `after` is the cursor.
    CityShows {
        city: String,
        from_ms: Millis,
        to_ms: Millis,
        text: Option<String>,
        after: Option<(Millis, ShowId)>,
        limit: u32,
    },
    /// Cities that have at least one theater.
    Cities,
    /// The shard clock.
    Clock,
    /// `global` shard: an account by email (for login) or by id.
    UserByEmail {
        email: String,
    },
    User {
        user: UserId,
    },
    /// The recorded outcome of a request id, if the ledger still keeps it: lets a retry
    /// that cannot simply be re-proposed (one whose preconditions the first attempt
    /// changed) get the first answer again.
    Request {
        request_id: RequestId,
    },
    /// `global` shard: the audit trail, newest first; `before` is the cursor.
    AuditLog {
        before: Option<u64>,
        limit: u32,
    },
    /// `global` shard: one support ticket.
    Ticket {
        ticket: crate::support::TicketId,
    },
    /// `global` shard: tickets newest first, of one customer or (`None`) all, in one
    /// status or any; `before` is the cursor.
    Tickets {
        customer: Option<UserId>,
        status: Option<crate::support::TicketStatus>,
        before: Option<crate::support::TicketId>,
        limit: u32,
    },
    /// `global` shard: a stream consumer's durable position, if it has one.
    ConsumerCursor {
        consumer: String,
        stream: String,
    },
    /// Every show of the shard (any status) by id after `after`: read models load a
    /// whole city with it in pages that cost their own size, not the city's.
    ShowsById {
        after: Option<ShowId>,
        limit: u32,
    },
    /// A booking with its payment, if it has one.
    Payment {
        booking: BookingId,
    },
    /// Payments the saga has not finished (creating, pending, refund due), by booking
    /// id after `after`: the reconciliation poller's work list.
    OpenPayments {
        after: Option<BookingId>,
        limit: u32,
    },
    ShowRating {
        show: ShowId,
    },
    TheaterRating {
        theater: TheaterId,
    },
    /// `global` shard: a coupon by code.
    Coupon {
        code: String,
    },
    /// `global` shard: coupon uses still reserved, after the `code/booking` key
    /// `after`: the coupon saga's work list.
    ReservedCouponUses {
        after: Option<String>,
        limit: u32,
    },
    /// `global` shard: a user's referral code, referrer and rewards.
    Referrals {
        user: UserId,
    },
    /// `global` shard: a user's notification channels (the default when never set).
    NotificationChannels {
        user: UserId,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatStatus {
    Available,
    Locked,
    Booked,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatView {
    pub seat: SeatId,
    pub row: String,
    pub number: u16,
    pub category: Category,
    pub price_minor: u64,
    pub status: SeatStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatMap {
    pub show: ShowId,
    pub currency: String,
    pub seats: Vec<SeatView>,
}

impl SeatMap {
    /// A digest of everything the map says (show, currency, each seat's place, price and
    /// status): equal digests mean equal maps, so a reader may keep what it rendered from
    /// a map and ask for it again only if it changed. Stable across builds that encode
    /// the map alike (BLAKE3 of its codec encoding, first 8 bytes).
    pub fn digest(&self) -> u64 {
        let hash = blake3::hash(&crate::codec::encode(self));
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatCounts {
    pub available: u32,
    pub locked: u32,
    pub booked: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowView {
    pub show: Show,
    pub theater_name: String,
    pub city: String,
    pub counts: SeatCounts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryResponse {
    SeatMap(SeatMap),
    /// The seat map's digest is still the one the query named.
    SeatMapUnchanged {
        digest: u64,
    },
    Show(ShowView),
    Booking(Booking),
    /// A page of bookings and the cursor of the next page, if any.
    Bookings {
        items: Vec<Booking>,
        next: Option<BookingId>,
    },
    Theater(Theater),
    Theaters {
        items: Vec<Theater>,
        next: Option<TheaterId>,
    },
    Shows {
        items: Vec<ShowView>,
        next: Option<(Millis, ShowId)>,
    },
    Cities(Vec<String>),
    Clock(Millis),
    User(User),
    /// The outcome recorded for a request id; `None` when unknown or forgotten.
    Request(Option<Outcome>),
    /// A page of the audit trail, newest first, and the cursor of the next page.
    AuditLog {
        items: Vec<crate::audit::AuditEntry>,
        next: Option<u64>,
    },
    Ticket(crate::support::Ticket),
    Tickets {
        items: Vec<crate::support::Ticket>,
        next: Option<crate::support::TicketId>,
    },
    ConsumerCursor(Option<crate::cursors::ConsumerCursor>),
    ShowPage {
        items: Vec<ShowView>,
        next: Option<ShowId>,
    },
    /// Boxed: the largest answer, and rare next to seat maps.
    Payment {
        booking: Box<Booking>,
        payment: Option<Box<Payment>>,
    },
    Payments {
        items: Vec<(Booking, Payment)>,
        next: Option<BookingId>,
    },
    Rating(RatingSummary),
    Coupon(crate::coupons::Coupon),
    CouponUses {
        items: Vec<crate::coupons::CouponUse>,
        next: Option<String>,
    },
    Referrals(crate::referrals::ReferralSummary),
    NotificationChannels(crate::channels::Channels),
}

impl Ledger {
    /// Answers a query from the current state. Rejections name what was not found or
    /// which limit the query exceeded.
    pub fn query(&self, query: &Query) -> Result<QueryResponse, Rejection> {
        match query {
            Query::SeatMap { show } => self.seat_map(*show).map(QueryResponse::SeatMap),
            Query::SeatMapIfChanged { show, digest } => {
                let map = self.seat_map(*show)?;
                Ok(if map.digest() == *digest {
                    QueryResponse::SeatMapUnchanged { digest: *digest }
                } else {
                    QueryResponse::SeatMap(map)
                })
            }
            Query::Show { show } => self.show_view(*show).map(QueryResponse::Show),
            Query::Booking { booking } => self
                .state
                .bookings
                .get(booking)
                .cloned()
                .map(QueryResponse::Booking)
                .ok_or(Rejection::UnknownBooking { booking: *booking }),
            Query::UserBookings {
                user,
                before,
                limit,
            } => self.user_bookings(*user, *before, *limit),
            Query::Theater { theater } => self
                .state
                .theaters
                .get(theater)
                .cloned()
                .map(QueryResponse::Theater)
                .ok_or(Rejection::UnknownTheater { theater: *theater }),
            Query::Theaters { city, after, limit } => self.theaters(city, *after, *limit),
            Query::TheaterShows {
                theater,
                from_ms,
                to_ms,
            } => self.theater_shows(*theater, *from_ms, *to_ms),
            Query::CityShows {
                city,
                from_ms,
                to_ms,
                text,
                after,
                limit,
            } => self.city_shows(city, *from_ms, *to_ms, text.as_deref(), *after, *limit),
            Query::Cities => {
                let mut cities: Vec<String> = self
                    .indexes
                    .city_theaters
                    .iter()
                    .map(|(city, _)| city.clone())
                    .collect();
                cities.dedup();
                Ok(QueryResponse::Cities(cities))
            }
            Query::Clock => Ok(QueryResponse::Clock(self.state.clock)),
            Query::UserByEmail { email } => self
                .indexes
                .users_by_email
                .get(&email.to_lowercase())
                .and_then(|id| self.state.users.get(id))
                .cloned()
                .map(QueryResponse::User)
                .ok_or(Rejection::UnknownUser { user: UserId(0) }),
            Query::User { user } => self
                .state
                .users
                .get(user)
                .cloned()
                .map(QueryResponse::User)
                .ok_or(Rejection::UnknownUser { user: *user }),
            // Under a store the records are on disk: `LedgerStore::query` answers this.
            Query::Request { request_id } => Ok(QueryResponse::Request(
                self.requests
                    .find(request_id)
                    .map(|record| record.outcome.clone()),
            )),
            Query::AuditLog { before, limit } => self.audit_log(*before, *limit),
            Query::Ticket { ticket } => self
                .state
                .tickets
                .get(ticket)
                .cloned()
                .map(QueryResponse::Ticket)
                .ok_or(Rejection::UnknownTicket { ticket: *ticket }),
            Query::Tickets {
                customer,
                status,
                before,
                limit,
            } => {
                let limit = self.check_page(*limit)?;
                let (items, next) = self.tickets(*customer, *status, *before, limit);
                Ok(QueryResponse::Tickets { items, next })
            }
            Query::ConsumerCursor { consumer, stream } => Ok(QueryResponse::ConsumerCursor(
                self.state
                    .cursors
                    .get(&(consumer.clone(), stream.clone()))
                    .copied(),
            )),
            Query::ShowsById { after, limit } => {
                let limit = self.check_page(*limit)?;
                let low = after.map_or(ShowId(0), |id| ShowId(id.0.saturating_add(1)));
                let mut items = self
                    .state
                    .shows
                    .range(low..)
                    .take(limit + 1)
                    .map(|(id, _)| self.show_view(*id))
                    .collect::<Result<Vec<_>, _>>()?;
                let next = if items.len() > limit {
                    items.truncate(limit);
                    items.last().map(|view| view.show.id)
                } else {
                    None
                };
                Ok(QueryResponse::ShowPage { items, next })
            }
            Query::Payment { booking } => {
                let found = self
                    .state
                    .bookings
                    .get(booking)
                    .ok_or(Rejection::UnknownBooking { booking: *booking })?;
                Ok(QueryResponse::Payment {
                    booking: Box::new(found.clone()),
                    payment: self.state.payments.get(booking).cloned().map(Box::new),
                })
            }
            Query::OpenPayments { after, limit } => {
                let limit = self.check_page(*limit)?;
                let (items, next) = self.open_payments(*after, limit);
                Ok(QueryResponse::Payments { items, next })
            }
            Query::ShowRating { show } => {
                self.show(*show)?;
                Ok(QueryResponse::Rating(self.show_rating(*show)))
            }
            Query::TheaterRating { theater } => {
                if !self.state.theaters.contains_key(theater) {
                    return Err(Rejection::UnknownTheater { theater: *theater });
                }
                Ok(QueryResponse::Rating(self.theater_rating(*theater)))
            }
            Query::Coupon { code } => self
                .state
                .coupons
                .get(code)
                .cloned()
                .map(QueryResponse::Coupon)
                .ok_or_else(|| Rejection::CouponUnavailable {
                    code: code.clone(),
                    reason: "no such coupon".into(),
                }),
            Query::ReservedCouponUses { after, limit } => {
                let limit = self.check_page(*limit)?;
                let (items, next) = self.reserved_coupon_uses(after.as_deref(), limit);
                Ok(QueryResponse::CouponUses { items, next })
            }
            Query::Referrals { user } => {
                if !self.state.users.contains_key(user) {
                    return Err(Rejection::UnknownUser { user: *user });
                }
                Ok(QueryResponse::Referrals(self.referral_summary(*user)))
            }
            Query::NotificationChannels { user } => {
                if !self.state.users.contains_key(user) {
                    return Err(Rejection::UnknownUser { user: *user });
                }
                Ok(QueryResponse::NotificationChannels(
                    self.state.channels.get(user).cloned().unwrap_or_default(),
                ))
            }
        }
    }

    fn seat_status(&self, seat: SeatState) -> SeatStatus {
        match seat {
            SeatState::Available => SeatStatus::Available,
            SeatState::Booked(_) => SeatStatus::Booked,
            SeatState::Locked(lock) => {
                let live = self
                    .state
                    .bookings
                    .get(&BookingId::of_lock(lock))
                    .is_some_and(|booking| booking.is_live_lock(self.state.clock));
                if live {
                    SeatStatus::Locked
                } else {
                    SeatStatus::Available
                }
            }
        }
    }

    fn seat_map(&self, show_id: ShowId) -> Result<SeatMap, Rejection> {
        let show = self.show(show_id)?;
        let screen = &self.state.theaters[&show.theater].screens[usize::from(show.screen.0)];
        let states = &self.state.seats[&show_id];
        let mut seats = Vec::with_capacity(states.len());
        let mut position = 0u32;
        for row in &screen.rows {
            for number in 1..=row.seats {
                seats.push(SeatView {
                    seat: SeatId(position),
                    row: row.label.clone(),
                    number,
                    category: row.category,
                    price_minor: show.prices.of(row.category),
                    status: self.seat_status(states[position as usize]),
                });
                position += 1;
            }
        }
        Ok(SeatMap {
            show: show_id,
            currency: show.currency.clone(),
            seats,
        })
    }

    pub fn seat_counts(&self, show: ShowId) -> SeatCounts {
        let mut counts = SeatCounts::default();
        for seat in self.state.seats.get(&show).into_iter().flatten() {
            match self.seat_status(*seat) {
                SeatStatus::Available => counts.available += 1,
                SeatStatus::Locked => counts.locked += 1,
                SeatStatus::Booked => counts.booked += 1,
            }
        }
        counts
    }

    fn show_view(&self, show_id: ShowId) -> Result<ShowView, Rejection> {
        let show = self.show(show_id)?;
        let theater = &self.state.theaters[&show.theater];
        Ok(ShowView {
            show: show.clone(),
            theater_name: theater.name.clone(),
            city: theater.city.clone(),
            counts: self.seat_counts(show_id),
        })
    }

    fn check_page(&self, limit: u32) -> Result<usize, Rejection> {
        if limit == 0 {
            return Err(Rejection::invalid("limit", "must be at least 1"));
        }
        self.check_limit(
            LimitName::PageSize,
            self.limits.page_size_max.into(),
            limit.into(),
        )?;
        Ok(limit as usize)
    }

    fn user_bookings(
        &self,
        user: UserId,
        before: Option<BookingId>,
        limit: u32,
    ) -> Result<QueryResponse, Rejection> {
        let limit = self.check_page(limit)?;
        let high = before.unwrap_or(BookingId(u64::MAX));
        let mut items: Vec<Booking> = self
            .indexes
            .by_user
            .range((user, BookingId(0))..(user, high))
            .rev()
            .take(limit + 1)
            .map(|(_, id)| self.state.bookings[id].clone())
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|booking| booking.id)
        } else {
            None
        };
        Ok(QueryResponse::Bookings { items, next })
    }

    fn theaters(
        &self,
        city: &str,
        after: Option<TheaterId>,
        limit: u32,
    ) -> Result<QueryResponse, Rejection> {
        let limit = self.check_page(limit)?;
        let low = (
            city.to_owned(),
            after.map_or(TheaterId(0), |id| TheaterId(id.0 + 1)),
        );
        let high = (city.to_owned(), TheaterId(u64::MAX));
        let mut items: Vec<Theater> = self
            .indexes
            .city_theaters
            .range(low..=high)
            .take(limit + 1)
            .map(|(_, id)| self.state.theaters[id].clone())
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|theater| theater.id)
        } else {
            None
        };
        Ok(QueryResponse::Theaters { items, next })
    }

    fn theater_shows(
        &self,
        theater: TheaterId,
        from_ms: Millis,
        to_ms: Millis,
    ) -> Result<QueryResponse, Rejection> {
        if !self.state.theaters.contains_key(&theater) {
            return Err(Rejection::UnknownTheater { theater });
        }
        let items = self
            .shows_between(theater, from_ms, to_ms)
            .collect::<Result<_, _>>()?;
        Ok(QueryResponse::Shows { items, next: None })
    }

    fn shows_between(
        &self,
        theater: TheaterId,
        from_ms: Millis,
        to_ms: Millis,
    ) -> impl Iterator<Item = Result<ShowView, Rejection>> + '_ {
        let range =
            (from_ms < to_ms).then_some((theater, from_ms, ShowId(0))..(theater, to_ms, ShowId(0)));
        range
            .into_iter()
            .flat_map(move |range| self.indexes.theater_shows.range(range))
            .map(|(_, _, show)| self.show_view(*show))
    }

    fn city_shows(
        &self,
        city: &str,
        from_ms: Millis,
        to_ms: Millis,
        text: Option<&str>,
        after: Option<(Millis, ShowId)>,
        limit: u32,
    ) -> Result<QueryResponse, Rejection> {
        let limit = self.check_page(limit)?;
        if let Some(text) = text {
            self.check_text("search", text, true)?;
        }
        let needle = text.map(str::to_lowercase).filter(|text| !text.is_empty());
        let mut found: Vec<(Millis, ShowId)> = Vec::new();
        let low = (city.to_owned(), TheaterId(0));
        let high = (city.to_owned(), TheaterId(u64::MAX));
        for (_, theater) in self.indexes.city_theaters.range(low..=high) {
            let range = (*theater, from_ms, ShowId(0))..(*theater, to_ms.max(from_ms), ShowId(0));
            for (_, start, id) in self.indexes.theater_shows.range(range) {
                let show = &self.state.shows[id];
                let matches = needle.as_deref().is_none_or(|needle| {
                    show.title.to_lowercase().contains(needle)
                        || show.genre.to_lowercase().contains(needle)
                });
                let after_cursor = after.is_none_or(|cursor| (*start, *id) > cursor);
                if matches && after_cursor && show.status == crate::model::ShowStatus::Published {
                    found.push((*start, *id));
                }
            }
        }
        found.sort_unstable();
        let next = (found.len() > limit).then(|| found[limit - 1]);
        found.truncate(limit);
        let items = found
            .into_iter()
            .map(|(_, id)| self.show_view(id))
            .collect::<Result<_, _>>()?;
        Ok(QueryResponse::Shows { items, next })
    }
}
