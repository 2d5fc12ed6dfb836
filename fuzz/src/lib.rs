//! Shared pieces of the fuzz targets: the framing of command sequences and the ledger
//! they start from. `examples/seeds.rs` writes the seed corpus with the same framing.

use state_machine::testkit::{command, create_theater, publish_show, screen};
use state_machine::{Command, CommandKind, Ledger, Limits, Role, TheaterId, UserId};

/// Start of the shard clock in the fuzzed ledger (2026-01-01).
pub const T0_MS: u64 = 1_767_225_600_000;

/// A ledger with one theater of 6x10 seats, two shows and a registered user, as the
/// commands of a seed sequence reference them.
pub fn seeded_ledger() -> (Ledger, u64) {
    let mut ledger = Ledger::new(Limits::default());
    let mut index = 0;
    for kind in setup_commands() {
        index += 1;
        let cmd = command(&format!("setup-{index}"), T0_MS + index, kind);
        let result = ledger.apply(index, &cmd);
        assert!(
            matches!(result.outcome, state_machine::Outcome::Applied(_)),
            "setup command {index} must apply: {:?}",
            result.outcome
        );
    }
    (ledger, index)
}

fn setup_commands() -> Vec<CommandKind> {
    vec![
        create_theater("mumbai", UserId(1), vec![screen("Audi 1", 6, 10)]),
        publish_show(TheaterId(1), 0, T0_MS + 86_400_000, "Avengers"),
        publish_show(TheaterId(1), 0, T0_MS + 2 * 86_400_000, "Jawan"),
        CommandKind::RegisterUser {
            email: "a@example.test".into(),
            phone: "+910000000001".into(),
            name: "A".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            role: Role::Customer,
        },
    ]
}

/// Splits fuzz input into command encodings: each is a little-endian u16 length and
/// that many bytes; a short tail is ignored.
pub fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = u16::from_le_bytes([data[0], data[1]]) as usize;
        data = &data[2..];
        let take = len.min(data.len());
        out.push(&data[..take]);
        data = &data[take..];
    }
    out
}

/// The inverse of `frames`, for writing seeds.
pub fn frame_all(commands: &[Command]) -> Vec<u8> {
    let mut out = Vec::new();
    for cmd in commands {
        let bytes = state_machine::codec::encode(cmd);
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}
