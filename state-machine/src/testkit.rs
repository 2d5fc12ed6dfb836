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
