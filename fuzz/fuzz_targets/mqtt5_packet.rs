//! Fuzz target `mqtt5_packet`: see `fuzz_checks::mqtt5_packet` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::mqtt5_packet(data);
});
