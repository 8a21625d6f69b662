//! Fuzz target `sigv4_request`: see `fuzz_checks::sigv4_request` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::sigv4_request(data);
});
