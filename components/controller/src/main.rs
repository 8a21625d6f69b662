//! The `pump-controller` binary: see the library's documentation.

fn main() -> std::process::ExitCode {
    pump_controller::main()
}
