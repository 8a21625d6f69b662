//! Fuzz target `modbus_response`: see `fuzz_checks::modbus_response` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::modbus_response(data);
});
