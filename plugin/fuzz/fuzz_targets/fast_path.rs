//! Datagrams as any peer may send them to a key server's (or the resolver daemon's) UDP fast
//! path: the in-place parser and the TC cut never panic, and what the parser takes, answered
//! from a template, is a well-formed message within the client's size.
#![no_main]

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use twinpeaks::wire;

fuzz_target!(|data: &[u8]| {
    let mut name = [0u8; wire::NAME_MAX];
    if let Some((q, n)) = wire::parse(data, &mut name) {
        assert_eq!(q.qname.len(), n);
        assert!(name[..n].iter().all(|b| !b.is_ascii_uppercase()));
        // The query turned into an empty response is a template of the right shape.
        let mut template = data[..12 + n + 4].to_vec();
        template[2] = 0x84;
        template[3] = 0;
        template[6..12].fill(0);
        let mut out = [0u8; 2048];
        if let Some(len) = wire::write_answer(&template, &q, &mut out) {
            assert!(len <= q.udp_limit());
            let m = Message::from_vec(&out[..len]).expect("a well-formed answer");
            assert_eq!(m.metadata.id, q.id);
        }
    }
    let _ = wire::truncate(&mut data.to_vec());
});
