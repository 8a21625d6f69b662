//! Fuzz target `iot_sql`: see `fuzz_checks::iot_sql` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::iot_sql(data);
});
