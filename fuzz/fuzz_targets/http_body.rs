//! Fuzz target `http_body`: see `fuzz_checks::http_body` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::http_body(data);
});
