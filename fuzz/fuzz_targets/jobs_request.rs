//! Fuzz target `jobs_request`: see `fuzz_checks::jobs_request` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::jobs_request(data);
});
