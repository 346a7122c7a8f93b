#![no_main]
//! The public signature/timestamp header parsers, on any string (see README.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| outcome_meter_fuzz::fuzz_header_parsers(data));
