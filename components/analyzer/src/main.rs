//! `pump-analyzer`: the `com.example.pump.Analyzer` Greengrass component. See the README.

fn main() -> std::process::ExitCode {
    pump_analyzer::cli::main()
}
