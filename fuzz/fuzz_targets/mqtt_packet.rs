//! Fuzz target `mqtt_packet`: see `fuzz_checks::mqtt_packet` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::mqtt_packet(data);
});
