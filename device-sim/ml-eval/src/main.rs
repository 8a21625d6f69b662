//! `ml-eval`: see the crate documentation and the README.

fn main() -> std::process::ExitCode {
    ml_eval::cli::main()
}
