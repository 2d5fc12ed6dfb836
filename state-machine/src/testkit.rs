//! Builders of realistic commands for tests and benchmarks (compiled only for them or
//! with the `testkit` feature). Not used by production code.

use crate::command::{Command, CommandKind};
use crate::ids::{Millis, RequestId, ScreenIndex, TheaterId, UserId};
use crate::model::{Category, Prices, RowSpec, Screen};

/// A screen of `rows` rows of `seats_per_row` seats: the first third normal, the next
/// third premium, the rest VIP.
pub fn screen(name: &str, rows: u16, seats_per_row: u16) -> Screen {
    let rows = (0..rows)
        .map(|row| RowSpec {
            label: row_label(row),
            seats: seats_per_row,
            category: match row * 3 / rows.max(1) {
                0 => Category::Normal,
                1 => Category::Premium,
                _ => Category::Vip,
            },
        })
        .collect();
    Screen {
        name: name.to_owned(),
        rows,
    }
}

/// "A".."Z", then "AA", "AB", ...
pub fn row_label(row: u16) -> String {
    let letter = |n: u16| char::from(b'A' + (n % 26) as u8);
    if row < 26 {
        letter(row).to_string()
    } else {
        format!("{}{}", letter(row / 26 - 1), letter(row))
    }
}

pub fn prices() -> Prices {
    Prices {
        normal_minor: 20_000,
        premium_minor: 35_000,
        vip_minor: 60_000,
    }
}

pub fn command(request_id: &str, at_ms: Millis, kind: CommandKind) -> Command {
    Command {
        request_id: Some(RequestId(request_id.to_owned())),
        at_ms,
        kind,
    }
}

pub fn create_theater(city: &str, owner: UserId, screens: Vec<Screen>) -> CommandKind {
    CommandKind::CreateTheater {
        city: city.to_owned(),
        name: format!("PVR {city}"),
        address: "1 Main Road".to_owned(),
        lat_micro_deg: 19_076_000,
        lon_micro_deg: 72_877_000,
        owner,
        screens,
    }
}

pub fn publish_show(theater: TheaterId, screen: u16, start_ms: Millis, title: &str) -> CommandKind {
    CommandKind::PublishShow {
        theater,
        screen: ScreenIndex(screen),
        title: title.to_owned(),
        genre: "drama".to_owned(),
        start_ms,
        end_ms: start_ms + 3 * 3_600_000,
        prices: prices(),
        currency: "INR".to_owned(),
    }
}

/// The shard clock of [`write_request_snapshot`]'s ledger.
pub const SNAPSHOT_CLOCK: Millis = 90_000_000;

/// Request record `n` of [`write_request_snapshot`]: live at [`SNAPSHOT_CLOCK`].
pub fn request_record(n: u64) -> (RequestId, crate::ledger::RequestRecord) {
    (
        RequestId(format!("7:key-{n:09}")),
        crate::ledger::RequestRecord {
            at_ms: SNAPSHOT_CLOCK - 1_000_000 + n % 1_000_000,
            fingerprint: [n as u8; 16],
            outcome: crate::Outcome::Rejected(crate::Rejection::NotOwner),
        },
    )
}

/// Writes to `out`, as a store streams it, the snapshot of a small ledger (a theater
/// and a show) carrying `records` request records ([`request_record`]) and the marker
/// `b"snapshot-marker"`: a snapshot of any size, made in seconds (tests and benches of
/// large installs).
pub fn write_request_snapshot<W: std::io::Write>(out: W, records: u64) -> std::io::Result<W> {
    use crate::snapshot::{SnapshotBody, Writer, RECORDS_PER_SECTION};
    let mut ledger = crate::Ledger::new(crate::Limits::default());
    let theater = create_theater("delhi", UserId(1), vec![screen("Audi 1", 10, 10)]);
    ledger.apply(1, &command("setup-theater", SNAPSHOT_CLOCK, theater));
    let show = publish_show(TheaterId(1), 0, SNAPSHOT_CLOCK + 86_400_000, "Show");
    ledger.apply(2, &command("setup-show", SNAPSHOT_CLOCK, show));
    let mut state = ledger.full_state();
    state.requests.clear();
    let body = SnapshotBody {
        marker: b"snapshot-marker".to_vec(),
        state,
        events: vec![],
        events_kept_from: 0,
        rules: None,
    };
    let mut writer = Writer::new(out, &body)?;
    let mut section = Vec::with_capacity(RECORDS_PER_SECTION);
    for n in 0..records {
        section.push(request_record(n));
        if section.len() == RECORDS_PER_SECTION {
            writer.requests(&section)?;
            section.clear();
        }
    }
    writer.requests(&section)?;
    writer.finish()
}
