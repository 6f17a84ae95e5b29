//! ISO week parsing: never panics, and what parses writes itself back exactly and lies in a
//! real week of its year.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_core::IsoWeek;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Some(week) = IsoWeek::parse(text) {
        assert_eq!(week.to_string(), text);
        assert!((1..=53).contains(&week.week()));
        assert_eq!(IsoWeek::parse(&week.to_string()), Some(week));
    }
});
