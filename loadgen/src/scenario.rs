//! The three workloads of the issue and the shows they run on. A scenario says how big
//! a show is, how many cities (shards) share the load, and the mix of operations; the
//! show pool hands out the show each city is selling and moves to a fresh one once a
//! share of its seats is taken, so a long run measures an on-sale show rather than a
//! sold-out one. Nothing here talks to a target.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioName {
    /// One 10,000-seat show; every client locks 1-4 random seats and confirms.
    Stampede,
    /// 16 cities (shards), uniform load; lock 1-4 seats and confirm.
    MultiCity,
    /// 95 % seat-map reads (half stale, half linearizable), 5 % locks.
    Browsing,
}

impl ScenarioName {
    pub const ALL: [ScenarioName; 3] = [
        ScenarioName::Stampede,
        ScenarioName::MultiCity,
        ScenarioName::Browsing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Stampede => "stampede",
            ScenarioName::MultiCity => "multi-city",
            ScenarioName::Browsing => "browsing",
        }
    }

    pub fn spec(self) -> ScenarioSpec {
        match self {
            ScenarioName::Stampede => ScenarioSpec {
                name: self,
                cities: 1,
                rows: 100,
                seats_per_row: 100,
                read_share: 0.0,
                confirm: true,
            },
            ScenarioName::MultiCity => ScenarioSpec {
                name: self,
                cities: 16,
                rows: 20,
                seats_per_row: 50,
                read_share: 0.0,
                confirm: true,
            },
            ScenarioName::Browsing => ScenarioSpec {
                name: self,
                cities: 1,
                rows: 15,
                seats_per_row: 20,
                read_share: 0.95,
                confirm: false,
            },
        }
    }
}

/// The fewest and most seats one lock asks for.
pub const SEATS_PER_LOCK_MIN: u32 = 1;
pub const SEATS_PER_LOCK_MAX: u32 = 4;

/// A scenario's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSpec {
    pub name: ScenarioName,
    /// Cities, each its own shard in our cluster (one database for the baselines).
    pub cities: usize,
    pub rows: u16,
    pub seats_per_row: u16,
    /// Share of operations that are seat-map reads; the rest are locks.
    pub read_share: f64,
    /// Whether a successful lock is followed by a confirm (the payment's outcome).
    pub confirm: bool,
}

impl ScenarioSpec {
    pub fn seats_per_show(&self) -> u32 {
        u32::from(self.rows) * u32::from(self.seats_per_row)
    }

    /// Shows each city needs so that `operations` at this mix do not fill the pool,
    /// when a show is left once `fill` of its seats are taken; at least 2, at most
    /// `shows_max`.
    pub fn shows_per_city(&self, operations: f64, fill: f64, shows_max: usize) -> usize {
        let mean_seats = f64::from(SEATS_PER_LOCK_MIN + SEATS_PER_LOCK_MAX) / 2.0;
        let seats_taken = operations * (1.0 - self.read_share) * mean_seats;
        let per_show = (f64::from(self.seats_per_show()) * fill).max(1.0);
        let needed = seats_taken / per_show / self.cities as f64;
        (needed.ceil() as usize + 1).clamp(2, shows_max.max(2))
    }
}

/// How a seat map is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    Stale,
    /// Linearizable, on the shard's leader or on a follower (targets with replicas).
    Linearizable {
        on_leader: bool,
    },
}

/// One operation of a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Lock `seats` of the city's current show for `user`, then confirm if `confirm`.
    Book {
        city: usize,
        seats: Vec<u32>,
        user: u64,
        confirm: bool,
    },
    Read {
        city: usize,
        kind: ReadKind,
    },
}

/// Users the generator acts as; a user is reused only after this many operations, so
/// the ledger's per-user seat cap is never what limits a run.
pub const USERS: u64 = 20_000;
/// User ids start here, clear of any id the ledger hands out during setup.
pub const USER_BASE: u64 = 1_000_000;

impl ScenarioSpec {
    /// The `sequence`-th operation, drawn with `rng`.
    pub fn next_op(&self, rng: &mut fastrand::Rng, sequence: u64) -> Op {
        let city = rng.usize(..self.cities.max(1));
        if rng.f64() < self.read_share {
            let kind = if rng.bool() {
                ReadKind::Stale
            } else {
                ReadKind::Linearizable {
                    on_leader: rng.bool(),
                }
            };
            return Op::Read { city, kind };
        }
        let count = rng.u32(SEATS_PER_LOCK_MIN..=SEATS_PER_LOCK_MAX);
        let total = self.seats_per_show().max(count);
        let mut seats: Vec<u32> = Vec::with_capacity(count as usize);
        while seats.len() < count as usize {
            let seat = rng.u32(..total);
            if !seats.contains(&seat) {
                seats.push(seat);
            }
        }
        seats.sort_unstable();
        Op::Book {
            city,
            seats,
            user: USER_BASE + sequence % USERS,
            confirm: self.confirm,
        }
    }
}

/// The shows of every city and which one each city is selling now.
pub struct ShowPool<S> {
    cities: Vec<CityShows<S>>,
    /// Seats taken in a show before the city moves to its next show.
    threshold_seats: u64,
    /// Set when some city ran out of fresh shows (its last show keeps filling up).
    exhausted: AtomicBool,
}

struct CityShows<S> {
    shows: Vec<S>,
    current: AtomicUsize,
    /// Seats locked so far in each show.
    taken: Vec<AtomicU64>,
}

impl<S> ShowPool<S> {
    /// `shows[city]` in selling order; every city needs at least one show.
    pub fn new(shows: Vec<Vec<S>>, seats_per_show: u32, fill: f64) -> Result<ShowPool<S>, String> {
        if shows.is_empty() || shows.iter().any(Vec::is_empty) {
            return Err("every city needs at least one show".into());
        }
        if !(fill > 0.0 && fill <= 1.0) {
            return Err(format!("fill must be in (0, 1], not {fill}"));
        }
        let threshold_seats = ((f64::from(seats_per_show) * fill).ceil() as u64).max(1);
        let cities = shows
            .into_iter()
            .map(|shows| CityShows {
                taken: shows.iter().map(|_| AtomicU64::new(0)).collect(),
                shows,
                current: AtomicUsize::new(0),
            })
            .collect();
        Ok(ShowPool {
            cities,
            threshold_seats,
            exhausted: AtomicBool::new(false),
        })
    }

    /// The show `city` is selling now and its position, for `record_locked`.
    pub fn current(&self, city: usize) -> (usize, &S) {
        let city = &self.cities[city % self.cities.len()];
        let index = city.current.load(Ordering::Relaxed);
        (index, &city.shows[index])
    }

    /// Counts `seats` locked in show `index` of `city`; moves the city on when full.
    pub fn record_locked(&self, city: usize, index: usize, seats: u64) {
        let city = &self.cities[city % self.cities.len()];
        let taken = city.taken[index].fetch_add(seats, Ordering::Relaxed) + seats;
        if taken < self.threshold_seats {
            return;
        }
        if index + 1 < city.shows.len() {
            let _ = city.current.compare_exchange(
                index,
                index + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            self.exhausted.store(true, Ordering::Relaxed);
        }
    }

    /// Whether some city filled its last show past the threshold.
    pub fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Shows used so far, over all cities.
    pub fn shows_used(&self) -> usize {
        self.cities
            .iter()
            .map(|c| c.current.load(Ordering::Relaxed) + 1)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_ask_for_one_to_four_distinct_seats_of_the_show() {
        let spec = ScenarioName::Stampede.spec();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut sizes = [0u32; 5];
        for n in 0..2_000 {
            let Op::Book {
                seats,
                user,
                confirm,
                city,
            } = spec.next_op(&mut rng, n)
            else {
                panic!("stampede only books");
            };
            assert_eq!(city, 0);
            assert!(confirm);
            assert_eq!(user, USER_BASE + n);
            assert!(seats.windows(2).all(|w| w[0] < w[1]), "{seats:?}");
            assert!(seats.iter().all(|s| *s < 10_000));
            sizes[seats.len()] += 1;
        }
        assert_eq!(sizes[0], 0);
        assert!(sizes[1..].iter().all(|n| *n > 400), "{sizes:?}");
    }

    #[test]
    fn browsing_is_mostly_reads_of_both_kinds() {
        let spec = ScenarioName::Browsing.spec();
        let mut rng = fastrand::Rng::with_seed(11);
        let (mut stale, mut linearizable, mut locks) = (0i32, 0i32, 0i32);
        for n in 0..10_000 {
            match spec.next_op(&mut rng, n) {
                Op::Read {
                    kind: ReadKind::Stale,
                    ..
                } => stale += 1,
                Op::Read { .. } => linearizable += 1,
                Op::Book { confirm, .. } => {
                    assert!(!confirm);
                    locks += 1
                }
            }
        }
        assert!((400..600).contains(&locks), "locks {locks}");
        assert!(
            (stale - linearizable).abs() < 500,
            "{stale} vs {linearizable}"
        );
    }

    #[test]
    fn multi_city_spreads_over_sixteen_cities() {
        let spec = ScenarioName::MultiCity.spec();
        let mut rng = fastrand::Rng::with_seed(3);
        let mut seen = [0u32; 16];
        for n in 0..3_200 {
            if let Op::Book { city, .. } = spec.next_op(&mut rng, n) {
                seen[city] += 1;
            }
        }
        assert!(seen.iter().all(|n| (120..280).contains(n)), "{seen:?}");
    }

    #[test]
    fn pool_moves_on_when_a_show_fills_and_flags_exhaustion() {
        let pool = ShowPool::new(vec![vec!["a", "b"], vec!["x"]], 100, 0.5).unwrap();
        assert_eq!(pool.current(0), (0, &"a"));
        pool.record_locked(0, 0, 49);
        assert_eq!(pool.current(0), (0, &"a"));
        pool.record_locked(0, 0, 1);
        assert_eq!(pool.current(0), (1, &"b"));
        // A late report for the old show does not skip the new one.
        pool.record_locked(0, 0, 10);
        assert_eq!(pool.current(0), (1, &"b"));
        assert!(!pool.exhausted());
        pool.record_locked(1, 0, 50);
        assert!(pool.exhausted());
        assert_eq!(pool.current(1), (0, &"x"));
        assert_eq!(pool.shows_used(), 3);
    }

    #[test]
    fn pool_refuses_empty_cities_and_bad_fill() {
        assert!(ShowPool::<u8>::new(vec![], 10, 0.5).is_err());
        assert!(ShowPool::new(vec![vec![1u8], vec![]], 10, 0.5).is_err());
        assert!(ShowPool::new(vec![vec![1u8]], 10, 0.0).is_err());
        assert!(ShowPool::new(vec![vec![1u8]], 10, 1.5).is_err());
    }

    #[test]
    fn shows_per_city_covers_the_expected_seats() {
        let spec = ScenarioName::Stampede.spec();
        // 10,000 operations of 2.5 seats = 25,000 seats; 5,000 per show at fill 0.5.
        assert_eq!(spec.shows_per_city(10_000.0, 0.5, 100), 6);
        assert_eq!(spec.shows_per_city(10_000.0, 0.5, 3), 3);
        assert_eq!(spec.shows_per_city(0.0, 0.5, 100), 2);
    }
}
