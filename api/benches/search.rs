//! Search latency at scale: builds the show index with 100k synthetic shows (titles,
//! theaters and genres from word lists, some accented) and times queries of each kind:
//! exact words, typos, accents, prefixes, several words, and a word that matches many
//! shows, each as the first page of 20 ranked hits (what the route asks). Prints
//! figures; asserts nothing about speed.
//!
//! `cargo bench -p api --bench search` (optionally `-- 200000` for another size).

use api::search::{Doc, SearchIndex};
use std::time::{Duration, Instant};

const TITLE_WORDS: &[&str] = &[
    "avengers",
    "endgame",
    "jawan",
    "pathaan",
    "dunki",
    "animal",
    "kalki",
    "stree",
    "amélie",
    "lagaan",
    "sholay",
    "dangal",
    "baahubali",
    "kantara",
    "drishyam",
    "andhadhun",
    "tumbbad",
    "barfi",
    "queen",
    "piku",
    "rockstar",
    "swades",
    "haider",
    "omkara",
    "gangs",
    "wasseypur",
    "interstellar",
    "inception",
    "oppenheimer",
    "dune",
    "arrival",
    "parasite",
    "roma",
    "coco",
    "frozen",
    "moana",
    "encanto",
    "soul",
    "up",
    "wall",
    "ratatouille",
    "zindagi",
    "dobara",
    "milegi",
    "chak",
    "india",
    "chhichhore",
    "munna",
    "bhai",
    "rang",
    "basanti",
];
const THEATER_WORDS: &[&str] = &[
    "pvr",
    "inox",
    "cinépolis",
    "carnival",
    "miraj",
    "gold",
    "imax",
    "regal",
    "maratha",
    "mandir",
    "juhu",
    "andheri",
    "bandra",
    "worli",
    "phoenix",
    "palladium",
    "nariman",
    "colaba",
    "powai",
    "thane",
];
const GENRES: &[&str] = &[
    "action",
    "drama",
    "comedy",
    "romance",
    "thriller",
    "horror",
    "sci-fi",
    "animation",
    "documentary",
    "musical",
];

/// A small deterministic generator (xorshift), so every run indexes the same shows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[(self.next() % words.len() as u64) as usize]
    }
}

fn build(shows: usize) -> SearchIndex {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut index = SearchIndex::default();
    for number in 0..shows as u64 {
        let words = 1 + rng.next() % 3;
        let title: Vec<&str> = (0..words).map(|_| rng.pick(TITLE_WORDS)).collect();
        let theater = format!(
            "{} {} {}",
            rng.pick(THEATER_WORDS),
            rng.pick(THEATER_WORDS),
            number % 500
        );
        let doc = Doc {
            city: "mumbai".into(),
            title: format!("{} {}", title.join(" "), number % 97),
            theater,
            genre: rng.pick(GENRES).into(),
            start_ms: 1_800_000_000_000 + number * 60_000,
        };
        index.upsert(("mumbai".into(), number), doc);
    }
    index
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let shows: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(100_000);
    let started = Instant::now();
    let index = build(shows);
    println!(
        "search bench: indexed {} shows in {:.2} s",
        index.len(),
        started.elapsed().as_secs_f64()
    );
    let kinds: &[(&str, &[&str])] = &[
        (
            "exact word",
            &["interstellar", "kantara", "oppenheimer", "baahubali"],
        ),
        (
            "typo (1 edit)",
            &["avngers", "intersteller", "oppenhiemer", "kantra"],
        ),
        (
            "typo (2 edits)",
            &["avenjrs", "baahobaly", "interstelar", "drishyum"],
        ),
        (
            "accent folded",
            &["amelie", "cinepolis", "AMÉLIE", "Cinépolis"],
        ),
        ("prefix", &["interst", "oppen", "baahu", "andha"]),
        (
            "several words",
            &[
                "avengers endgame",
                "gangs wasseypur",
                "zindagi dobara",
                "pvr juhu drama",
            ],
        ),
        ("very common word", &["action", "pvr", "india", "soul"]),
    ];
    println!(
        "{:<18} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "query kind", "queries", "hits(avg)", "p50 µs", "p99 µs", "max µs"
    );
    for (kind, queries) in kinds {
        let mut times = Vec::new();
        let mut hits = 0usize;
        for round in 0..50 {
            for query in *queries {
                // What `GET /api/v1/shows?search=` asks: the first page of 20 and the
                // number of hits.
                let start = Instant::now();
                let found = index.search_page("mumbai", query, 0, u64::MAX, 0, 20);
                times.push(start.elapsed());
                if round == 0 {
                    hits += found.1;
                }
                std::hint::black_box(found);
            }
        }
        times.sort();
        println!(
            "{:<18} {:>8} {:>10} {:>10} {:>10} {:>10}",
            kind,
            times.len(),
            hits / queries.len(),
            percentile(&times, 0.50).as_micros(),
            percentile(&times, 0.99).as_micros(),
            times.last().copied().unwrap_or_default().as_micros(),
        );
    }
    let first = index.search("mumbai", "avngers", 0, u64::MAX);
    let title = first
        .first()
        .and_then(|hit| index.doc(&hit.key))
        .map(|doc| doc.title.clone())
        .unwrap_or_default();
    println!("search bench: \"avngers\" -> first hit {title:?}");
}
