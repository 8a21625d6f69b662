//! How a component logs: to stderr, which the nucleus writes to the component's log file.

use std::io::IsTerminal as _;

/// Installs the component's logger: `RUST_LOG` filters (default `info`), stderr, and colour codes
/// only when stderr is a terminal (a component's log file must not be full of escape codes).
/// Call it once, first thing in `main`; a second call leaves the first logger in place.
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
