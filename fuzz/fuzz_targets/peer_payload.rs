//! The payload of a peer request (first byte: the method code) decoded into the openraft
//! message the node would hand to Raft; and the client protocol's bodies, JSON and binary.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&method, payload)) = data.split_first() else {
        return;
    };
    let _ = raft_node::fuzzing::peer_payload(method % 8, payload);
    let _ = raft_node::fuzzing::client_body(method & 0x80 != 0, method & 0x40 != 0, payload);
});
