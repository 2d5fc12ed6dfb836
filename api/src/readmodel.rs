//! Read models built from the event stream: the show search index, trending shows per
//! city, and each user's recent cities and genres (home feed and carousels).
//!
//! One consumer task per city shard, started on first use, keeps them current. It
//! starts from the ledger's state (the city's published shows, read page by page from
//! a replica at some applied index `A`), then replays the stream from the oldest kept
//! event: events up to `A` only feed the activity models (trending, recent genres),
//! later ones also update the show index, so nothing is counted twice and nothing is
//! missed. Reads go to replicas in this api's region first (followers serve them);
//! every answer reports how far behind the replica's head the model is and how long
//! ago it last caught up. A consumer that falls behind the retention window starts
//! over.
//!
//! The models are caches of the ledger in this api process: they hold no truth of
//! their own and are rebuilt after a restart.

use crate::app::{AppState, Shared};
use crate::events::Position;
use crate::problem::Problem;
use crate::search::{Doc, SearchIndex};
use raft_node::protocol::Consistency;
use state_machine::{Event, Query, QueryResponse, ShowId, ShowStatus, UserId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// Trending counts confirmed bookings of this long before now.
pub const TRENDING_WINDOW_MS: u64 = 6 * 3_600_000;
/// Confirmed bookings remembered per city for trending (oldest dropped first).
const TRENDING_BOOKINGS_MAX: usize = 200_000;
/// Recent bookings remembered per user, and users remembered.
const USER_RECENT_MAX: usize = 20;
const USERS_MAX: usize = 100_000;
/// Events read per fetch, and the pause when the model is caught up.
const FETCH_EVENTS: usize = 100;
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Shows read at start: bounds the start-up work of one city.
const BOOTSTRAP_SHOWS_MAX: usize = 1_000_000;

/// How current a model is, as every answer built from it reports.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Staleness {
    /// The last log index the model has applied.
    pub model_index: u64,
    /// The replica's applied index at the last fetch (the stream's head there).
    pub replica_index: u64,
    /// `replica_index - model_index` (entries, not all of which carry events).
    pub lag_entries: u64,
    /// Since the model last caught up with its replica.
    pub age_ms: u64,
    /// The replica the model reads from.
    pub replica: u64,
    /// An upper bound the model promises when healthy: one poll interval plus a fetch.
    pub bound_ms: u64,
}

/// One recently confirmed booking, for trending and the user's history.
#[derive(Clone, Debug)]
struct Confirmed {
    at_ms: u64,
    show: u64,
    seats: u64,
}

#[derive(Default)]
struct CityState {
    search: SearchIndex,
    /// Confirmed bookings in event order (at_ms is the shard clock).
    confirmed: VecDeque<Confirmed>,
    position: Option<Position>,
    model_index: u64,
    replica_index: u64,
    replica: u64,
    caught_up_at: Option<Instant>,
    ready: bool,
    /// The last failure, reported while not ready.
    problem: Option<String>,
}

/// The read models of one city shard.
pub struct CityModel {
    pub shard: String,
    pub city: String,
    state: RwLock<CityState>,
}

/// What a user did recently, across cities.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Activity {
    pub at_ms: u64,
    pub city: String,
    pub genre: String,
}

/// Every city's models of this api node, and users' activity across cities.
#[derive(Default)]
pub struct ReadModels {
    cities: Mutex<BTreeMap<String, Arc<CityModel>>>,
    users: Mutex<HashMap<UserId, VecDeque<Activity>>>,
}

impl ReadModels {
    /// The model of `city` (a city id), starting its consumer on first use, after it
    /// has loaded (or the request timeout passed: 503).
    pub async fn city(&self, state: &Shared, city: &str) -> Result<Arc<CityModel>, Problem> {
        let model = self.start(state, city)?;
        let deadline = Instant::now() + state.timeout();
        loop {
            {
                let inner = model.state.read().map_err(|_| poisoned())?;
                if inner.ready {
                    break;
                }
                if Instant::now() >= deadline {
                    let why = inner
                        .problem
                        .clone()
                        .unwrap_or_else(|| "still loading".into());
                    return Err(Problem::unavailable(format!(
                        "the {city} read model is not ready ({why}); retry shortly"
                    )));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(model)
    }

    /// The model of `city`, its consumer started if it was not (without waiting for
    /// it to load): a user's activity is learnt in every city, not only those asked.
    pub fn start(&self, state: &Shared, city: &str) -> Result<Arc<CityModel>, Problem> {
        let shard = state.shard_of_city(city)?;
        let (model, started) = {
            let mut cities = self.cities.lock().map_err(|_| poisoned())?;
            match cities.get(&shard) {
                Some(model) => (model.clone(), false),
                None => {
                    let model = Arc::new(CityModel {
                        shard: shard.clone(),
                        city: city.to_owned(),
                        state: RwLock::new(CityState::default()),
                    });
                    cities.insert(shard.clone(), model.clone());
                    (model, true)
                }
            }
        };
        if started {
            tokio::spawn(consume(Arc::downgrade(state), model.clone()));
        }
        Ok(model)
    }

    fn record_user(&self, user: UserId, activity: Activity) {
        let Ok(mut users) = self.users.lock() else {
            return;
        };
        if !users.contains_key(&user) && users.len() >= USERS_MAX {
            // Forget someone (arbitrary): a bounded cache, not a record.
            if let Some(victim) = users.keys().next().copied() {
                users.remove(&victim);
            }
        }
        let recent = users.entry(user).or_default();
        recent.push_back(activity);
        while recent.len() > USER_RECENT_MAX {
            recent.pop_front();
        }
    }

    /// The user's recent bookings, newest first (by shard time: cities' consumers
    /// report them in their own order).
    pub fn user_activity(&self, user: UserId) -> Vec<Activity> {
        let mut recent: Vec<Activity> = self
            .users
            .lock()
            .map(|users| {
                users
                    .get(&user)
                    .map(|recent| recent.iter().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        recent.sort_by_key(|activity| std::cmp::Reverse(activity.at_ms));
        recent
    }
}

fn poisoned() -> Problem {
    Problem::unavailable("a read model lock was poisoned; restart this api node")
}

impl CityModel {
    pub fn staleness(&self) -> Staleness {
        let Ok(inner) = self.state.read() else {
            return Staleness::default();
        };
        Staleness {
            model_index: inner.model_index,
            replica_index: inner.replica_index,
            lag_entries: inner.replica_index.saturating_sub(inner.model_index),
            age_ms: inner
                .caught_up_at
                .map_or(u64::MAX, |at| at.elapsed().as_millis() as u64),
            replica: inner.replica,
            bound_ms: (POLL_INTERVAL * 2).as_millis() as u64,
        }
    }

    /// Waits (until `deadline`) for the model to have applied `index`: read-your-writes
    /// for callers that ask for session or linearizable consistency.
    pub async fn wait_for(&self, index: u64, deadline: Instant) -> Result<(), Problem> {
        loop {
            let model_index = self.state.read().map_err(|_| poisoned())?.model_index;
            if model_index >= index {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Problem::unavailable(format!(
                    "the {} read model has applied {model_index}, not yet {index}; retry",
                    self.city
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs `read` on the search index.
    pub fn with_search<T>(&self, read: impl FnOnce(&SearchIndex) -> T) -> Result<T, Problem> {
        let inner = self.state.read().map_err(|_| poisoned())?;
        Ok(read(&inner.search))
    }

    /// Shows of this city by seats confirmed since `now_ms - TRENDING_WINDOW_MS`, most
    /// first, that are still upcoming: `(show number, seats)`.
    pub fn trending(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, Problem> {
        let inner = self.state.read().map_err(|_| poisoned())?;
        let since = now_ms.saturating_sub(TRENDING_WINDOW_MS);
        let mut seats: HashMap<u64, u64> = HashMap::new();
        for booking in inner.confirmed.iter().rev() {
            if booking.at_ms < since {
                break;
            }
            *seats.entry(booking.show).or_default() += booking.seats;
        }
        let mut ranked: Vec<(u64, u64, u64)> = seats
            .into_iter()
            .filter_map(|(show, seats)| {
                let doc = inner.search.doc(&(self.shard.clone(), show))?;
                (doc.start_ms > now_ms).then_some((show, seats, doc.start_ms))
            })
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
        Ok(ranked
            .into_iter()
            .take(limit)
            .map(|(show, seats, _)| (show, seats))
            .collect())
    }

    /// The next shows to start after `now_ms`: `(show number, doc)`, soonest first.
    pub fn upcoming(
        &self,
        now_ms: u64,
        genre: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(u64, Doc)>, Problem> {
        let inner = self.state.read().map_err(|_| poisoned())?;
        let mut shows: Vec<(u64, Doc)> = inner
            .search
            .docs()
            .filter(|(_, doc)| doc.start_ms > now_ms)
            .filter(|(_, doc)| genre.is_none_or(|genre| doc.genre.eq_ignore_ascii_case(genre)))
            .map(|((_, show), doc)| (*show, doc.clone()))
            .collect();
        shows.sort_by(|a, b| a.1.start_ms.cmp(&b.1.start_ms).then(a.0.cmp(&b.0)));
        shows.truncate(limit);
        Ok(shows)
    }
}

/// The consumer of one city: load, then follow the stream until the api is dropped.
async fn consume(app: Weak<AppState>, model: Arc<CityModel>) {
    let mut failures: u32 = 0;
    loop {
        let Some(state) = app.upgrade() else {
            return;
        };
        let result = step(&state, &model).await;
        drop(state);
        match result {
            Ok(idle) => {
                failures = 0;
                if idle {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
            Err(problem) => {
                failures = failures.saturating_add(1);
                tracing::warn!(shard = model.shard, detail = problem.detail, "read model");
                if let Ok(mut inner) = model.state.write() {
                    inner.problem = Some(problem.detail.clone());
                    if problem.status == axum::http::StatusCode::GONE {
                        // Behind the retention window: start over from the state.
                        *inner = CityState::default();
                    }
                }
                tokio::time::sleep(POLL_INTERVAL * failures.min(25)).await;
            }
        }
    }
}

/// One unit of work: the initial load, or one page of events. `Ok(true)` when caught up.
async fn step(state: &Shared, model: &CityModel) -> Result<bool, Problem> {
    let loaded = model
        .state
        .read()
        .map_err(|_| poisoned())?
        .position
        .is_some();
    if !loaded {
        load(state, model).await?;
        return Ok(false);
    }
    let position = model
        .state
        .read()
        .map_err(|_| poisoned())?
        .position
        .unwrap_or(Position { index: 0, seq: 0 });
    let reply = state
        .cluster
        .events(
            &model.shard,
            position.index,
            position.seq,
            FETCH_EVENTS,
            state.read_preference(),
            state.timeout(),
        )
        .await
        .map_err(|error| Problem::unavailable(error.to_string()))?;
    if position.index < reply.kept_from && position.index > 0 {
        return Err(Problem::new(
            axum::http::StatusCode::GONE,
            "events-expired",
            "Read model behind the retention window",
            format!(
                "needed index {}, oldest kept {}",
                position.index, reply.kept_from
            ),
        ));
    }
    let loaded_at = model.state.read().map_err(|_| poisoned())?.model_index;
    for record in &reply.events {
        // Shows the load already saw are not fetched again.
        let fresh = record.index > loaded_at;
        let show_doc = match &record.event {
            Event::ShowPublished { show, .. } if fresh => {
                Some(fetch_doc(state, model, *show, record.index).await?)
            }
            _ => None,
        };
        let mut inner = model.state.write().map_err(|_| poisoned())?;
        match &record.event {
            Event::ShowPublished { show, .. } => {
                if let Some(Some(doc)) = show_doc {
                    inner.search.upsert((model.shard.clone(), show.0), doc);
                }
            }
            Event::ShowCancelled { show } if fresh => {
                inner.search.remove(&(model.shard.clone(), show.0));
            }
            Event::BookingConfirmed {
                show, user, seats, ..
            } => {
                inner.confirmed.push_back(Confirmed {
                    at_ms: record.at_ms,
                    show: show.0,
                    seats: seats.len() as u64,
                });
                while inner.confirmed.len() > TRENDING_BOOKINGS_MAX {
                    inner.confirmed.pop_front();
                }
                let genre = inner
                    .search
                    .doc(&(model.shard.clone(), show.0))
                    .map(|doc| doc.genre.clone())
                    .unwrap_or_default();
                drop(inner);
                state.events.models.record_user(
                    *user,
                    Activity {
                        at_ms: record.at_ms,
                        city: model.city.clone(),
                        genre,
                    },
                );
                inner = model.state.write().map_err(|_| poisoned())?;
            }
            _ => {}
        }
        inner.position = Some(Position::after(record.index, record.seq));
        inner.model_index = inner.model_index.max(record.index);
    }
    let mut inner = model.state.write().map_err(|_| poisoned())?;
    inner.replica_index = reply.applied_index;
    inner.replica = reply.node;
    let idle = reply.events.len() < FETCH_EVENTS;
    if idle {
        // Everything the replica had is applied.
        inner.model_index = inner.model_index.max(reply.applied_index);
        inner.caught_up_at = Some(Instant::now());
        inner.ready = true;
        inner.problem = None;
    }
    metrics::gauge!("seat_ledger_api_read_model_lag_entries", "shard" => model.shard.clone())
        .set(inner.replica_index.saturating_sub(inner.model_index) as f64);
    Ok(idle)
}

/// The searchable document of a show, from a replica that has applied `index`; `None`
/// when it is no longer published.
async fn fetch_doc(
    state: &Shared,
    model: &CityModel,
    show: ShowId,
    index: u64,
) -> Result<Option<Doc>, Problem> {
    let query = Query::Show { show };
    match state
        .read(&model.shard, query, Consistency::Session, Some(index))
        .await
    {
        Ok((QueryResponse::Show(view), _)) => {
            Ok((view.show.status == ShowStatus::Published).then(|| Doc {
                city: view.city.clone(),
                title: view.show.title.clone(),
                theater: view.theater_name.clone(),
                genre: view.show.genre.clone(),
                start_ms: view.show.start_ms,
            }))
        }
        Ok(_) => Ok(None),
        Err(problem) if problem.status == axum::http::StatusCode::NOT_FOUND => Ok(None),
        Err(problem) => Err(problem),
    }
}

/// Loads the city's published shows; the stream is then replayed from its oldest kept
/// event, with shows published after the load's index fetched as they come.
async fn load(state: &Shared, model: &CityModel) -> Result<(), Problem> {
    let mut search = SearchIndex::default();
    let mut after = None;
    let mut loaded_at = u64::MAX;
    for _ in 0..BOOTSTRAP_SHOWS_MAX / 100 {
        let query = Query::ShowsById { after, limit: 100 };
        let (response, meta) = state
            .read(&model.shard, query, Consistency::Stale, None)
            .await?;
        let QueryResponse::ShowPage { items, next } = response else {
            return Err(Problem::unavailable(
                "unexpected answer while loading shows",
            ));
        };
        loaded_at = loaded_at.min(meta.index);
        for view in items {
            if view.show.status != ShowStatus::Published {
                continue;
            }
            search.upsert(
                (model.shard.clone(), view.show.id.0),
                Doc {
                    city: view.city.clone(),
                    title: view.show.title.clone(),
                    theater: view.theater_name.clone(),
                    genre: view.show.genre.clone(),
                    start_ms: view.show.start_ms,
                },
            );
        }
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    let mut inner = model.state.write().map_err(|_| poisoned())?;
    *inner = CityState {
        search,
        position: Some(Position { index: 0, seq: 0 }),
        model_index: loaded_at,
        ..CityState::default()
    };
    Ok(())
}

/// Wall-clock now in ms (the api's clock; the models are caches, not the ledger).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
