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
//! or two (0.3, words of eight or more characters; numbers are never fuzzy); a match in
//! the title counts three times, the theater 1.5 times, the genre once. Only shows that
//! match every query word are returned (or, when none does, those matching the most
//! words); higher scores first, then earlier shows.

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

/// A document's dense slot number, so that scoring touches arrays, not hash maps.
type Slot = u32;

/// The search index of any number of shows.
#[derive(Default)]
pub struct SearchIndex {
    /// Documents by slot; `None` for a free slot.
    slots: Vec<Option<(DocKey, Doc)>>,
    by_key: HashMap<DocKey, Slot>,
    free: Vec<Slot>,
    /// word -> slots of the documents containing it, with the fields it occurs in.
    postings: BTreeMap<String, HashMap<Slot, u8>>,
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
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn contains(&self, key: &DocKey) -> bool {
        self.by_key.contains_key(key)
    }

    pub fn doc(&self, key: &DocKey) -> Option<&Doc> {
        let slot = *self.by_key.get(key)?;
        self.slots[slot as usize].as_ref().map(|(_, doc)| doc)
    }

    pub fn docs(&self) -> impl Iterator<Item = (&DocKey, &Doc)> {
        self.slots.iter().flatten().map(|(key, doc)| (key, doc))
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
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as Slot
            }
        };
        for (word, mask) in fields {
            if !self.postings.contains_key(&word) {
                self.add_word(&word);
            }
            self.postings.entry(word).or_default().insert(slot, mask);
        }
        self.by_key.insert(key.clone(), slot);
        self.slots[slot as usize] = Some((key, doc));
    }

    /// Removes a show (cancelled); its words stay in the vocabulary while other shows
    /// use them.
    pub fn remove(&mut self, key: &DocKey) {
        let Some(slot) = self.by_key.remove(key) else {
            return;
        };
        let Some((_, doc)) = self.slots[slot as usize].take() else {
            return;
        };
        self.free.push(slot);
        for text in [&doc.title, &doc.theater, &doc.genre] {
            for word in tokens(text) {
                let now_unused = match self.postings.get_mut(&word) {
                    Some(postings) => {
                        postings.remove(&slot);
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
        // Numbers are not misspelt words: "2898" must not find "2899".
        let numeric = query.chars().any(|c| c.is_ascii_digit());
        if chars >= FUZZY_CHARS_MIN && !numeric {
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

    /// Every show of `city` starting in `[from_ms, to_ms)` that matches `query`, best
    /// first.
    pub fn search(&self, city: &str, query: &str, from_ms: u64, to_ms: u64) -> Vec<Hit> {
        self.search_page(city, query, from_ms, to_ms, 0, usize::MAX)
            .0
    }

    /// One page of `search` (`offset`, `limit`) and the number of hits in all. Only
    /// the hits up to the page's end are sorted.
    pub fn search_page(
        &self,
        city: &str,
        query: &str,
        from_ms: u64,
        to_ms: u64,
        offset: usize,
        limit: usize,
    ) -> (Vec<Hit>, usize) {
        let mut words = tokens(&query[..floor_char_boundary(query, QUERY_BYTES_MAX)]);
        words.truncate(QUERY_WORDS_MAX);
        // Dense per-query arrays: matched words and summed score per slot, and each
        // word's best score per slot; `touched` lists the slots that have any.
        let mut matched: Vec<u8> = vec![0; self.slots.len()];
        let mut total: Vec<f64> = vec![0.0; self.slots.len()];
        let mut best: Vec<f64> = vec![0.0; self.slots.len()];
        let mut touched: Vec<Slot> = Vec::new();
        let last = words.len().saturating_sub(1);
        for (position, word) in words.iter().enumerate() {
            let mut word_slots: Vec<Slot> = Vec::new();
            for (candidate, weight) in self.expand(word, position == last) {
                for (slot, mask) in &self.postings[&candidate] {
                    let score = weight * field_weight(*mask);
                    let entry = &mut best[*slot as usize];
                    if *entry == 0.0 {
                        word_slots.push(*slot);
                    }
                    *entry = entry.max(score);
                }
            }
            for slot in word_slots {
                let at = slot as usize;
                if matched[at] == 0 {
                    touched.push(slot);
                }
                matched[at] += 1;
                total[at] += best[at];
                best[at] = 0.0;
            }
        }
        let mut hits: Vec<(Slot, u8, f64, u64)> = touched
            .into_iter()
            .filter_map(|slot| {
                let (_, doc) = self.slots[slot as usize].as_ref()?;
                let in_range = doc.city == city && (from_ms..to_ms).contains(&doc.start_ms);
                in_range.then(|| {
                    let at = slot as usize;
                    (slot, matched[at], total[at], doc.start_ms)
                })
            })
            .collect();
        // Shows that match every word of the query, or if none does, those that match
        // the most words ("avengers mumbai" still finds Avengers).
        let most = hits.iter().map(|hit| hit.1).max().unwrap_or(0);
        hits.retain(|hit| hit.1 == most);
        let count = hits.len();
        let order = |a: &(Slot, u8, f64, u64), b: &(Slot, u8, f64, u64)| {
            b.1.cmp(&a.1)
                .then(b.2.total_cmp(&a.2))
                .then(a.3.cmp(&b.3))
                .then_with(|| self.key_of(a.0).cmp(self.key_of(b.0)))
        };
        let end = offset.saturating_add(limit).min(count);
        if end < count && end > 0 {
            hits.select_nth_unstable_by(end - 1, order);
            hits.truncate(end);
        }
        hits.sort_by(order);
        let page = hits
            .into_iter()
            .skip(offset)
            .map(|(slot, words_matched, score, start_ms)| Hit {
                key: self.key_of(slot).clone(),
                words_matched: words_matched.into(),
                score,
                start_ms,
            })
            .collect();
        (page, count)
    }

    fn key_of(&self, slot: Slot) -> &DocKey {
        const NONE: &DocKey = &(String::new(), 0);
        self.slots[slot as usize]
            .as_ref()
            .map_or(NONE, |(key, _)| key)
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
        assert_eq!(titles(&index, "action jawan"), ["Jawan"]);
        // Every word must match; a word no show has is dropped only when nothing else
        // is left.
        assert_eq!(titles(&index, "avengers endgame"), ["Avengers: Endgame"]);
        assert_eq!(
            titles(&index, "avengers mumbai"),
            ["Avengers: Endgame", "Jawan"]
        );
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
    fn pages_are_slices_of_the_full_ranking() {
        let mut index = index();
        // Slots are reused after a removal; rankings must not depend on slot order.
        index.remove(&("mumbai".into(), 1));
        index.upsert(
            ("mumbai".into(), 9),
            doc("Avatar 2", "PVR Juhu", "sci-fi", 5),
        );
        for query in ["avengers", "pvr juhu", "action", "av", "a", "zzz"] {
            let full = index.search("mumbai", query, 0, u64::MAX);
            for size in [1, 2, 3] {
                let mut paged = Vec::new();
                for offset in (0..full.len() + size).step_by(size) {
                    let (page, total) =
                        index.search_page("mumbai", query, 0, u64::MAX, offset, size);
                    assert_eq!(total, full.len(), "{query}");
                    paged.extend(page);
                }
                assert_eq!(paged, full, "{query} in pages of {size}");
            }
        }
    }

    #[test]
    fn long_and_odd_queries_are_bounded() {
        let index = index();
        let long = "é".repeat(500);
        assert!(titles(&index, &long).is_empty());
        // Numbers match exactly or by prefix, never within an edit.
        assert_eq!(titles(&index, "stree 2"), ["Stree 2"]);
        assert!(titles(&index, "3").is_empty());
        let many = "jawan ".repeat(50);
        assert_eq!(titles(&index, &many), ["Jawan"]);
        assert!(titles(&index, "").is_empty());
    }
}
