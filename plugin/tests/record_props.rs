//! Decoders of peer- and operator-supplied bytes never panic, and what they accept
//! round-trips: TPKEY RDATA, presentation fields, whole key-zone texts.

use std::path::Path;

use hickory_proto::rr::Name;
use proptest::prelude::*;
use twinpeaks::record::{KeyRecord, parse_generic_rdata};
use twinpeaks::zonefile;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn rdata_decoder_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..260)) {
        if let Ok(rec) = KeyRecord::from_wire(&bytes) {
            prop_assert_eq!(rec.to_wire().unwrap(), bytes);
        }
    }

    #[test]
    fn rdata_decoder_on_plausible_prefixes(
        flags in 0u8..3, fam in prop_oneof![Just(4u8), Just(6u8), any::<u8>()],
        rest in proptest::collection::vec(any::<u8>(), 0..220),
    ) {
        let mut b = vec![1, flags, fam];
        b.extend(rest);
        let _ = KeyRecord::from_wire(&b);
    }

    #[test]
    fn presentation_parser_never_panics(fields in proptest::collection::vec("[-0-9a-zA-Z.:#\\\\]{0,70}", 0..14)) {
        let f: Vec<&str> = fields.iter().map(String::as_str).collect();
        let _ = KeyRecord::from_presentation(&f);
        let _ = parse_generic_rdata(&f);
    }

    #[test]
    fn zone_parser_never_panics(text in "[ -~\\t\\n();$#\\\\]{0,400}") {
        let origin = Name::from_ascii("example.com.").unwrap();
        let _ = zonefile::parse(Path::new("fuzz.keys"), &text, &origin);
    }

    #[test]
    fn zone_parser_on_record_shaped_lines(
        owner in "[a-z@]{1,8}", ttl in proptest::option::of(0u32..100000),
        class in prop_oneof![Just(""), Just("IN"), Just("CH")],
        ty in prop_oneof![Just("TPKEY"), Just("TYPE65300"), Just("SOA"), Just("NS"), Just("A")],
        data in proptest::collection::vec("[0-9a-f\\\\#().-]{0,66}", 0..12),
    ) {
        let line = format!("{owner} {} {class} {ty} {}\n", ttl.map(|t| t.to_string()).unwrap_or_default(), data.join(" "));
        let origin = Name::from_ascii("example.com.").unwrap();
        let _ = zonefile::parse(Path::new("fuzz.keys"), &line, &origin);
    }
}
