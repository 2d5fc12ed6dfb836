//! The home feed and carousels (`GET /api/v1/home/feeds`, `GET /api/v1/home/carousels`)
//! and ranked search answers (`GET /api/v1/shows?search=`), served from the read models that `readmodel` builds from the event stream: trending
//! shows per city (seats confirmed in the last `TRENDING_WINDOW_MS`), upcoming shows,
//! and, for a signed-in caller, their recent cities and genres with shows of those
//! genres. Every answer reports its staleness.

use crate::app::{AuthUser, Params, Shared};
use crate::problem::Problem;
use crate::readmodel::{now_ms, CityModel, TRENDING_WINDOW_MS};
use crate::search::{Doc, QUERY_BYTES_MAX};
use crate::views::{ext_id, rfc3339};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Items per feed section or carousel.
const SECTION_ITEMS_MAX: usize = 10;

#[derive(Deserialize, Default)]
pub struct HomeParams {
    pub city: Option<String>,
    pub location: Option<String>,
}

/// The caller when a valid bearer token is sent; anonymous otherwise. A token that is
/// sent but invalid is still refused (401), never silently ignored.
pub struct MaybeUser(pub Option<AuthUser>);

impl FromRequestParts<Shared> for MaybeUser {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Problem> {
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Ok(MaybeUser(None));
        }
        AuthUser::from_request_parts(parts, state)
            .await
            .map(|user| MaybeUser(Some(user)))
    }
}

fn show_json(model: &CityModel, show: u64, doc: &Doc) -> Value {
    json!({
        "id": ext_id(&model.shard, show),
        "title": doc.title,
        "genre": doc.genre,
        "theater_name": doc.theater,
        "city": doc.city,
        "start_time": rfc3339(doc.start_ms),
    })
}

async fn city_model(
    state: &Shared,
    params: &HomeParams,
) -> Result<std::sync::Arc<CityModel>, Problem> {
    let city = params
        .city
        .clone()
        .or(params.location.clone())
        .ok_or_else(|| Problem::invalid("city", "name a city id (GET /api/v1/cities)"))?;
    state.events.models.city(state, &city).await
}

/// `GET /api/v1/home/feeds?city=`
pub async fn feeds(
    State(state): State<Shared>,
    MaybeUser(caller): MaybeUser,
    Params(params): Params<HomeParams>,
) -> Result<Response, Problem> {
    let model = city_model(&state, &params).await?;
    let now = now_ms();
    let trending: Vec<Value> = model
        .trending(now, SECTION_ITEMS_MAX)?
        .into_iter()
        .filter_map(|(show, seats)| {
            let doc = model
                .with_search(|index| index.doc(&(model.shard.clone(), show)).cloned())
                .ok()??;
            let mut value = show_json(&model, show, &doc);
            value["seats_booked_recently"] = json!(seats);
            Some(value)
        })
        .collect();
    let mut body = json!({
        "city": model.city,
        "trending": trending,
        "trending_window_hours": TRENDING_WINDOW_MS / 3_600_000,
        "staleness": model.staleness(),
    });
    if let Some(caller) = caller {
        for city in &state.config.cities {
            state.events.models.start(&state, &city.id)?;
        }
        let activity = state.events.models.user_activity(caller.id);
        let mut cities: Vec<String> = Vec::new();
        let mut genres: Vec<String> = Vec::new();
        for item in &activity {
            if !cities.contains(&item.city) {
                cities.push(item.city.clone());
            }
            if !item.genre.is_empty() && !genres.contains(&item.genre) {
                genres.push(item.genre.clone());
            }
        }
        let mut for_you = Vec::new();
        for genre in genres.iter().take(3) {
            for (show, doc) in model.upcoming(now, Some(genre), SECTION_ITEMS_MAX)? {
                if for_you.len() < SECTION_ITEMS_MAX {
                    for_you.push(show_json(&model, show, &doc));
                }
            }
        }
        body["recent_cities"] = json!(cities);
        body["recent_genres"] = json!(genres);
        body["for_you"] = json!(for_you);
    }
    Ok(Json(body).into_response())
}

/// `GET /api/v1/home/carousels?city=`
pub async fn carousels(
    State(state): State<Shared>,
    Params(params): Params<HomeParams>,
) -> Result<Response, Problem> {
    let model = city_model(&state, &params).await?;
    let now = now_ms();
    let upcoming = model.upcoming(now, None, 1_000)?;
    let mut by_genre: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (show, doc) in &upcoming {
        if doc.genre.is_empty() {
            continue;
        }
        let items = by_genre.entry(doc.genre.to_lowercase()).or_default();
        if items.len() < SECTION_ITEMS_MAX {
            items.push(show_json(&model, *show, doc));
        }
    }
    let mut genres: Vec<(String, Vec<Value>)> = by_genre.into_iter().collect();
    genres.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let mut carousels = vec![json!({
        "id": "upcoming",
        "title": "Starting soon",
        "items": upcoming.iter().take(SECTION_ITEMS_MAX)
            .map(|(show, doc)| show_json(&model, *show, doc)).collect::<Vec<_>>(),
    })];
    for (genre, items) in genres.into_iter().take(3) {
        carousels.push(json!({ "id": format!("genre:{genre}"), "title": genre, "items": items }));
    }
    Ok(Json(json!({
        "city": model.city,
        "carousels": carousels,
        "staleness": model.staleness(),
    }))
    .into_response())
}

/// `GET /api/v1/shows?search=`: ranked hits from the city's read model, each shown
/// with its current seat counts. With `consistency=session|linearizable` the model
/// first catches up with the caller's writes. The cursor is the offset `r<n>`.
pub async fn ranked_shows(
    state: &crate::app::Shared,
    city: &str,
    shard: &str,
    text: &str,
    (from_ms, to_ms): (u64, u64),
    params: &crate::routes::ReadParams,
    headers: &axum::http::HeaderMap,
) -> Result<axum::response::Response, crate::problem::Problem> {
    use crate::problem::Problem;
    use axum::response::IntoResponse;
    use raft_node::protocol::Consistency;
    use state_machine::{Query, QueryResponse, ShowId};
    let started = std::time::Instant::now();
    if text.len() > QUERY_BYTES_MAX {
        return Err(Problem::invalid(
            "search",
            format!("at most {QUERY_BYTES_MAX} bytes"),
        ));
    }
    let limit = match params.limit.unwrap_or(20) {
        0 => return Err(Problem::invalid("limit", "at least 1")),
        n if n > 100 => return Err(Problem::invalid("limit", "at most 100")),
        n => n as usize,
    };
    let offset = match &params.cursor {
        Some(cursor) => cursor
            .strip_prefix('r')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Problem::invalid("cursor", "use next_cursor of the previous page"))?,
        None => 0,
    };
    let (level, min) =
        crate::app::consistency(params.consistency.as_deref(), headers, Consistency::Stale)?;
    let model = state.events.models.city(state, city).await?;
    if level != Consistency::Stale {
        // The replica's applied index at this consistency is what the model must reach.
        let (_, meta) = state.read(shard, Query::Clock, level, min).await?;
        let deadline = std::time::Instant::now() + state.timeout();
        model.wait_for(meta.index, deadline).await?;
    }
    let (hits, total) =
        model.with_search(|index| index.search_page(city, text, from_ms, to_ms, offset, limit))?;
    let page: Vec<u64> = hits.iter().map(|hit| hit.key.1).collect();
    let reads = page.iter().map(|number| {
        let query = Query::Show {
            show: ShowId(*number),
        };
        state.read(shard, query, Consistency::Stale, None)
    });
    let mut items = Vec::with_capacity(page.len());
    for answer in futures_util::future::join_all(reads).await {
        match answer {
            Ok((QueryResponse::Show(view), _)) => items.push(crate::views::show(shard, &view)),
            Ok(_) => {}
            Err(problem) if problem.status == axum::http::StatusCode::NOT_FOUND => {}
            Err(problem) => return Err(problem),
        }
    }
    let next = (offset + limit < total).then(|| format!("r{}", offset + limit));
    let mut body = crate::views::page(items, next);
    body["total"] = serde_json::json!(total);
    body["staleness"] = serde_json::json!(model.staleness());
    metrics::histogram!("seat_ledger_api_search_seconds").record(started.elapsed().as_secs_f64());
    Ok((axum::http::StatusCode::OK, axum::Json(body)).into_response())
}
