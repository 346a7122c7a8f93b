#![no_main]
//! `front`: `delivery_key`, `challenge` and `parse` on any request (see README.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| outcome_meter_fuzz::fuzz_parse("front", data));
