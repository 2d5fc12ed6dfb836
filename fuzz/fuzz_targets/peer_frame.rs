//! Peer frame bodies as they arrive after the length prefix: any bytes must decode to a
//! frame or be refused with an error, never panic or allocate without bound.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(kind) = raft_node::fuzzing::peer_frame(data) {
        assert!(!kind.is_empty());
    }
});
