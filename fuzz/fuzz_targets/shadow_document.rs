//! Fuzz target `shadow_document`: see `fuzz_checks::shadow_document` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::shadow_document(data);
});
