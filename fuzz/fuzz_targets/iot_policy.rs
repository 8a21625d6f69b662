//! Fuzz target `iot_policy`: see `fuzz_checks::iot_policy` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::iot_policy(data);
});
