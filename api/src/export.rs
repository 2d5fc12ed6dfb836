//! Analytics export: the events of one city (or the global shard) whose shard time
//! falls in `[from, to)`, written as CSV for the analysts' tools (`api export-events`).
//!
//! It reads the event stream like any consumer (replicas in this api's region first)
//! from the oldest kept event, and stops at the first event at or after `to`: the
//! shard clock never runs backwards, so events are ordered by time as well as by
//! index. A range that starts before the retention window is exported from the window
//! on, and the summary says so.

use crate::app::Shared;
use crate::events::{event_json, Position};
use crate::problem::Problem;
use serde_json::Value;
use std::io::Write;

/// Events read per page.
const PAGE_EVENTS: usize = 1_000;
/// Rows one export writes at most (a bound on the work of one command).
pub const ROWS_MAX: u64 = 50_000_000;

/// The CSV columns, in order; fields an event does not have are empty.
pub const COLUMNS: &[&str] = &[
    "id",
    "index",
    "seq",
    "shard",
    "at",
    "type",
    "show_id",
    "theater_id",
    "booking_id",
    "lock_id",
    "user_id",
    "seats",
    "total_price_minor",
    "refund_due_minor",
    "expires_at",
    "start_time",
    "city",
    "ticket_id",
    "status",
    "amount_minor",
    "refund_minor",
    "stars",
];

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    pub rows: u64,
    /// Every event at or after this index was still kept when the export read.
    pub kept_from: u64,
    /// Whether `[from, to)` may have had events before the retention window.
    pub truncated_by_retention: bool,
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| cell(Some(item)))
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => other.to_string(),
    }
}

/// Writes the events of `shard` with shard time in `[from_ms, to_ms)` as CSV.
pub async fn export_csv(
    state: &Shared,
    shard: &str,
    from_ms: u64,
    to_ms: u64,
    out: impl Write,
) -> Result<ExportSummary, Problem> {
    if from_ms >= to_ms {
        return Err(Problem::invalid("to", "the range must end after it starts"));
    }
    let mut writer = csv::Writer::from_writer(out);
    let io = |error: csv::Error| Problem::invalid("out", format!("cannot write the CSV: {error}"));
    writer.write_record(COLUMNS).map_err(io)?;
    let mut at = Position { index: 0, seq: 0 };
    let mut summary = ExportSummary {
        rows: 0,
        kept_from: 0,
        truncated_by_retention: false,
    };
    let mut first_page = true;
    loop {
        let reply = state
            .cluster
            .events(
                shard,
                at.index,
                at.seq,
                PAGE_EVENTS,
                state.read_preference(),
                state.timeout(),
            )
            .await
            .map_err(|error| Problem::unavailable(error.to_string()))?;
        if first_page {
            summary.kept_from = reply.kept_from;
            // Events were dropped, and the first kept one is already inside the range.
            summary.truncated_by_retention = reply.kept_from > 0
                && reply
                    .events
                    .first()
                    .is_none_or(|event| event.at_ms > from_ms);
            first_page = false;
        }
        let Some(last) = reply.events.last() else {
            break;
        };
        at = Position::after(last.index, last.seq);
        for record in &reply.events {
            if record.at_ms >= to_ms {
                writer.flush().map_err(|e| io(e.into()))?;
                return Ok(summary);
            }
            if record.at_ms < from_ms {
                continue;
            }
            let value = event_json(shard, record);
            let row: Vec<String> = COLUMNS
                .iter()
                .map(|column| cell(value.get(*column)))
                .collect();
            writer.write_record(&row).map_err(io)?;
            summary.rows += 1;
            if summary.rows >= ROWS_MAX {
                writer.flush().map_err(|e| io(e.into()))?;
                return Ok(summary);
            }
        }
        if reply.events.len() < PAGE_EVENTS {
            break;
        }
    }
    writer.flush().map_err(|e| io(e.into()))?;
    Ok(summary)
}
