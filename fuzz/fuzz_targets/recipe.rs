//! Fuzz target `recipe`: see `fuzz_checks::recipe` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::recipe(data);
});
