//! Coupons of the `global` shard, and the `global` half of redeeming one for a city
//! booking (a cross-shard saga): reserve a use here, confirm it once the booking is
//! confirmed in its city shard, give it back if the booking does not confirm.
//!
//! A use is counted from its reservation, so `reserved + used <= max_uses` always
//! holds and a coupon is never used more than its limit, however many bookings race
//! for its last use. Reservations are keyed by booking, so retrying a reservation for
//! the same booking is the same reservation. This module knows nothing of city shards:
//! the api's saga driver tells it how each booking ended.
//!
//! Append-only format: `Coupon`, `CouponUse` and `CouponUseStatus` are stored in
//! RocksDB and in snapshots with the codec's positional encoding, and later releases
//! read them back. A new enum variant goes at the end of its enum; any other change to
//! these types (a field added, even at the end, removed, reordered or retyped; a
//! variant inserted or moved) needs a new store format version
//! (`store::FORMAT_VERSION`) with a migration. `tests/golden.rs` checks their bytes.

use crate::ids::{Millis, UserId};
use crate::ledger::Ledger;
use crate::outcome::{Applied, Rejection};
use serde::{Deserialize, Serialize};

/// Most uses one coupon may allow: bounds its reservations.
pub const COUPON_USES_MAX: u32 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    /// Upper-case letters, digits and '-'.
    pub code: String,
    /// Percent off the booking's price, 1 to 100.
    pub percent: u8,
    /// The discount never exceeds this, in minor units.
    pub max_discount_minor: u64,
    /// Usable from `valid_from` (inclusive) to `valid_until` (exclusive), shard clock.
    pub valid_from: Millis,
    pub valid_until: Millis,
    pub max_uses: u32,
    /// Uses held by bookings whose payment has not settled.
    pub reserved: u32,
    /// Uses by confirmed bookings.
    pub used: u32,
    pub created_at: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CouponUseStatus {
    Reserved,
    Used,
    Returned,
}

/// One booking's use of a coupon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponUse {
    pub code: String,
    /// The city booking's external id (`mumbai-12`).
    pub booking: String,
    pub user: UserId,
    pub discount_minor: u64,
    pub status: CouponUseStatus,
    pub updated_at: Millis,
}

/// The key of a coupon use: code and booking.
pub fn use_key(code: &str, booking: &str) -> String {
    format!("{code}/{booking}")
}

/// The discount a coupon gives on `price_minor`.
pub fn discount(coupon: &Coupon, price_minor: u64) -> u64 {
    (price_minor.saturating_mul(u64::from(coupon.percent)) / 100).min(coupon.max_discount_minor)
}

fn check_code(code: &str) -> Result<(), Rejection> {
    let fine = (3..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
    if !fine {
        return Err(Rejection::invalid(
            "code",
            "3-32 upper-case letters, digits and '-'",
        ));
    }
    Ok(())
}

/// The fields of a `CreateCoupon` command.
pub struct NewCoupon<'a> {
    pub code: &'a str,
    pub percent: u8,
    pub max_discount_minor: u64,
    pub valid_from: Millis,
    pub valid_until: Millis,
    pub max_uses: u32,
}

impl Ledger {
    pub(crate) fn create_coupon(&mut self, new: NewCoupon<'_>) -> Result<Applied, Rejection> {
        check_code(new.code)?;
        if !(1..=100).contains(&new.percent) {
            return Err(Rejection::invalid("percent", "1 to 100"));
        }
        if new.max_discount_minor == 0 {
            return Err(Rejection::invalid("max_discount_minor", "at least 1"));
        }
        if new.valid_until <= new.valid_from || new.valid_until <= self.state.clock {
            return Err(Rejection::invalid(
                "valid_until",
                "after valid_from and in the future",
            ));
        }
        if new.max_uses == 0 || new.max_uses > COUPON_USES_MAX {
            return Err(Rejection::invalid("max_uses", "1 to 1000000"));
        }
        if self.state.coupons.contains_key(new.code) {
            return Err(Rejection::CouponExists);
        }
        let coupon = Coupon {
            code: new.code.to_owned(),
            percent: new.percent,
            max_discount_minor: new.max_discount_minor,
            valid_from: new.valid_from,
            valid_until: new.valid_until,
            max_uses: new.max_uses,
            reserved: 0,
            used: 0,
            created_at: self.state.clock,
        };
        self.put_coupon(coupon);
        Ok(Applied::CouponCreated {
            code: new.code.to_owned(),
        })
    }

    pub(crate) fn reserve_coupon(
        &mut self,
        code: &str,
        booking: &str,
        user: UserId,
        price_minor: u64,
    ) -> Result<Applied, Rejection> {
        check_code(code)?;
        self.check_text("booking", booking, false)?;
        let key = use_key(code, booking);
        let coupon = self
            .state
            .coupons
            .get(code)
            .ok_or_else(|| Rejection::CouponUnavailable {
                code: code.to_owned(),
                reason: "no such coupon".into(),
            })?;
        if let Some(existing) = self.state.coupon_uses.get(&key) {
            if existing.user != user {
                return Err(Rejection::NotOwner);
            }
            return match existing.status {
                CouponUseStatus::Reserved | CouponUseStatus::Used => Ok(Applied::CouponReserved {
                    code: code.to_owned(),
                    discount_minor: existing.discount_minor,
                }),
                CouponUseStatus::Returned => Err(Rejection::CouponUnavailable {
                    code: code.to_owned(),
                    reason: "this booking gave its use back; lock again to use it".into(),
                }),
            };
        }
        let clock = self.state.clock;
        if clock < coupon.valid_from || clock >= coupon.valid_until {
            return Err(Rejection::CouponUnavailable {
                code: code.to_owned(),
                reason: "outside its validity".into(),
            });
        }
        if coupon.reserved + coupon.used >= coupon.max_uses {
            return Err(Rejection::CouponUnavailable {
                code: code.to_owned(),
                reason: "all its uses are taken".into(),
            });
        }
        let discount_minor = discount(coupon, price_minor);
        if discount_minor == 0 || discount_minor >= price_minor {
            return Err(Rejection::invalid(
                "price_minor",
                "the coupon must leave something to pay and take something off",
            ));
        }
        let mut coupon = coupon.clone();
        coupon.reserved += 1;
        self.put_coupon(coupon);
        self.put_coupon_use(CouponUse {
            code: code.to_owned(),
            booking: booking.to_owned(),
            user,
            discount_minor,
            status: CouponUseStatus::Reserved,
            updated_at: clock,
        });
        Ok(Applied::CouponReserved {
            code: code.to_owned(),
            discount_minor,
        })
    }

    /// Confirms (`confirmed`) or gives back a reserved use. Settling a settled use the
    /// same way again changes nothing.
    pub(crate) fn settle_coupon_use(
        &mut self,
        code: &str,
        booking: &str,
        confirmed: bool,
    ) -> Result<Applied, Rejection> {
        let key = use_key(code, booking);
        let found =
            self.state
                .coupon_uses
                .get(&key)
                .ok_or_else(|| Rejection::CouponUnavailable {
                    code: code.to_owned(),
                    reason: format!("no use reserved for {booking}").into(),
                })?;
        let wanted = if confirmed {
            CouponUseStatus::Used
        } else {
            CouponUseStatus::Returned
        };
        match found.status {
            CouponUseStatus::Reserved => {}
            status if status == wanted => {
                return Ok(Applied::CouponUseSettled {
                    code: code.to_owned(),
                    status,
                })
            }
            _ => {
                return Err(Rejection::invalid(
                    "booking",
                    "this use was settled the other way already",
                ))
            }
        }
        let clock = self.state.clock;
        let mut coupon_use = found.clone();
        coupon_use.status = wanted;
        coupon_use.updated_at = clock;
        if let Some(coupon) = self.state.coupons.get(code) {
            let mut coupon = coupon.clone();
            coupon.reserved = coupon.reserved.saturating_sub(1);
            if confirmed {
                coupon.used += 1;
            }
            self.put_coupon(coupon);
        }
        self.put_coupon_use(coupon_use);
        Ok(Applied::CouponUseSettled {
            code: code.to_owned(),
            status: wanted,
        })
    }

    fn put_coupon(&mut self, coupon: Coupon) {
        let code = coupon.code.clone();
        self.state.coupons.insert(code.clone(), coupon);
        self.touch(|c| {
            c.coupons.insert(code);
        });
    }

    fn put_coupon_use(&mut self, coupon_use: CouponUse) {
        let key = use_key(&coupon_use.code, &coupon_use.booking);
        if coupon_use.status == CouponUseStatus::Reserved {
            self.indexes.reserved_coupon_uses.insert(key.clone());
        } else {
            self.indexes.reserved_coupon_uses.remove(&key);
        }
        self.state.coupon_uses.insert(key.clone(), coupon_use);
        self.touch(|c| {
            c.coupon_uses.insert(key);
        });
    }

    /// Reserved uses after `after`, at most `limit`: the saga driver's work list.
    pub(crate) fn reserved_coupon_uses(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<CouponUse>, Option<String>) {
        let range = match after {
            Some(after) => self
                .indexes
                .reserved_coupon_uses
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => self.indexes.reserved_coupon_uses.range::<str, _>(..),
        };
        let mut items: Vec<CouponUse> = range
            .take(limit + 1)
            .map(|key| self.state.coupon_uses[key].clone())
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|u| use_key(&u.code, &u.booking))
        } else {
            None
        };
        (items, next)
    }

    /// Coupon invariants (part of `check_invariants`): no coupon has more uses than its
    /// limit, its counters match its uses, and the reserved index is exact.
    pub(crate) fn check_coupon_invariants(&self) -> Result<(), String> {
        let mut counts: std::collections::BTreeMap<&str, (u32, u32)> = Default::default();
        let mut reserved_keys = std::collections::BTreeSet::new();
        for (key, coupon_use) in &self.state.coupon_uses {
            if *key != use_key(&coupon_use.code, &coupon_use.booking) {
                return Err(format!("coupon use {key} is filed under another key"));
            }
            let entry = counts.entry(coupon_use.code.as_str()).or_default();
            match coupon_use.status {
                CouponUseStatus::Reserved => {
                    entry.0 += 1;
                    reserved_keys.insert(key.clone());
                }
                CouponUseStatus::Used => entry.1 += 1,
                CouponUseStatus::Returned => {}
            }
        }
        for (code, coupon) in &self.state.coupons {
            let (reserved, used) = counts.remove(code.as_str()).unwrap_or_default();
            if (coupon.reserved, coupon.used) != (reserved, used) {
                return Err(format!("coupon {code} counts disagree with its uses"));
            }
            if reserved + used > coupon.max_uses {
                return Err(format!("coupon {code} is used beyond its limit"));
            }
        }
        if !counts.is_empty() {
            return Err("a coupon use names an unknown coupon".into());
        }
        if reserved_keys != self.indexes.reserved_coupon_uses {
            return Err("reserved coupon index disagrees with the uses".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandKind;
    use crate::limits::Limits;
    use crate::outcome::Outcome;
    use crate::testkit::command;

    fn run(ledger: &mut Ledger, index: u64, kind: CommandKind) -> Outcome {
        let outcome = ledger
            .apply(index, &command(&format!("r{index}"), 1_000, kind))
            .outcome;
        ledger.check_invariants().unwrap();
        outcome
    }

    fn reserve(booking: &str, user: u64) -> CommandKind {
        CommandKind::ReserveCoupon {
            code: "DIWALI-50".into(),
            booking: booking.into(),
            user: UserId(user),
            price_minor: 40_000,
        }
    }

    #[test]
    fn a_coupon_is_never_used_beyond_its_limit_and_given_back_uses_return() {
        let mut ledger = Ledger::new(Limits::default());
        let created = run(
            &mut ledger,
            1,
            CommandKind::CreateCoupon {
                code: "DIWALI-50".into(),
                percent: 50,
                max_discount_minor: 15_000,
                valid_from: 0,
                valid_until: 10_000,
                max_uses: 2,
            },
        );
        assert!(created.is_applied(), "{created:?}");
        assert_eq!(
            run(&mut ledger, 2, reserve("mumbai-1", 1)),
            Outcome::Applied(Applied::CouponReserved {
                code: "DIWALI-50".into(),
                discount_minor: 15_000
            })
        );
        // The same booking again is the same reservation.
        assert!(run(&mut ledger, 3, reserve("mumbai-1", 1)).is_applied());
        assert!(run(&mut ledger, 4, reserve("mumbai-2", 2)).is_applied());
        let third = run(&mut ledger, 5, reserve("mumbai-3", 3));
        assert!(matches!(
            third,
            Outcome::Rejected(Rejection::CouponUnavailable { .. })
        ));
        let settle = |booking: &str, confirmed| CommandKind::SettleCouponUse {
            code: "DIWALI-50".into(),
            booking: booking.into(),
            confirmed,
        };
        assert!(run(&mut ledger, 6, settle("mumbai-1", true)).is_applied());
        assert!(run(&mut ledger, 7, settle("mumbai-1", true)).is_applied());
        assert!(matches!(
            run(&mut ledger, 8, settle("mumbai-1", false)),
            Outcome::Rejected(_)
        ));
        assert!(run(&mut ledger, 9, settle("mumbai-2", false)).is_applied());
        // The given-back use is free again; the returned booking cannot reserve again.
        assert!(run(&mut ledger, 10, reserve("mumbai-3", 3)).is_applied());
        assert!(matches!(
            run(&mut ledger, 11, reserve("mumbai-2", 2)),
            Outcome::Rejected(Rejection::CouponUnavailable { .. })
        ));
        let coupon = &ledger.state().coupons["DIWALI-50"];
        assert_eq!((coupon.reserved, coupon.used), (1, 1));
        assert_eq!(ledger.reserved_coupon_uses(None, 10).0.len(), 1);
        let rebuilt = Ledger::from_state(Limits::default(), ledger.state().clone());
        rebuilt.check_invariants().unwrap();
    }

    #[test]
    fn bad_coupons_and_expired_ones_are_refused() {
        let mut ledger = Ledger::new(Limits::default());
        let create = |code: &str, percent, until| CommandKind::CreateCoupon {
            code: code.into(),
            percent,
            max_discount_minor: 100,
            valid_from: 0,
            valid_until: until,
            max_uses: 5,
        };
        for (index, bad) in [
            create("lower", 10, 5_000),
            create("OK-CODE", 0, 5_000),
            create("OK-CODE", 101, 5_000),
            create("OK-CODE", 10, 500),
        ]
        .into_iter()
        .enumerate()
        {
            assert!(matches!(
                run(&mut ledger, index as u64 + 1, bad),
                Outcome::Rejected(Rejection::InvalidInput { .. })
            ));
        }
        assert!(run(&mut ledger, 10, create("SHORT", 10, 2_000)).is_applied());
        assert!(matches!(
            run(&mut ledger, 11, create("SHORT", 10, 2_000)),
            Outcome::Rejected(Rejection::CouponExists)
        ));
        let late = ledger.apply(
            12,
            &command(
                "r12",
                2_000,
                CommandKind::ReserveCoupon {
                    code: "SHORT".into(),
                    booking: "mumbai-9".into(),
                    user: UserId(1),
                    price_minor: 10_000,
                },
            ),
        );
        assert!(matches!(
            late.outcome,
            Outcome::Rejected(Rejection::CouponUnavailable { .. })
        ));
    }
}
