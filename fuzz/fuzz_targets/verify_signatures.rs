#![no_main]
//! Every provider's `verify`: byte 0 picks the provider, byte 1 holds flags (see README.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| outcome_meter_fuzz::fuzz_verify(data));
