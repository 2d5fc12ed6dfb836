//! Referrals of the `global` shard: every user's code is `REF<user id>`; a new user
//! names the code of the user who referred them, once; the referrer earns
//! `REFERRAL_REWARD_MINOR` when the referee's first booking is confirmed (the api
//! reports confirmed bookings; the ledger rewards each referee once).
//!
//! Append-only format: referrals are stored in RocksDB and in snapshots with the
//! codec's positional encoding, and later releases read them back. A new enum variant
//! goes at the end of its enum; any other change to these types (a field added, even at
//! the end, removed, reordered or retyped; a variant inserted or moved) needs a new
//! store format version (`store::FORMAT_VERSION`) with a migration. `tests/golden.rs`
//! checks their bytes.

use crate::ids::{Millis, UserId};
use crate::ledger::Ledger;
use crate::outcome::{Applied, Rejection};
use serde::{Deserialize, Serialize};

/// What a referrer earns per referee who books, in minor units.
pub const REFERRAL_REWARD_MINOR: u64 = 5_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    pub referee: UserId,
    pub referrer: UserId,
    /// The referee's booking (external id) that earned the reward, once it did.
    pub rewarded_for: Option<String>,
    pub at_ms: Millis,
}

/// A user's referral code.
pub fn code_of(user: UserId) -> String {
    format!("REF{}", user.0)
}

/// The user a referral code names, if it is well formed.
pub fn user_of(code: &str) -> Option<UserId> {
    let digits = code.strip_prefix("REF")?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(UserId)
}

/// A user's referral standing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralSummary {
    pub code: String,
    pub referred_by: Option<UserId>,
    pub referees: u64,
    pub rewarded: u64,
    pub reward_minor: u64,
}

impl Ledger {
    pub(crate) fn register_referral(
        &mut self,
        referee: UserId,
        code: &str,
    ) -> Result<Applied, Rejection> {
        let referrer = user_of(code).ok_or(Rejection::invalid(
            "code",
            "a referral code such as REF1234",
        ))?;
        if !self.state.users.contains_key(&referee) {
            return Err(Rejection::UnknownUser { user: referee });
        }
        if !self.state.users.contains_key(&referrer) || referrer == referee {
            return Err(Rejection::invalid(
                "code",
                "the code of another existing user",
            ));
        }
        if self.state.referrals.contains_key(&referee) {
            return Err(Rejection::invalid(
                "code",
                "this account was referred already",
            ));
        }
        let referral = Referral {
            referee,
            referrer,
            rewarded_for: None,
            at_ms: self.state.clock,
        };
        self.indexes.referees.insert((referrer, referee));
        self.state.referrals.insert(referee, referral);
        self.touch(|c| {
            c.referrals.insert(referee);
        });
        Ok(Applied::ReferralRegistered { referee, referrer })
    }

    /// Rewards the referrer of `referee` for `booking`, unless already rewarded (then
    /// `rewarded` is false and nothing changes).
    pub(crate) fn reward_referral(
        &mut self,
        referee: UserId,
        booking: &str,
    ) -> Result<Applied, Rejection> {
        self.check_text("booking", booking, false)?;
        let Some(referral) = self.state.referrals.get(&referee) else {
            return Ok(Applied::ReferralRewarded {
                referee,
                rewarded: false,
            });
        };
        if referral.rewarded_for.is_some() {
            return Ok(Applied::ReferralRewarded {
                referee,
                rewarded: false,
            });
        }
        let mut referral = referral.clone();
        referral.rewarded_for = Some(booking.to_owned());
        self.state.referrals.insert(referee, referral);
        self.touch(|c| {
            c.referrals.insert(referee);
        });
        Ok(Applied::ReferralRewarded {
            referee,
            rewarded: true,
        })
    }

    pub(crate) fn referral_summary(&self, user: UserId) -> ReferralSummary {
        let referees: Vec<&Referral> = self
            .indexes
            .referees
            .range((user, UserId(0))..=(user, UserId(u64::MAX)))
            .filter_map(|(_, referee)| self.state.referrals.get(referee))
            .collect();
        let rewarded = referees.iter().filter(|r| r.rewarded_for.is_some()).count() as u64;
        ReferralSummary {
            code: code_of(user),
            referred_by: self.state.referrals.get(&user).map(|r| r.referrer),
            referees: referees.len() as u64,
            rewarded,
            reward_minor: rewarded * REFERRAL_REWARD_MINOR,
        }
    }

    /// Referral invariants: keyed by referee, never self-referred, index exact.
    pub(crate) fn check_referral_invariants(&self) -> Result<(), String> {
        let mut pairs = std::collections::BTreeSet::new();
        for (referee, referral) in &self.state.referrals {
            if referral.referee != *referee || referral.referrer == *referee {
                return Err(format!("referral of {referee} is malformed"));
            }
            pairs.insert((referral.referrer, *referee));
        }
        if pairs != self.indexes.referees {
            return Err("referrer index disagrees with the referrals".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Role;
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

    #[test]
    fn a_referrer_is_rewarded_once_per_referee() {
        let mut ledger = Ledger::new(Limits::default());
        for (index, n) in [(1, "a"), (2, "b")] {
            let register = CommandKind::RegisterUser {
                email: format!("{n}@example.com"),
                phone: format!("+9100000000{index}"),
                name: n.into(),
                password_hash: "hash".into(),
                role: Role::Customer,
            };
            assert!(run(&mut ledger, index, register).is_applied());
        }
        let (alice, bob) = (UserId(1), UserId(2));
        assert_eq!(user_of(&code_of(alice)), Some(alice));
        for bad in ["REF", "REF2", "XYZ1", "REF1x"] {
            let outcome = run(
                &mut ledger,
                10,
                CommandKind::RegisterReferral {
                    referee: bob,
                    code: bad.into(),
                },
            );
            assert!(matches!(outcome, Outcome::Rejected(_)), "{bad}");
        }
        let refer = CommandKind::RegisterReferral {
            referee: bob,
            code: code_of(alice),
        };
        assert!(run(&mut ledger, 11, refer.clone()).is_applied());
        assert!(matches!(run(&mut ledger, 12, refer), Outcome::Rejected(_)));
        let reward = |booking: &str| CommandKind::RewardReferral {
            referee: bob,
            booking: booking.into(),
        };
        assert_eq!(
            run(&mut ledger, 13, reward("mumbai-5")),
            Outcome::Applied(Applied::ReferralRewarded {
                referee: bob,
                rewarded: true
            })
        );
        assert_eq!(
            run(&mut ledger, 14, reward("mumbai-9")),
            Outcome::Applied(Applied::ReferralRewarded {
                referee: bob,
                rewarded: false
            })
        );
        let summary = ledger.referral_summary(alice);
        assert_eq!(
            (summary.referees, summary.rewarded, summary.reward_minor),
            (1, 1, REFERRAL_REWARD_MINOR)
        );
        assert_eq!(ledger.referral_summary(bob).referred_by, Some(alice));
        Ledger::from_state(Limits::default(), ledger.state().clone())
            .check_invariants()
            .unwrap();
    }
}
