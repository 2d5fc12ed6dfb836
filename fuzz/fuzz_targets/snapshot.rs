//! Snapshot bytes as a peer or a backup file delivers them. Half the inputs are framed
//! with a valid header and checksum around the fuzz bytes, so the body decoder and the
//! invariant check are reached; the other half are taken raw. A snapshot that decodes
//! must hold a ledger that re-encodes to the same state.
#![no_main]
use libfuzzer_sys::fuzz_target;
use state_machine::snapshot::{self, SnapshotBody};
use state_machine::Limits;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        snapshot::frame_payload(rest)
    } else {
        rest.to_vec()
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
    }
});
