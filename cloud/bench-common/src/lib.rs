//! What the project's benchmark commands (`broker-bench`, `ipc-bench`) share, so that their
//! sections of `docs/benchmarks.md` describe machines, memory and percentiles the same way.
//!
//! # Layout
//! - [`binary`]: an executable's size as stored on a device (stripped).
//! - [`machine`]: the machine a run happened on, and a process's memory and CPU time from `/proc`.
//! - [`stats`]: nearest-rank percentiles and latency summaries.
//! - [`section`]: replacing one command's marked section of a Markdown file, leaving the rest intact.
//! - [`format`]: number and date formatting for the tables.

pub mod binary;
pub mod format;
pub mod machine;
pub mod section;
pub mod stats;
