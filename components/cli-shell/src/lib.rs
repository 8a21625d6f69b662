//! The command-line shell every binary of the project shares, so that each `main` holds only its
//! own commands: how arguments are parsed, how logging is set up, which exit code a failure gets,
//! and how a long-running command waits for its stop signal.
//!
//! Exit codes follow `sysexits.h`, as a supervisor (systemd, the Greengrass nucleus) expects:
//! `0` success, [`EX_USAGE`] (64) for bad command-line syntax, [`EX_CONFIG`] (78) when the
//! configuration or the input is at fault (restarting will not help), `1` for everything else
//! (the network, the cloud, the device: retrying may help). A failure is printed to stderr as
//! `{program}: error: {cause chain}`.

use std::future::Future;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

/// `EX_USAGE` from sysexits.h: the command line was wrong.
pub const EX_USAGE: u8 = 64;
/// `EX_CONFIG` from sysexits.h: the configuration is at fault; a supervisor should stop restarting.
pub const EX_CONFIG: u8 = 78;

/// Installs the process's logger: `RUST_LOG` filters (else `default_filter`, such as `"info"`),
/// stderr, and colour codes only when stderr is a terminal (a log file must not be full of
/// escape codes). A second call leaves the first logger in place.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Parses this process's arguments. `--help` and `--version` print and end with success; a
/// syntax error prints clap's message and ends with [`EX_USAGE`]. `Err` is the code to exit with.
pub fn parse_args<P: Parser>() -> Result<P, ExitCode> {
    parse_args_from(std::env::args_os())
}

/// [`parse_args`] over the given arguments (the first is the program name).
pub fn parse_args_from<P, I, T>(args: I) -> Result<P, ExitCode>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    P::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        usage_exit_code(&e)
    })
}

/// The exit code for a clap outcome that is not a parse: success for `--help`/`--version`
/// (clap writes them to stdout), [`EX_USAGE`] for an error.
fn usage_exit_code(e: &clap::Error) -> ExitCode {
    if e.use_stderr() { ExitCode::from(EX_USAGE) } else { ExitCode::SUCCESS }
}

/// Runs `work` to completion on a multi-threaded tokio runtime.
pub fn block_on<T, F: Future<Output = anyhow::Result<T>>>(work: F) -> anyhow::Result<T> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")?.block_on(work)
}

/// The exit code for a command's outcome: success, [`EX_CONFIG`] when `is_configuration` says the
/// failure is the input's fault, else 1. A failure's cause chain is printed as
/// `{program}: error: …` first.
pub fn exit_code(
    program: &str,
    result: anyhow::Result<()>,
    is_configuration: impl Fn(&anyhow::Error) -> bool,
) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: error: {e:#}");
            if is_configuration(&e) { ExitCode::from(EX_CONFIG) } else { ExitCode::FAILURE }
        }
    }
}

/// Whether any cause in `e`'s chain is an `E` for which `pred` holds: the usual way to ask
/// "is this failure the configuration's fault" of a library's typed error.
pub fn caused_by<E: std::error::Error + Send + Sync + 'static>(e: &anyhow::Error, pred: impl Fn(&E) -> bool) -> bool {
    e.chain().any(|c| c.downcast_ref::<E>().is_some_and(&pred))
}

/// Installs the handlers for SIGINT (Ctrl-C) and SIGTERM (what a supervisor sends) now, so that
/// a stop asked for while the program starts is not lost, and returns a future that resolves
/// with the name of the first one to arrive. Must be called within a tokio runtime.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    #[command(name = "t", version)]
    struct Cli {
        #[arg(long)]
        count: u32,
    }

    #[test]
    fn bad_syntax_exits_with_ex_usage_and_help_with_success() {
        assert_eq!(parse_args_from::<Cli, _, _>(["t", "--count", "x"]).unwrap_err(), ExitCode::from(EX_USAGE));
        assert_eq!(parse_args_from::<Cli, _, _>(["t"]).unwrap_err(), ExitCode::from(EX_USAGE));
        assert_eq!(parse_args_from::<Cli, _, _>(["t", "--help"]).unwrap_err(), ExitCode::SUCCESS);
        assert_eq!(parse_args_from::<Cli, _, _>(["t", "--version"]).unwrap_err(), ExitCode::SUCCESS);
        assert_eq!(parse_args_from::<Cli, _, _>(["t", "--count", "3"]).unwrap().count, 3);
    }

    /// A typed error of a library, as the binaries ask about it.
    #[derive(Debug)]
    struct Fault {
        configuration: bool,
    }
    impl std::fmt::Display for Fault {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("fault")
        }
    }
    impl std::error::Error for Fault {}

    fn is_config(e: &anyhow::Error) -> bool {
        caused_by::<Fault>(e, |f| f.configuration)
    }

    #[test]
    fn a_configuration_fault_anywhere_in_the_chain_exits_with_ex_config_and_others_with_1() {
        let config = anyhow::Error::new(Fault { configuration: true }).context("reading the recipe");
        assert_eq!(exit_code("t", Err(config), is_config), ExitCode::from(EX_CONFIG));
        let network = anyhow::Error::new(Fault { configuration: false }).context("connecting");
        assert_eq!(exit_code("t", Err(network), is_config), ExitCode::FAILURE);
        assert_eq!(exit_code("t", Err(anyhow::anyhow!("other")), is_config), ExitCode::FAILURE);
        assert_eq!(exit_code("t", Ok(()), is_config), ExitCode::SUCCESS);
    }
}
