//! The `pump-sensor` binary: see the library's documentation.

fn main() -> std::process::ExitCode {
    pump_sensor::main()
}
