//! Show search: a tokenised, case- and accent-insensitive, typo-tolerant, ranked
//! in-memory index over title, theater name and genre, kept current from the event
//! stream by `readmodel`.
//!
//! Why not tantivy: the index is a few hundred thousand short documents of three
//! fields, rebuilt from the ledger on start and updated one show at a time from the
//! stream; tantivy would bring segment files, a commit/reload cycle and a large
//! dependency tree (minutes of compile on the build machines) for features this does
//! not use. What the problem needs is three pieces, taken from small well-kept crates
//! where they exist: Unicode decomposition to fold accents (`unicode-normalization`),
//! an edit distance with transpositions (`strsim`), and a way to find vocabulary words
//! near a misspelt one quickly. The last is a deletion neighbourhood (SymSpell): every
//! word of the vocabulary is indexed under each string obtained by deleting up to two
//! of its characters; a query word's own deletions meet them, and `strsim` confirms the
//! distance. It is incremental (a new show only adds entries), so the stream keeps it
//! current without rebuilds. `benches/search.rs` measures it at 100k shows.
//!
//! Ranking: every query word is matched against each document word exactly (weight
//! 1.0), as a prefix (0.7, words of three or more characters), or within one edit (0.5)
//! or two (0.3, words of eight or more characters); a match in the title counts three
//! times, the theater 1.5 times, the genre once. Documents that match more query words
//! come first, then higher scores, then earlier shows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Longest query the index accepts, in bytes, and the words it considers.
pub const QUERY_BYTES_MAX: usize = 200;
pub const QUERY_WORDS_MAX: usize = 8;
/// Words shorter than this are matched exactly only (one edit turns "it" into anything).
const FUZZY_CHARS_MIN: usize = 4;
/// Words at least this long tolerate two edits.
const TWO_EDITS_CHARS_MIN: usize = 8;
/// Vocabulary words longer than this are not put in the deletion index (its size
/// grows with the square of the length); they still match exactly and by prefix.
const DELETION_CHARS_MAX: usize = 24;

const TITLE: u8 = 1;
const THEATER: u8 = 2;
const GENRE: u8 = 4;

/// Folds case and accents and splits into words: "Amélie, Théâtre" -> amelie, theatre.
pub fn tokens(text: &str) -> Vec<String> {
    let folded: String = text
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One searchable show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doc {
    pub city: String,
    pub title: String,
    pub theater: String,
    pub genre: String,
    pub start_ms: u64,
}

/// A document's key: `(shard, show number)`.
pub type DocKey = (String, u64);

/// The search index of any number of shows.
#[derive(Default)]
pub struct SearchIndex {
    docs: HashMap<DocKey, Doc>,
    /// word -> documents containing it, with the fields it occurs in.
    postings: BTreeMap<String, HashMap<DocKey, u8>>,
    /// deletion variant -> vocabulary words that produce it (the word itself included).
    deletions: HashMap<String, BTreeSet<String>>,
}

/// One ranked hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub key: DocKey,
    pub words_matched: usize,
    pub score: f64,
    pub start_ms: u64,
}

impl SearchIndex {
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    pub fn contains(&self, key: &DocKey) -> bool {
        self.docs.contains_key(key)
    }

    pub fn doc(&self, key: &DocKey) -> Option<&Doc> {
        self.docs.get(key)
    }

    pub fn docs(&self) -> impl Iterator<Item = (&DocKey, &Doc)> {
        self.docs.iter()
    }

    /// Adds or replaces a show.
    pub fn upsert(&mut self, key: DocKey, doc: Doc) {
        self.remove(&key);
        let mut fields: BTreeMap<String, u8> = BTreeMap::new();
        for (text, field) in [
            (&doc.title, TITLE),
            (&doc.theater, THEATER),
            (&doc.genre, GENRE),
        ] {
            for word in tokens(text) {
                *fields.entry(word).or_default() |= field;
            }
        }
        for (word, mask) in fields {
            if !self.postings.contains_key(&word) {
                self.add_word(&word);
            }
            self.postings
                .entry(word)
                .or_default()
                .insert(key.clone(), mask);
        }
        self.docs.insert(key, doc);
    }

    /// Removes a show (cancelled); its words stay in the vocabulary while other shows
    /// use them.
    pub fn remove(&mut self, key: &DocKey) {
        let Some(doc) = self.docs.remove(key) else {
            return;
        };
        for text in [&doc.title, &doc.theater, &doc.genre] {
            for word in tokens(text) {
                let now_unused = match self.postings.get_mut(&word) {
                    Some(postings) => {
                        postings.remove(key);
                        postings.is_empty()
                    }
                    None => false,
                };
                if now_unused {
                    self.postings.remove(&word);
                    self.remove_word(&word);
                }
            }
        }
    }

    fn add_word(&mut self, word: &str) {
        if word.chars().count() > DELETION_CHARS_MAX {
            return;
        }
        for variant in deletion_variants(word, 2) {
            self.deletions
                .entry(variant)
                .or_default()
                .insert(word.to_owned());
        }
    }

    fn remove_word(&mut self, word: &str) {
        if word.chars().count() > DELETION_CHARS_MAX {
            return;
        }
        for variant in deletion_variants(word, 2) {
            if let Some(words) = self.deletions.get_mut(&variant) {
                words.remove(word);
                if words.is_empty() {
                    self.deletions.remove(&variant);
                }
            }
        }
    }

    /// Vocabulary words that `query` may stand for, with the weight of that match.
    fn expand(&self, query: &str, is_last: bool) -> BTreeMap<String, f64> {
        let mut found: BTreeMap<String, f64> = BTreeMap::new();
        let mut offer = |word: &str, weight: f64| {
            let entry = found.entry(word.to_owned()).or_insert(0.0);
            *entry = entry.max(weight);
        };
        if self.postings.contains_key(query) {
            offer(query, 1.0);
        }
        let chars = query.chars().count();
        // Prefix matches: "aveng" -> avengers. Bounded so "a" cannot visit everything.
        if chars >= 3 || is_last {
            let prefixed = self
                .postings
                .range(query.to_owned()..)
                .take_while(|(word, _)| word.starts_with(query))
                .take(64);
            for (word, _) in prefixed {
                if word != query {
                    offer(word, 0.7);
                }
            }
        }
        if chars >= FUZZY_CHARS_MIN {
            let edits = if chars >= TWO_EDITS_CHARS_MIN { 2 } else { 1 };
            for variant in deletion_variants(query, edits) {
                let Some(words) = self.deletions.get(&variant) else {
                    continue;
                };
                for word in words {
                    let distance = strsim::osa_distance(query, word);
                    if distance == 0 || distance > edits {
                        continue;
                    }
                    offer(word, if distance == 1 { 0.5 } else { 0.3 });
                }
            }
        }
        found
    }

    /// Shows of `city` starting in `[from_ms, to_ms)` that match `query`, best first.
    pub fn search(&self, city: &str, query: &str, from_ms: u64, to_ms: u64) -> Vec<Hit> {
        let mut words = tokens(&query[..floor_char_boundary(query, QUERY_BYTES_MAX)]);
        words.truncate(QUERY_WORDS_MAX);
        let mut scores: HashMap<&DocKey, (usize, f64)> = HashMap::new();
        let last = words.len().saturating_sub(1);
        for (position, word) in words.iter().enumerate() {
            let mut best: HashMap<&DocKey, f64> = HashMap::new();
            for (candidate, weight) in self.expand(word, position == last) {
                for (key, mask) in &self.postings[&candidate] {
                    let field_weight = field_weight(*mask);
                    let score = weight * field_weight;
                    let entry = best.entry(key).or_insert(0.0);
                    *entry = entry.max(score);
                }
            }
            for (key, score) in best {
                let entry = scores.entry(key).or_insert((0, 0.0));
                entry.0 += 1;
                entry.1 += score;
            }
        }
        let mut hits: Vec<Hit> = scores
            .into_iter()
            .filter_map(|(key, (words_matched, score))| {
                let doc = &self.docs[key];
                let in_range = doc.city == city && (from_ms..to_ms).contains(&doc.start_ms);
                in_range.then(|| Hit {
                    key: key.clone(),
                    words_matched,
                    score,
                    start_ms: doc.start_ms,
                })
            })
            .collect();
        hits.sort_by(|a, b| {
            b.words_matched
                .cmp(&a.words_matched)
                .then(b.score.total_cmp(&a.score))
                .then(a.start_ms.cmp(&b.start_ms))
                .then(a.key.cmp(&b.key))
        });
        hits
    }
}

fn field_weight(mask: u8) -> f64 {
    if mask & TITLE != 0 {
        3.0
    } else if mask & THEATER != 0 {
        1.5
    } else {
        1.0
    }
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// `word` and every string made by deleting up to `edits` of its characters.
fn deletion_variants(word: &str, edits: usize) -> BTreeSet<String> {
    let mut all = BTreeSet::from([word.to_owned()]);
    let mut frontier = vec![word.chars().collect::<Vec<char>>()];
    for _ in 0..edits {
        let mut next = Vec::new();
        for chars in &frontier {
            if chars.len() <= 1 {
                continue;
            }
            for skip in 0..chars.len() {
                let variant: Vec<char> = chars
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != skip)
                    .map(|(_, c)| *c)
                    .collect();
                if all.insert(variant.iter().collect()) {
                    next.push(variant);
                }
            }
        }
        frontier = next;
    }
    all
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
    let hits = model.with_search(|index| index.search(city, text, from_ms, to_ms))?;
    let total = hits.len();
    let page: Vec<u64> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|hit| hit.key.1)
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(title: &str, theater: &str, genre: &str, start_ms: u64) -> Doc {
        Doc {
            city: "mumbai".into(),
            title: title.into(),
            theater: theater.into(),
            genre: genre.into(),
            start_ms,
        }
    }

    fn index() -> SearchIndex {
        let mut index = SearchIndex::default();
        let shows = [
            ("Avengers: Endgame", "PVR Juhu", "action", 30),
            ("Avatar", "INOX Nariman", "sci-fi", 20),
            ("Amélie", "Théâtre Lumière", "romance", 10),
            ("Jawan", "Avengers Hall", "action", 40),
            ("Stree 2", "PVR Juhu", "horror", 50),
        ];
        for (number, (title, theater, genre, start)) in shows.into_iter().enumerate() {
            index.upsert(
                ("mumbai".into(), number as u64),
                doc(title, theater, genre, start),
            );
        }
        index
    }

    fn titles(index: &SearchIndex, query: &str) -> Vec<String> {
        index
            .search("mumbai", query, 0, u64::MAX)
            .iter()
            .map(|hit| index.doc(&hit.key).unwrap().title.clone())
            .collect()
    }

    #[test]
    fn words_fold_case_and_accents() {
        assert_eq!(
            tokens("Amélie, THÉÂTRE  lumière!"),
            ["amelie", "theatre", "lumiere"]
        );
        assert_eq!(tokens("Kalki 2898-AD"), ["kalki", "2898", "ad"]);
        assert!(tokens(" ,;").is_empty());
    }

    #[test]
    fn typos_accents_and_prefixes_find_the_show() {
        let index = index();
        assert_eq!(titles(&index, "avngers")[0], "Avengers: Endgame");
        assert_eq!(titles(&index, "AVENEGRS")[0], "Avengers: Endgame");
        assert_eq!(titles(&index, "amelie"), ["Amélie"]);
        assert_eq!(titles(&index, "theatre lumiere"), ["Amélie"]);
        assert_eq!(titles(&index, "aveng")[0], "Avengers: Endgame");
        assert_eq!(titles(&index, "horror"), ["Stree 2"]);
        assert!(titles(&index, "zzzzzz").is_empty());
        // A title match ranks above a theater match; more matched words rank first.
        assert_eq!(titles(&index, "avengers"), ["Avengers: Endgame", "Jawan"]);
        assert_eq!(titles(&index, "action jawan")[0], "Jawan");
    }

    #[test]
    fn removed_shows_and_other_cities_and_dates_are_not_found() {
        let mut index = index();
        index.remove(&("mumbai".into(), 0));
        assert_eq!(titles(&index, "avengers"), ["Jawan"]);
        assert!(index.search("delhi", "jawan", 0, u64::MAX).is_empty());
        assert!(index.search("mumbai", "jawan", 0, 40).is_empty());
        // The word "endgame" left the vocabulary with its only show.
        assert!(titles(&index, "endgame").is_empty());
        assert!(titles(&index, "endgam").is_empty());
    }

    #[test]
    fn long_and_odd_queries_are_bounded() {
        let index = index();
        let long = "é".repeat(500);
        assert!(titles(&index, &long).is_empty());
        let many = "jawan ".repeat(50);
        assert_eq!(titles(&index, &many), ["Jawan"]);
        assert!(titles(&index, "").is_empty());
    }
}
