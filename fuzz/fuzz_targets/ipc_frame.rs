//! Fuzz target `ipc_frame`: see `fuzz_checks::ipc_frame` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::ipc_frame(data);
});
