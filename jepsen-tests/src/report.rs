//! `report.html` of a run: the verdicts, the operation counts, the nemesis timeline, and
//! a latency-over-time plot as inline SVG (one point per client operation at its invoke
//! time, its latency on a log scale, coloured ok / fail / info; fault periods shaded).
//!
//! The plot is a few hundred SVG elements written directly: no script, no external
//! asset, so the page opens from a CI artifact as it is.

use crate::checker::Validity;
use crate::history::{Op, OpType, Process, F};
use crate::runner::RunReport;
use std::collections::BTreeMap;
use std::fmt::Write;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;
/// The latency axis: 0.1 ms to 10 s.
const LAT_MIN_MS: f64 = 0.1;
const LAT_MAX_MS: f64 = 10_000.0;
/// Points drawn at most; beyond, every n-th operation (the counts above stay exact).
const POINTS_MAX: usize = 20_000;

/// One completed client operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub f: F,
    pub kind: OpType,
    pub start_s: f64,
    pub latency_ms: f64,
}

/// A fault period: from the fault's invoke to the matching heal (or the end).
#[derive(Clone, Debug, PartialEq)]
pub struct Period {
    pub what: String,
    pub start_s: f64,
    pub end_s: f64,
}

/// Pairs each client completion with its invoke.
pub fn points(ops: &[Op]) -> Vec<Point> {
    let mut open: BTreeMap<u64, &Op> = BTreeMap::new();
    let mut points = Vec::new();
    for op in ops {
        let Process::Client(process) = op.process else {
            continue;
        };
        if op.kind == OpType::Invoke {
            open.insert(process, op);
        } else if let Some(invoke) = open.remove(&process) {
            points.push(Point {
                f: op.f,
                kind: op.kind,
                start_s: invoke.time as f64 / 1e9,
                latency_ms: op.time.saturating_sub(invoke.time) as f64 / 1e6,
            });
        }
    }
    points
}

/// Fault periods from the nemesis lines: kill..restart, pause..resume,
/// partition..heal, clock offset..offset 0, membership removal..re-add, gateway
/// misbehaviour..behaving again, a node's own cluster file..the shared one again.
/// Transfers, snapshots and restores are instants (zero-length periods).
pub fn periods(ops: &[Op]) -> Vec<Period> {
    let end_of_run = ops.last().map_or(0.0, |op| op.time as f64 / 1e9);
    let mut open: BTreeMap<(String, Option<u64>), (String, f64)> = BTreeMap::new();
    let mut periods = Vec::new();
    for op in ops.iter().filter(|op| op.process == Process::Nemesis) {
        let node = op.value["node"].as_u64();
        let note = op.value["note"].as_str().unwrap_or_default().to_owned();
        let at = op.time as f64 / 1e9;
        let start = |key: &str| (key.to_owned(), node);
        match (op.f, op.kind) {
            (F::Kill, OpType::Invoke) => {
                open.insert(start("kill"), (format!("kill {node:?}"), at));
            }
            (F::Pause, OpType::Invoke) => {
                open.insert(start("pause"), (format!("pause {node:?}"), at));
            }
            (F::Partition, OpType::Invoke) => {
                open.insert(("partition".into(), None), (note, at));
            }
            (F::Clock, OpType::Invoke) if !note.ends_with(" 0 ms") => {
                open.insert(start("clock"), (format!("clock {node:?} {note}"), at));
            }
            (F::Membership, OpType::Invoke) if note != "re-add" => {
                open.insert(start("membership"), (format!("remove {node:?}"), at));
            }
            (F::Gateway, OpType::Invoke) if note != "behave" => {
                open.insert(("gateway".into(), None), (format!("gateway: {note}"), at));
            }
            (F::Gateway, OpType::Info) if note == "behaving" => {
                close(&mut open, &mut periods, ("gateway", None), at)
            }
            (F::Transfer, OpType::Info) => periods.push(Period {
                what: format!("transfer {note}"),
                start_s: at,
                end_s: at,
            }),
            (F::Snapshot | F::Restore, OpType::Info) => periods.push(Period {
                what: format!("{} {node:?}: {note}", op.f.as_str()),
                start_s: at,
                end_s: at,
            }),
            (F::Config, OpType::Invoke) if note != "shared config" => {
                open.insert(start("config"), (format!("config {node:?}: {note}"), at));
            }
            (F::Config, OpType::Info) if note.starts_with("back on") => {
                close(&mut open, &mut periods, ("config", node), at)
            }
            (F::Restart, OpType::Info) => close(&mut open, &mut periods, ("kill", node), at),
            (F::Resume, OpType::Info) => close(&mut open, &mut periods, ("pause", node), at),
            (F::Heal, OpType::Info) => close(&mut open, &mut periods, ("partition", None), at),
            (F::Clock, OpType::Info) if note.ends_with(" 0 ms") => {
                close(&mut open, &mut periods, ("clock", node), at)
            }
            (F::Membership, OpType::Info) if note.starts_with("re-added") => {
                close(&mut open, &mut periods, ("membership", node), at)
            }
            _ => {}
        }
    }
    for (_, (what, start_s)) in open {
        periods.push(Period {
            what,
            start_s,
            end_s: end_of_run,
        });
    }
    periods.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    periods
}

fn close(
    open: &mut BTreeMap<(String, Option<u64>), (String, f64)>,
    periods: &mut Vec<Period>,
    key: (&str, Option<u64>),
    at: f64,
) {
    if let Some((what, start_s)) = open.remove(&(key.0.to_owned(), key.1)) {
        periods.push(Period {
            what,
            start_s,
            end_s: at,
        });
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(kind: OpType) -> &'static str {
    match kind {
        OpType::Ok => "#2e7d32",
        OpType::Fail => "#c62828",
        OpType::Info => "#f9a825",
        OpType::Invoke => "#607d8b",
    }
}

/// The latency plot as an SVG element.
pub fn svg(points: &[Point], periods: &[Period]) -> String {
    let span_s = points
        .iter()
        .map(|p| p.start_s + p.latency_ms / 1e3)
        .chain(periods.iter().map(|p| p.end_s))
        .fold(1.0_f64, f64::max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |s: f64| LEFT + plot_w * (s / span_s).clamp(0.0, 1.0);
    let y = |ms: f64| {
        let ms = ms.clamp(LAT_MIN_MS, LAT_MAX_MS);
        let span = (LAT_MAX_MS / LAT_MIN_MS).log10();
        TOP + plot_h * (1.0 - (ms / LAT_MIN_MS).log10() / span)
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="latency over time">"#
    );
    out.push_str(r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    for period in periods {
        let (x0, x1) = (x(period.start_s), x(period.end_s));
        let _ = write!(
            out,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#90a4ae" fill-opacity="0.25"><title>{}</title></rect>"##,
            (x1 - x0).max(1.0),
            escape(&period.what)
        );
    }
    // Axes, decades of latency, and seconds.
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="#000"/><line x1="{LEFT}" y1="{0}" x2="{}" y2="{0}" stroke="#000"/>"##,
        TOP + plot_h,
        LEFT + plot_w
    );
    let mut decade = LAT_MIN_MS;
    while decade <= LAT_MAX_MS {
        let yy = y(decade);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{decade} ms</text>"##,
            LEFT + plot_w,
            LEFT - 4.0,
            yy + 4.0
        );
        decade *= 10.0;
    }
    let step = (span_s / 10.0).ceil().max(1.0);
    let mut second = 0.0;
    while second <= span_s {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{second} s</text>"#,
            x(second),
            TOP + plot_h + 16.0
        );
        second += step;
    }
    let every = points.len().div_ceil(POINTS_MAX).max(1);
    for point in points.iter().step_by(every) {
        let _ = write!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.8" fill="{}"><title>{} {:?} {:.2} ms</title></circle>"#,
            x(point.start_s),
            y(point.latency_ms),
            colour(point.kind),
            point.f.as_str(),
            point.kind,
            point.latency_ms
        );
    }
    out.push_str("</svg>");
    out
}

fn verdict(valid: Validity) -> &'static str {
    match valid {
        Validity::Valid => "valid",
        Validity::Invalid => "INVALID",
        Validity::Unknown => "unknown",
    }
}

/// The whole page.
pub fn html(report: &RunReport, ops: &[Op]) -> String {
    let points = points(ops);
    let periods = periods(ops);
    let mut out = String::new();
    out.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(
        out,
        "<title>Jepsen-style run: {}</title>",
        escape(&report.dir.display().to_string())
    );
    out.push_str(
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}\
         .valid{color:#2e7d32}.INVALID{color:#c62828}.unknown{color:#f9a825}</style>",
    );
    out.push_str("</head><body>");
    let c = &report.config;
    let valid = verdict(report.summary.valid);
    let _ = write!(
        out,
        "<h1>Run: <span class=\"{valid}\">{valid}</span></h1><p>workload {}, nemesis {}, \
         {:?} network, {} nodes, {} clients, seed {}, {:.1} s{}</p>",
        c.workload.as_str(),
        escape(&c.nemesis_names()),
        report.net,
        c.nodes,
        c.clients,
        c.seed,
        report.elapsed_ms as f64 / 1e3,
        if c.planted_bugs.is_empty() {
            String::new()
        } else {
            format!(", planted bugs: {}", escape(&c.planted_bugs.join(",")))
        }
    );
    out.push_str("<h2>Checkers</h2><table><tr><th>checker</th><th>verdict</th><th>notes</th></tr>");
    for checker in &report.summary.checkers {
        let v = verdict(checker.valid);
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{v}\">{v}</td><td>{}</td></tr>",
            escape(&checker.checker),
            escape(&checker.notes.join("; "))
        );
        for anomaly in &checker.anomalies {
            let _ = write!(
                out,
                "<tr><td></td><td class=\"INVALID\">{}</td><td>{} (ops {:?})</td></tr>",
                escape(&anomaly.kind),
                escape(&anomaly.detail),
                anomaly.ops
            );
        }
    }
    out.push_str("</table><h2>Latency over time</h2>");
    out.push_str(
        "<p>Each point is a client operation at its invoke time: green ok, red fail, \
         amber info (unknown outcome). Shaded: fault periods (hover for what).</p>",
    );
    out.push_str(&svg(&points, &periods));
    out.push_str("<h2>Operations</h2><table><tr><th>operation</th><th>count</th></tr>");
    for (key, count) in &report.counts {
        let _ = write!(out, "<tr><td>{}</td><td>{count}</td></tr>", escape(key));
    }
    out.push_str("</table><h2>Nemesis timeline</h2><table><tr><th>from (s)</th><th>to (s)</th><th>fault</th></tr>");
    for period in &periods {
        let _ = write!(
            out,
            "<tr><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
            period.start_s,
            period.end_s,
            escape(&period.what)
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(
        index: u64,
        ms: u64,
        process: Process,
        kind: OpType,
        f: F,
        value: serde_json::Value,
    ) -> Op {
        Op {
            index,
            time: ms * 1_000_000,
            process,
            kind,
            f,
            value,
            wall_ms: Some(ms),
            error: None,
        }
    }

    #[test]
    fn pairs_operations_and_fault_periods() {
        let n = |node: u64, note: &str| json!({"node": node, "shard": "mumbai", "note": note});
        let ops = vec![
            op(0, 0, Process::Client(1), OpType::Invoke, F::Read, json!({})),
            op(
                1,
                5,
                Process::Nemesis,
                OpType::Invoke,
                F::Kill,
                n(2, "kill -9"),
            ),
            op(
                2,
                6,
                Process::Nemesis,
                OpType::Info,
                F::Kill,
                n(2, "killed"),
            ),
            op(3, 12, Process::Client(1), OpType::Info, F::Read, json!({})),
            op(
                4,
                900,
                Process::Nemesis,
                OpType::Info,
                F::Restart,
                n(2, "started"),
            ),
            op(
                5,
                950,
                Process::Nemesis,
                OpType::Invoke,
                F::Pause,
                n(1, "SIGSTOP"),
            ),
        ];
        let points = points(&ops);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].kind, OpType::Info);
        assert!((points[0].latency_ms - 12.0).abs() < 1e-9);
        let periods = periods(&ops);
        assert_eq!(periods.len(), 2, "{periods:?}");
        assert!((periods[0].start_s - 0.005).abs() < 1e-9);
        assert!((periods[0].end_s - 0.9).abs() < 1e-9);
        // The pause never ended: it runs to the end of the history.
        assert!((periods[1].end_s - 0.95).abs() < 1e-9);
        let svg = svg(&points, &periods);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains("kill Some(2)"));
    }

    #[test]
    fn escapes_text() {
        assert_eq!(escape("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }
}
