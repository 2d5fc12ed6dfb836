//! `GET /shows/{id}/seats` without rendering the same map again and again.
//!
//! A seat map is the largest and most frequent answer: during an on-sale, thousands of
//! people refresh the same show. The api keeps the JSON it rendered for a show with the
//! map's digest ([`state_machine::SeatMap::digest`]) and asks the replica for the map
//! only if it changed ([`Query::SeatMapIfChanged`]). The read still goes to a replica at
//! the consistency the caller asked for, so a kept rendering is served only when that
//! replica says the map is still exactly the one rendered; nothing here decides
//! freshness.
//!
//! The digest is also the answer's `ETag`: a caller that sends it back in
//! `If-None-Match` gets `304 Not Modified` (with the usual read headers) once the
//! replica confirms the map is unchanged.
//!
//! Callers that read the same show's map at the same consistency while a replica read
//! of it runs queue for the next one, which starts when it ends and answers all of them
//! ([`crate::flights`]): a hot show costs the replica one read at a time, however many
//! people refresh it, and no caller gets an answer from a read that started before it
//! arrived.
//!
//! Memory is bounded by `limits.seat_map_cache_bytes` (the renderings' sizes); `0` turns
//! keeping off, and `ETag`s still work.

use axum::body::Bytes;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use state_machine::{Query, QueryResponse, SeatMap, ShowId};
use std::sync::Arc;

use crate::app::{ReadMeta, Shared};
use crate::flights::{Abandoned, Flights};
use crate::problem::Problem;

/// A seat map rendered as the contract's JSON, with the digest of the map it shows.
pub struct Rendered {
    pub digest: u64,
    pub body: Bytes,
}

impl Rendered {
    pub fn of(shard: &str, map: &SeatMap) -> Result<Rendered, Problem> {
        let body = serde_json::to_vec(&crate::views::seat_map(shard, map)).map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "The seat map could not be rendered",
                format!("rendering the seat map as JSON failed ({e}); report this as a bug"),
            )
        })?;
        Ok(Rendered {
            digest: map.digest(),
            body: Bytes::from(body),
        })
    }
}

type Key = (String, u64);

#[derive(Clone)]
struct BodySize;

impl Weighter<Key, Arc<Rendered>> for BodySize {
    fn weight(&self, key: &Key, rendered: &Arc<Rendered>) -> u64 {
        // The body plus the entry's own bookkeeping, so small maps count too.
        (rendered.body.len() + key.0.len() + 64) as u64
    }
}

/// The renderings kept, one per show (the latest one seen), and the reads in flight.
pub struct SeatMaps {
    kept: Option<Cache<Key, Arc<Rendered>, BodySize>>,
    flights: Arc<Flights<FlightKey, Result<Fetched, Problem>>>,
}

/// A typical rendering (a few hundred seats), to size the cache's index.
const TYPICAL_BYTES: u64 = 32 * 1024;

impl SeatMaps {
    /// Keeps renderings up to `bytes` in total (none when `0`).
    pub fn new(bytes: u64) -> SeatMaps {
        let kept = (bytes > 0).then(|| {
            let items = (bytes / TYPICAL_BYTES).clamp(16, 1 << 20) as usize;
            Cache::with_weighter(items, bytes, BodySize)
        });
        SeatMaps {
            kept,
            flights: Arc::default(),
        }
    }

    fn get(&self, shard: &str, show: u64) -> Option<Arc<Rendered>> {
        self.kept.as_ref()?.get(&(shard.to_owned(), show))
    }

    fn keep(&self, shard: &str, show: u64, rendered: Arc<Rendered>) {
        if let Some(kept) = &self.kept {
            kept.insert((shard.to_owned(), show), rendered);
        }
    }
}

/// What `If-None-Match` asks: `*`, or the digests of our `ETag`s it lists (entity tags
/// that are not ours cannot match and are ignored, as is a malformed header).
#[derive(Debug, Default, PartialEq)]
pub struct IfNoneMatch {
    any: bool,
    digests: Vec<u64>,
}

impl IfNoneMatch {
    pub fn parse(headers: &HeaderMap) -> IfNoneMatch {
        let mut wanted = IfNoneMatch::default();
        for value in headers.get_all(IF_NONE_MATCH) {
            let Ok(value) = value.to_str() else { continue };
            for tag in value.split(',').map(str::trim) {
                if tag == "*" {
                    wanted.any = true;
                    continue;
                }
                // A weak comparison, as If-None-Match asks: `W/"…"` matches `"…"`.
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                let digest = tag
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .filter(|hex| hex.len() == 16)
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok());
                if let Some(digest) = digest {
                    wanted.digests.push(digest);
                }
            }
        }
        wanted
    }

    fn matches(&self, digest: u64) -> bool {
        self.any || self.digests.contains(&digest)
    }
}

pub fn etag(digest: u64) -> HeaderValue {
    // Sixteen hex digits in quotes: always a valid header value.
    HeaderValue::from_str(&format!("\"{digest:016x}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Reads `show`'s seat map at `level` and answers with the rendering of the map the
/// replica holds, or 304 when the caller's `If-None-Match` names the map's digest.
///
/// Callers reading the same map at the same consistency share one replica read
/// ([`Flights`]): during an on-sale thousands of people refresh the same show.
pub async fn read(
    state: &Shared,
    shard: &str,
    show: u64,
    headers: &HeaderMap,
    level: raft_node::protocol::Consistency,
    min: Option<u64>,
) -> Result<Response, Problem> {
    let wanted = IfNoneMatch::parse(headers);
    let key = FlightKey {
        shard: shard.to_owned(),
        show,
        level,
        min,
    };
    let fetcher = state.clone();
    let shared = state
        .seat_maps
        .flights
        .join(key, move |key| {
            let state = fetcher.clone();
            async move {
                let fetched = fetch(&state, &key).await;
                metrics::counter!("seat_ledger_api_seat_map_fetches_total").increment(1);
                fetched
            }
        })
        .await;
    let Fetched {
        rendered,
        meta,
        how,
    } = shared.unwrap_or_else(|Abandoned| {
        Err(Problem::unavailable(
            "the seat-map read stopped before it answered; retry",
        ))
    })?;
    if wanted.matches(rendered.digest) {
        return Ok(not_modified(&meta, rendered.digest));
    }
    metrics::counter!("seat_ledger_api_seat_map_reads_total", "answer" => how).increment(1);
    let mut headers = answer_headers(&meta, rendered.digest);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok((StatusCode::OK, headers, rendered.body.clone()).into_response())
}

/// One replica read of a seat map, as every caller that shared it sees it.
#[derive(Clone)]
struct Fetched {
    rendered: Arc<Rendered>,
    meta: ReadMeta,
    /// `kept` when the replica confirmed the kept rendering, `rendered` when it sent a
    /// changed map.
    how: &'static str,
}

/// Reads the map from a replica at the key's consistency: only its digest when the api
/// keeps a rendering (the replica answers `SeatMapUnchanged` if it still matches), else
/// the whole map, which is rendered and kept.
async fn fetch(state: &Shared, key: &FlightKey) -> Result<Fetched, Problem> {
    let kept = state.seat_maps.get(&key.shard, key.show);
    let query = match &kept {
        Some(kept) => Query::SeatMapIfChanged {
            show: ShowId(key.show),
            digest: kept.digest,
        },
        None => Query::SeatMap {
            show: ShowId(key.show),
        },
    };
    let (response, meta) = state.read(&key.shard, query, key.level, key.min).await?;
    let (rendered, how) = match response {
        QueryResponse::SeatMapUnchanged { digest } => match kept {
            Some(kept) if kept.digest == digest => (kept, "kept"),
            _ => return Err(crate::routes::unexpected_answer()),
        },
        QueryResponse::SeatMap(map) => {
            let rendered = Arc::new(Rendered::of(&key.shard, &map)?);
            state.seat_maps.keep(&key.shard, key.show, rendered.clone());
            (rendered, "rendered")
        }
        _ => return Err(crate::routes::unexpected_answer()),
    };
    Ok(Fetched {
        rendered,
        meta,
        how,
    })
}

/// Which callers may share a replica read: the same map, at the same consistency, after
/// the same write (`min`, for session reads). A shared read starts after each of its
/// callers arrived ([`Flights`]), so each gets what a read of its own could have
/// answered: linearizable, a read index taken after it arrived; session, the same `min`;
/// stale, the same bound on lag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlightKey {
    shard: String,
    show: u64,
    level: raft_node::protocol::Consistency,
    min: Option<u64>,
}

fn answer_headers(meta: &ReadMeta, digest: u64) -> HeaderMap {
    let mut headers = meta.headers();
    headers.insert(ETAG, etag(digest));
    // Seat maps change under the caller: keep the map if you like, but ask each time.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers
}

fn not_modified(meta: &ReadMeta, digest: u64) -> Response {
    metrics::counter!("seat_ledger_api_seat_map_reads_total", "answer" => "not_modified")
        .increment(1);
    (StatusCode::NOT_MODIFIED, answer_headers(meta, digest)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn if_none_match_takes_our_tags_and_star_and_ignores_the_rest() {
        let ours = etag(0x00ab_cdef_0123_4567);
        let parsed = IfNoneMatch::parse(&headers(&[ours.to_str().unwrap()]));
        assert_eq!(parsed.digests, vec![0x00ab_cdef_0123_4567]);
        assert!(parsed.matches(0x00ab_cdef_0123_4567) && !parsed.matches(1));

        let list = IfNoneMatch::parse(&headers(&[
            "\"xyz\", W/\"0000000000000002\"",
            "\"0000000000000003\"",
        ]));
        assert_eq!(list.digests, vec![2, 3]);

        let star = IfNoneMatch::parse(&headers(&["*"]));
        assert!(star.matches(42) && star.digests.is_empty());

        for junk in [
            "",
            "\"\"",
            "0000000000000001",
            "\"00000000000000001\"",
            "W/",
            "\"zzzzzzzzzzzzzzzz\"",
        ] {
            assert_eq!(
                IfNoneMatch::parse(&headers(&[junk])),
                IfNoneMatch::default(),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn renderings_are_kept_within_the_byte_budget_and_not_at_all_with_zero() {
        let rendered = |digest: u64, bytes: usize| {
            Arc::new(Rendered {
                digest,
                body: Bytes::from(vec![b' '; bytes]),
            })
        };
        let off = SeatMaps::new(0);
        off.keep("mumbai", 1, rendered(1, 10));
        assert!(off.get("mumbai", 1).is_none());

        let maps = SeatMaps::new(1024 * 1024);
        maps.keep("mumbai", 1, rendered(1, 10));
        maps.keep("mumbai", 1, rendered(2, 10));
        assert_eq!(maps.get("mumbai", 1).map(|r| r.digest), Some(2));
        assert!(maps.get("delhi", 1).is_none());
        for show in 0..1000 {
            maps.keep("delhi", show, rendered(show, 16 * 1024));
        }
        let kept = (0..1000)
            .filter(|s| maps.get("delhi", *s).is_some())
            .count();
        assert!(
            kept > 0 && kept < 64,
            "{kept} renderings of 16 KiB kept in 1 MiB"
        );
    }
}
