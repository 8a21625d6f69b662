//! `ml-eval`: scores the analyzer's detectors on the held-out runs of a `device-sim dataset`.
//!
//! Every run of the chosen split is simulated again from its plan, reading by reading, with the
//! dataset generator's own code, and each reading goes through the analyzer's real decision path
//! (its pure core, hysteresis included, with the component's default configuration) once with
//! `detector: rules`, once with `model` and once with `both`. Each row of the split (same rows and
//! labels as the CSV) is scored by what the analyzer has active; each fault run by how long the
//! fault took to be raised. The raw model's argmax per row is scored too, for reference.
//!
//! # Layout
//! - [`score`]: confusion matrix, precision/recall/F1, the window decision rule, detection delay
//!   and false alarms (pure).
//! - [`replay`]: the manifest read back, the runs replayed through the analyzers and the model.
//! - [`report`]: the JSON report and its markdown tables.
//! - [`cli`]: the command line, output files and exit codes.

pub mod cli;
pub mod replay;
pub mod report;
pub mod score;
