//! Sequences of ledger commands (each a bincode encoding, as in the replicated log)
//! applied to a ledger with a theater, two shows and a user. Properties:
//! - decoding and applying never panic;
//! - the invariants hold after every command;
//! - a rejected command changes nothing but the shard clock and the request record that
//!   makes its retry answer the same;
//! - applying the same sequence twice from the same start gives the same digest
//!   (determinism).
#![no_main]
use libfuzzer_sys::fuzz_target;
use seat_ledger_fuzz::{frames, seeded_ledger};
use state_machine::{Command, Outcome};

fuzz_target!(|data: &[u8]| {
    let commands: Vec<Command> = frames(data)
        .into_iter()
        .filter_map(|bytes| state_machine::codec::decode::<Command>(bytes).ok())
        .collect();
    if commands.is_empty() {
        return;
    }
    let run = || {
        let (mut ledger, mut index) = seeded_ledger();
        for command in &commands {
            index += 1;
            let before = ledger.state().clone();
            let result = ledger.apply(index, command);
            if let Err(broken) = ledger.check_invariants() {
                panic!("invariant broken after {command:?}: {broken}");
            }
            if let Outcome::Rejected(rejection) = &result.outcome {
                assert!(result.events.is_empty(), "{rejection:?} emitted events");
                let mut after = ledger.state().clone();
                after.clock = before.clock;
                after.requests = before.requests.clone();
                assert!(
                    after == before,
                    "rejected command {command:?} ({rejection:?}) changed the state"
                );
            }
        }
        ledger.digest()
    };
    assert_eq!(run(), run(), "the same commands gave two different states");
});
