//! TPKEY RDATA as any DNS peer or secondary may hand it to a client: decoding never panics,
//! and what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinpeaks::record::KeyRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = KeyRecord::from_wire(data) {
        assert_eq!(rec.to_wire().ok().as_deref(), Some(data));
        let _ = rec.to_string();
        let _ = rec.key_server_params("www.example.com.");
    }
});
