//! Snapshot bytes as a peer or a backup file delivers them. A third of the inputs are
//! framed as a version 3 body with a valid header and checksum, a third as a version 4
//! snapshot (a body of the first byte's length, the rest as sections) with a valid
//! checksum, so the body decoder, the section parser and the invariant check are
//! reached; the rest are taken raw. A snapshot that decodes must hold a ledger that
//! re-encodes to the same state, and decoding it lean (records handed on, not kept)
//! must give the same digest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use state_machine::snapshot::{self, SnapshotBody};
use state_machine::Limits;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = match mode % 3 {
        0 => snapshot::frame_payload(rest),
        1 => rest.to_vec(),
        _ => {
            let Some((&split, rest)) = rest.split_first() else {
                return;
            };
            let (body, tail) = rest.split_at(usize::from(split).min(rest.len()));
            snapshot::frame_sections(body, tail)
        }
    };
    let limits = Limits::default();
    if let Ok(decoded) = snapshot::decode(&bytes, &limits) {
        let again = snapshot::encode(&SnapshotBody {
            marker: decoded.marker.clone(),
            state: decoded.ledger.full_state(),
            events: decoded.events.clone(),
            events_kept_from: decoded.events_kept_from,
            rules: decoded.ledger.rules().cloned(),
        });
        let twice = snapshot::decode(&again, &limits).expect("a re-encoded snapshot decodes");
        assert_eq!(twice.ledger.digest(), decoded.ledger.digest());
        let lean = snapshot::decode_lean(&bytes, &limits, |_| {}).expect("decodes lean too");
        assert_eq!(lean.ledger.digest(), decoded.ledger.digest());
    }
});
