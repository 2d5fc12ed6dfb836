//! Results on disk and the report made from them. Every run writes one JSON record;
//! `render_markdown` turns a directory's records into the tables of the issue (per
//! scenario: throughput, p50/p99/p999, errors per system), the ratios against
//! PostgreSQL and the targets; `render_svg` draws throughput against
//! concurrency. Rendering is pure: records in, text out.

use crate::histogram::Summary;
use crate::runner::{Counts, Mode};
use crate::scenario::ScenarioName;
use crate::target::TargetName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One run: what ran, against what, and what came out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub scenario: ScenarioName,
    pub target: TargetName,
    /// The system as it described itself (version, durability settings).
    pub system: String,
    pub mode: Mode,
    pub warmup_s: f64,
    pub measured_s: f64,
    pub op_timeout_s: f64,
    pub seed: u64,
    pub cities: usize,
    pub seats_per_show: u32,
    pub shows_per_city: usize,
    pub shows_used: usize,
    /// Some city filled its last show: later locks there mostly conflicted.
    pub pool_exhausted: bool,
    pub counts: Counts,
    pub throughput: Throughput,
    /// Latency summaries by operation (`lock`, `confirm`, `lock_and_confirm`, reads).
    pub latency: BTreeMap<String, Summary>,
    /// A few error messages and how often each occurred.
    pub error_samples: BTreeMap<String, u64>,
    /// `/proc/loadavg` when the run ended: other work on the machine.
    pub load_average: String,
    pub finished_unix_s: u64,
}

/// Per-second rates over the measured window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub operations: f64,
    /// Lock requests answered (locked or refused because a seat was taken).
    pub locks: f64,
    pub locks_ok: f64,
    pub confirms: f64,
    pub reads: f64,
}

impl Throughput {
    pub fn from_counts(counts: &Counts, seconds: f64) -> Throughput {
        let per = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        Throughput {
            operations: per(counts.operations),
            locks: per(counts.locks),
            locks_ok: per(counts.locks_ok),
            confirms: per(counts.confirms_ok),
            reads: per(counts.reads_ok),
        }
    }
}

/// The machine's own costs, for the single-client latency budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub fsync_p50_us: u64,
    pub fsync_p99_us: u64,
    pub loopback_rtt_p50_us: u64,
    pub loopback_rtt_p99_us: u64,
    pub load_average: String,
}

impl Baseline {
    /// The single-client lock budget: 3 fsyncs + 2 loopback round trips.
    pub fn lock_budget_us(&self) -> u64 {
        3 * self.fsync_p50_us + 2 * self.loopback_rtt_p50_us
    }
}

impl RunRecord {
    /// A file name that sorts and says what ran.
    pub fn file_name(&self) -> String {
        let load = match self.mode {
            Mode::Closed { clients } => format!("c{clients:04}"),
            Mode::Open { rate, .. } => format!("r{:07}", rate.round() as u64),
        };
        format!(
            "{}-{}-{load}.json",
            self.scenario.as_str(),
            self.target.as_str()
        )
    }

    fn load_label(&self) -> String {
        match self.mode {
            Mode::Closed { clients } => format!("{clients} clients"),
            Mode::Open { rate, sessions } => format!("{rate:.0}/s open ({sessions} conns)"),
        }
    }

    fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed { .. })
    }

    /// The operation whose latency stands for the run: a granted lock, the step every
    /// scenario shares (refused locks have their own histogram, `lock_refused`).
    fn lock_latency(&self) -> Option<&Summary> {
        self.latency.get("lock")
    }
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1_000.0)
}

fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0 && numerator.is_finite()).then(|| numerator / denominator)
}

fn show_ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |r| format!("{r:.2}"))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

/// Records ordered for tables: scenario, closed before open, load, target.
fn ordered(records: &[RunRecord]) -> Vec<&RunRecord> {
    let mut sorted: Vec<&RunRecord> = records.iter().collect();
    let rank = |r: &RunRecord| {
        let scenario = ScenarioName::ALL.iter().position(|s| *s == r.scenario);
        match r.mode {
            Mode::Closed { clients } => (scenario, 0u8, clients as f64),
            Mode::Open { rate, .. } => (scenario, 1u8, rate),
        }
    };
    sorted.sort_by(|a, b| {
        let (ra, rb) = (rank(a), rank(b));
        ra.0.cmp(&rb.0)
            .then(ra.1.cmp(&rb.1))
            .then(ra.2.total_cmp(&rb.2))
            .then(a.target.cmp(&b.target))
    });
    sorted
}

/// Finds the closed-loop run of `scenario` and `target` at `clients`.
fn closed(
    records: &[RunRecord],
    scenario: ScenarioName,
    target: TargetName,
    clients: usize,
) -> Option<&RunRecord> {
    records.iter().find(|r| {
        r.scenario == scenario && r.target == target && r.mode == Mode::Closed { clients }
    })
}

/// Closed-loop client counts that `scenario` ran for both targets.
fn common_clients(
    records: &[RunRecord],
    scenario: ScenarioName,
    a: TargetName,
    b: TargetName,
) -> Vec<usize> {
    let mut clients: Vec<usize> = records
        .iter()
        .filter(|r| r.scenario == scenario && r.target == a)
        .filter_map(|r| match r.mode {
            Mode::Closed { clients } => Some(clients),
            Mode::Open { .. } => None,
        })
        .filter(|c| closed(records, scenario, b, *c).is_some())
        .collect();
    clients.sort_unstable();
    clients.dedup();
    clients
}

/// The whole report in Markdown.
pub fn render_markdown(records: &[RunRecord], baseline: Option<&Baseline>, title: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {title}\n");
    let mut systems: BTreeMap<TargetName, &str> = BTreeMap::new();
    for record in records {
        systems.entry(record.target).or_insert(&record.system);
    }
    let _ = writeln!(out, "## Systems\n");
    for (target, system) in &systems {
        let _ = writeln!(out, "- `{}`: {system}", target.as_str());
    }
    if let Some(baseline) = baseline {
        let _ = writeln!(
            out,
            "\nMachine: fsync of a 4 KiB append p50 {} ms (p99 {} ms), loopback round trip p50 {} ms \
             (p99 {} ms); single-client lock budget 3 fsyncs + 2 round trips = {} ms. Load \
             average at the start: {}.",
            ms(baseline.fsync_p50_us),
            ms(baseline.fsync_p99_us),
            ms(baseline.loopback_rtt_p50_us),
            ms(baseline.loopback_rtt_p99_us),
            ms(baseline.lock_budget_us()),
            baseline.load_average
        );
    }
    render_targets(&mut out, records, baseline);
    for scenario in ScenarioName::ALL {
        let runs: Vec<&RunRecord> = ordered(records)
            .into_iter()
            .filter(|r| r.scenario == scenario)
            .collect();
        if runs.is_empty() {
            continue;
        }
        render_scenario(&mut out, scenario, &runs, records);
    }
    out
}

fn render_scenario(
    out: &mut String,
    scenario: ScenarioName,
    runs: &[&RunRecord],
    all: &[RunRecord],
) {
    let first = runs[0];
    let _ = writeln!(
        out,
        "\n## Scenario `{}`\n\n{} cit{}, {} seats per show, {} s warm-up, {} s measured per run. \
         Rates are per second of the measured window; latencies in ms of granted locks \
         (from the request, or from its intended time in open loop; refused locks are \
         `lock_refused` below).\n",
        scenario.as_str(),
        first.cities,
        if first.cities == 1 { "y" } else { "ies" },
        first.seats_per_show,
        first.warmup_s,
        first.measured_s
    );
    let _ = writeln!(
        out,
        "| system | load | ops/s | locks/s | locked/s | confirms/s | reads/s | lock p50 | lock p99 | lock p999 | conflicts | errors | unfinished | load avg |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in runs {
        let lock = r.lock_latency().cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "| {}{} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.target.as_str(),
            if r.pool_exhausted { " (shows ran out)" } else { "" },
            r.load_label(),
            r.throughput.operations,
            r.throughput.locks,
            r.throughput.locks_ok,
            r.throughput.confirms,
            r.throughput.reads,
            ms(lock.p50_us),
            ms(lock.p99_us),
            ms(lock.p999_us),
            r.counts.conflicts,
            r.counts.errors,
            r.counts.unfinished,
            r.load_average
        );
    }
    let _ = writeln!(out, "\nLatency of every operation (ms):\n");
    let _ = writeln!(
        out,
        "| system | load | operation | count | p50 | p99 | p999 | max |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|");
    for r in runs {
        for (operation, summary) in &r.latency {
            let _ = writeln!(
                out,
                "| {} | {} | {operation} | {} | {} | {} | {} | {} |",
                r.target.as_str(),
                r.load_label(),
                summary.count,
                ms(summary.p50_us),
                ms(summary.p99_us),
                ms(summary.p999_us),
                ms(summary.max_us)
            );
        }
    }
    let clients = common_clients(all, scenario, TargetName::Ours, TargetName::Postgres);
    if !clients.is_empty() {
        let _ = writeln!(
            out,
            "\nOurs against PostgreSQL, same scenario and clients:\n"
        );
        let _ = writeln!(
            out,
            "| clients | ops/s ours/pg | locks/s ours/pg | lock p99 ours/pg | rest ops/s / ours |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
        for c in clients {
            let (Some(ours), Some(pg)) = (
                closed(all, scenario, TargetName::Ours, c),
                closed(all, scenario, TargetName::Postgres, c),
            ) else {
                continue;
            };
            let p99 = |r: &RunRecord| r.lock_latency().map_or(0.0, |s| s.p99_us as f64);
            let rest = closed(all, scenario, TargetName::Rest, c)
                .and_then(|rest| ratio(rest.throughput.operations, ours.throughput.operations));
            let _ = writeln!(
                out,
                "| {c} | {} | {} | {} | {} |",
                show_ratio(ratio(ours.throughput.operations, pg.throughput.operations)),
                show_ratio(ratio(ours.throughput.locks, pg.throughput.locks)),
                show_ratio(ratio(p99(ours), p99(pg))),
                show_ratio(rest),
            );
        }
    }
    for r in runs.iter().filter(|r| !r.error_samples.is_empty()) {
        let _ = writeln!(
            out,
            "\nErrors of `{}` at {}:\n",
            r.target.as_str(),
            r.load_label()
        );
        for (message, count) in &r.error_samples {
            let excerpt: String = message.chars().take(160).collect();
            let _ = writeln!(out, "- {count} x `{}`", excerpt.replace('`', "'"));
        }
    }
    let _ = writeln!(
        out,
        "\n![throughput vs concurrency](throughput-{}.svg)",
        scenario.as_str()
    );
}

/// The targets, each with the figures it was judged on.
fn render_targets(out: &mut String, records: &[RunRecord], baseline: Option<&Baseline>) {
    let _ = writeln!(out, "\n## The issue's targets\n");
    let _ = writeln!(out, "| target | measured | ratio | verdict |");
    let _ = writeln!(out, "|---|---|---:|---|");
    let stampede = ScenarioName::Stampede;
    let clients = common_clients(records, stampede, TargetName::Ours, TargetName::Postgres);
    match clients.last() {
        Some(&c) => {
            let ours = closed(records, stampede, TargetName::Ours, c);
            let pg = closed(records, stampede, TargetName::Postgres, c);
            if let (Some(ours), Some(pg)) = (ours, pg) {
                let locks = ratio(ours.throughput.locks, pg.throughput.locks);
                let _ = writeln!(
                    out,
                    "| stampede locks/s >= 1.0x PostgreSQL ({c} clients) | ours {:.0}/s, pg {:.0}/s | {} | {} |",
                    ours.throughput.locks,
                    pg.throughput.locks,
                    show_ratio(locks),
                    verdict(locks.map(|r| r >= 1.0))
                );
                let p99 = |r: &RunRecord| r.lock_latency().map_or(0, |s| s.p99_us);
                let tail = ratio(p99(ours) as f64, p99(pg) as f64);
                let _ = writeln!(
                    out,
                    "| stampede lock p99 <= 1.5x PostgreSQL p99 ({c} clients) | ours {} ms, pg {} ms | {} | {} |",
                    ms(p99(ours)),
                    ms(p99(pg)),
                    show_ratio(tail),
                    verdict(tail.map(|r| r <= 1.5))
                );
            }
        }
        None => {
            let _ = writeln!(
                out,
                "| stampede vs PostgreSQL | no common run | n/a | not measured |"
            );
        }
    }
    let single = closed(records, stampede, TargetName::Ours, 1).and_then(RunRecord::lock_latency);
    match (single, baseline) {
        (Some(lock), Some(baseline)) => {
            let budget = baseline.lock_budget_us();
            let r = ratio(lock.p50_us as f64, budget as f64);
            let _ = writeln!(
                out,
                "| single-client lock p50 <= 3 fsyncs + 2 loopback RTTs | {} ms vs budget {} ms | {} | {} |",
                ms(lock.p50_us),
                ms(budget),
                show_ratio(r),
                verdict(r.map(|r| r <= 1.0))
            );
        }
        _ => {
            let _ = writeln!(out, "| single-client lock latency | no 1-client run or no baseline | n/a | not measured |");
        }
    }
    let browsing = records
        .iter()
        .filter(|r| {
            r.scenario == ScenarioName::Browsing && r.target == TargetName::Ours && r.is_closed()
        })
        .max_by_key(|r| r.mode.concurrency());
    let reads = browsing.and_then(|r| {
        Some((
            r,
            r.latency.get("read_linearizable_leader")?,
            r.latency.get("read_linearizable_follower")?,
        ))
    });
    match reads {
        Some((run, leader, follower)) => {
            let r = ratio(follower.p50_us as f64, leader.p50_us as f64);
            let _ = writeln!(
                out,
                "| follower linearizable read p50 <= 1.2x leader's (browsing, {}) | follower {} ms, leader {} ms | {} | {} |",
                run.load_label(),
                ms(follower.p50_us),
                ms(leader.p50_us),
                show_ratio(r),
                verdict(r.map(|r| r <= 1.2))
            );
        }
        None => {
            let _ = writeln!(out, "| follower vs leader linearizable read | no browsing run of `ours` | n/a | not measured |");
        }
    }
    // The REST tier's cost is measured against the same ledger work: REST confirms
    // with the payment saga, so its baseline is `ours-saga` when that ran.
    let baseline =
        if common_clients(records, stampede, TargetName::Rest, TargetName::OursSaga).is_empty() {
            TargetName::Ours
        } else {
            TargetName::OursSaga
        };
    if !rest_tier_row(out, records, stampede, baseline) {
        let _ = writeln!(
            out,
            "| REST tier cost | no common run | n/a | not measured |"
        );
    }
    // Browsing maps one REST call to one protocol call (a seat-map read, a lock), with
    // no payment saga: the REST tier's own cost, operation for operation.
    rest_tier_row(out, records, ScenarioName::Browsing, TargetName::Ours);
}

/// The REST tier's cost on `scenario` against `baseline` at their highest common client
/// count; false when they have no common run.
fn rest_tier_row(
    out: &mut String,
    records: &[RunRecord],
    scenario: ScenarioName,
    baseline: TargetName,
) -> bool {
    let Some(&c) = common_clients(records, scenario, TargetName::Rest, baseline).last() else {
        return false;
    };
    let rest = closed(records, scenario, TargetName::Rest, c);
    let ours = closed(records, scenario, baseline, c);
    if let (Some(rest), Some(ours)) = (rest, ours) {
        let r = ratio(rest.throughput.operations, ours.throughput.operations);
        let _ = writeln!(
            out,
            "| REST tier costs < 30% of throughput ({}, {c} clients) | rest {:.0} ops/s, protocol ({}) {:.0} ops/s | {} | {} |",
            scenario.as_str(),
            rest.throughput.operations,
            baseline.as_str(),
            ours.throughput.operations,
            show_ratio(r),
            verdict(r.map(|r| r > 0.7))
        );
    }
    true
}

const COLORS: [(TargetName, &str); 5] = [
    (TargetName::Ours, "#1f77b4"),
    (TargetName::OursSaga, "#17becf"),
    (TargetName::Rest, "#2ca02c"),
    (TargetName::Postgres, "#d62728"),
    (TargetName::Redis, "#7f7f7f"),
];

/// Throughput (operations/s) against closed-loop clients, one line per system, log2
/// x axis. `None` when the scenario has no closed-loop run.
pub fn render_svg(records: &[RunRecord], scenario: ScenarioName) -> Option<String> {
    let mut lines: BTreeMap<TargetName, Vec<(usize, f64)>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.scenario == scenario) {
        if let Mode::Closed { clients } = r.mode {
            lines
                .entry(r.target)
                .or_default()
                .push((clients.max(1), r.throughput.operations));
        }
    }
    if lines.is_empty() {
        return None;
    }
    for points in lines.values_mut() {
        points.sort_by_key(|p| p.0);
    }
    let (width, height) = (720.0, 420.0);
    let (left, right, top, bottom) = (70.0, 150.0, 40.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let all = lines.values().flatten();
    let x_max = all
        .clone()
        .map(|p| (p.0 as f64).log2())
        .fold(0.0, f64::max)
        .max(1.0);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let x = |clients: usize| left + (clients as f64).log2() / x_max * plot_w;
    let y = |rate: f64| top + plot_h - rate / y_max * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        svg,
        "<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}: operations/s vs clients</text>",
        left + plot_w / 2.0,
        scenario.as_str()
    );
    for step in 0..=5 {
        let rate = y_max * f64::from(step) / 5.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{4:.0}</text>",
            y(rate),
            left + plot_w,
            left - 6.0,
            y(rate) + 4.0,
            rate
        );
    }
    let mut ticks: Vec<usize> = lines.values().flatten().map(|p| p.0).collect();
    ticks.sort_unstable();
    ticks.dedup();
    for clients in ticks {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#eee\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{clients}</text>",
            x(clients),
            top + plot_h,
            top + plot_h + 16.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">clients (closed loop, log scale)</text>",
        left + plot_w / 2.0,
        height - 12.0
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0:.1}\" stroke=\"black\"/>\
         <line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"black\"/>",
        top + plot_h,
        left + plot_w
    );
    for (n, (target, points)) in lines.iter().enumerate() {
        let color = COLORS
            .iter()
            .find(|(t, _)| t == target)
            .map_or("black", |(_, c)| c);
        let path: Vec<String> = points
            .iter()
            .map(|(c, rate)| format!("{:.1},{:.1}", x(*c), y(*rate)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (c, rate) in points {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                x(*c),
                y(*rate)
            );
        }
        let legend_y = top + 10.0 + n as f64 * 20.0;
        let label = match target {
            TargetName::Redis => "redis (not durable)",
            other => other.as_str(),
        };
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{legend_y:.1}\" x2=\"{1:.1}\" y2=\"{legend_y:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>\
             <text x=\"{2:.1}\" y=\"{3:.1}\">{label}</text>",
            left + plot_w + 12.0,
            left + plot_w + 32.0,
            left + plot_w + 38.0,
            legend_y + 4.0
        );
    }
    svg.push_str("</svg>\n");
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: TargetName, clients: usize, locks: u64, p99_us: u64) -> RunRecord {
        let counts = Counts {
            operations: locks,
            locks,
            locks_ok: locks / 2,
            conflicts: locks / 2,
            ..Counts::default()
        };
        let mut latency = BTreeMap::new();
        latency.insert(
            "lock".to_string(),
            Summary {
                count: locks,
                p50_us: p99_us / 2,
                p99_us,
                p999_us: p99_us * 2,
                max_us: p99_us * 3,
                ..Summary::default()
            },
        );
        RunRecord {
            scenario: ScenarioName::Stampede,
            target,
            system: format!("{} system", target.as_str()),
            mode: Mode::Closed { clients },
            warmup_s: 1.0,
            measured_s: 10.0,
            op_timeout_s: 10.0,
            seed: 1,
            cities: 1,
            seats_per_show: 10_000,
            shows_per_city: 4,
            shows_used: 2,
            pool_exhausted: false,
            throughput: Throughput::from_counts(&counts, 10.0),
            counts,
            latency,
            error_samples: BTreeMap::new(),
            load_average: "1.00 1.00 1.00".into(),
            finished_unix_s: 0,
        }
    }

    #[test]
    fn tables_and_ratios_come_from_the_records() {
        let records = vec![
            record(TargetName::Postgres, 256, 20_000, 40_000),
            record(TargetName::Ours, 256, 15_000, 80_000),
            record(TargetName::Ours, 1, 500, 2_000),
            record(TargetName::Postgres, 1, 800, 1_000),
            record(TargetName::Rest, 256, 12_000, 90_000),
        ];
        let baseline = Baseline {
            fsync_p50_us: 200,
            fsync_p99_us: 400,
            loopback_rtt_p50_us: 50,
            loopback_rtt_p99_us: 90,
            load_average: "0.5".into(),
        };
        let text = render_markdown(&records, Some(&baseline), "Test");
        assert!(text.contains("## Scenario `stampede`"), "{text}");
        // 15,000 / 20,000 locks: 0.75 of PostgreSQL, a missed target.
        assert!(
            text.contains("| ours 1500/s, pg 2000/s | 0.75 | NOT met |"),
            "{text}"
        );
        // p99 80 ms against 40 ms: 2.00.
        assert!(
            text.contains("| ours 80.00 ms, pg 40.00 ms | 2.00 | NOT met |"),
            "{text}"
        );
        // Single client p50 1 ms against 3 x 0.2 + 2 x 0.05 = 0.7 ms.
        assert!(
            text.contains("| 1.00 ms vs budget 0.70 ms | 1.43 | NOT met |"),
            "{text}"
        );
        // REST: 1,200 / 1,500 ops/s = 0.80, within the 30 % cost.
        assert!(text.contains("| 0.80 | met |"), "{text}");
        // The ratio table has one row per common client count, in order.
        let one = text.find("| 1 | 0.62 |").expect("1-client ratio row");
        let many = text.find("| 256 | 0.75 |").expect("256-client ratio row");
        assert!(one < many);
        assert!(
            text.contains("not measured"),
            "browsing was not run: {text}"
        );
        // Ordered table rows: 1 client before 256.
        let first = text.find("| ours | 1 clients |").unwrap();
        let later = text.find("| ours | 256 clients |").unwrap();
        assert!(first < later);
    }

    #[test]
    fn the_rest_tier_is_judged_on_browsing_too() {
        let browsing = |target, clients, operations| RunRecord {
            scenario: ScenarioName::Browsing,
            ..record(target, clients, operations, 1_000)
        };
        let records = vec![
            browsing(TargetName::Ours, 16, 10_000),
            browsing(TargetName::Rest, 16, 6_000),
            browsing(TargetName::Ours, 64, 12_000),
            browsing(TargetName::Rest, 64, 9_000),
        ];
        let text = render_markdown(&records, None, "Test");
        // The highest common client count: 9,000 / 12,000 = 0.75, within the 30 % cost.
        assert!(
            text.contains(
                "| REST tier costs < 30% of throughput (browsing, 64 clients) | rest 900 ops/s, \
                 protocol (ours) 1200 ops/s | 0.75 | met |"
            ),
            "{text}"
        );
        let missed = vec![
            browsing(TargetName::Ours, 16, 10_000),
            browsing(TargetName::Rest, 16, 6_000),
        ];
        let text = render_markdown(&missed, None, "Test");
        assert!(text.contains("(browsing, 16 clients)"), "{text}");
        assert!(text.contains("| 0.60 | NOT met |"), "{text}");
    }

    #[test]
    fn svg_has_one_line_per_system_with_a_point_per_run() {
        let records = vec![
            record(TargetName::Ours, 1, 500, 2_000),
            record(TargetName::Ours, 16, 5_000, 2_000),
            record(TargetName::Ours, 256, 15_000, 2_000),
            record(TargetName::Postgres, 1, 800, 1_000),
            record(TargetName::Postgres, 256, 20_000, 1_000),
        ];
        let svg = render_svg(&records, ScenarioName::Stampede).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        // The 1-client point sits on the y axis (x = left margin).
        assert!(svg.contains("points=\"70.0,"), "{svg}");
        assert!(render_svg(&records, ScenarioName::Browsing).is_none());
    }

    #[test]
    fn file_names_sort_by_load() {
        let a = record(TargetName::Ours, 16, 1, 1).file_name();
        let b = record(TargetName::Ours, 256, 1, 1).file_name();
        assert_eq!(a, "stampede-ours-c0016.json");
        assert!(a < b);
    }
}
