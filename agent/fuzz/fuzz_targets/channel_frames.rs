//! Everything a peer can send on the agent<->device channel: hello frames, records, and
//! message bodies. None of it may panic.
#![no_main]

use d2tls::channel::{Channel, PairingKey, Role, parse_hello, parse_hello_reply};
use d2tls::wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_hello(data);
    let _ = parse_hello_reply(data);
    let _ = Message::decode(data);
    if let Ok(key) = PairingKey::from_bytes([7; 32]) {
        let mut ch = Channel::new(Role::Agent, &key, "fuzz", &[1; 32], &[2; 32]);
        let _ = ch.opener.open(data);
    }
});
