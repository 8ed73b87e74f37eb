//! Key-zone text as an operator may write it: the parser never panics.
#![no_main]

use std::path::Path;

use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;
use twinpeaks::zonefile;

fuzz_target!(|data: &[u8]| {
    if let (Ok(text), Ok(origin)) = (std::str::from_utf8(data), Name::from_ascii("example.com.")) {
        let _ = zonefile::parse(Path::new("fuzz.keys"), text, &origin);
    }
});
