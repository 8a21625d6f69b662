//! The bodies of the cargo-fuzz targets in `fuzz/`: one function per parser of untrusted
//! input, each feeding arbitrary bytes to the same code the running system calls and checking
//! the invariants that code promises beyond "no panic".
//!
//! The fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer) are one-liners that call
//! these functions; the unit test below replays every file of `fuzz/seeds/<target>/` through
//! the function of the same name on stable Rust, so a crash found once stays fixed.
//!
//! A check returns [`Outcome::Accepted`] when the parser took the input (and the invariants
//! were checked on the result) and [`Outcome::Rejected`] when it refused it with an error; it
//! panics (an assertion) when the code under test breaks a promise.

mod http;
mod ipc;
mod jobs;
mod modbus;
mod mqtt;
mod mqtt5;
mod policy;
mod recipe;
mod shadow;
mod sigv4;
mod sql;

pub use http::http_body;
pub use ipc::ipc_frame;
pub use jobs::jobs_request;
pub use modbus::modbus_response;
pub use mqtt::mqtt_packet;
pub use mqtt5::mqtt5_packet;
pub use policy::iot_policy;
pub use recipe::recipe;
pub use shadow::shadow_document;
pub use sigv4::sigv4_request;
pub use sql::iot_sql;

/// What a parser did with one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; the invariants held on the result.
    Accepted,
    /// Refused with an error.
    Rejected,
}

impl Outcome {
    fn of(accepted: bool) -> Self {
        if accepted { Outcome::Accepted } else { Outcome::Rejected }
    }
}

/// A fuzz check: the body of one fuzz target.
pub type Check = fn(&[u8]) -> Outcome;

/// Every fuzz target by name (the name of its `fuzz/fuzz_targets/<name>.rs` and of its seed
/// directory `fuzz/seeds/<name>/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("http_body", http_body),
    ("iot_policy", iot_policy),
    ("iot_sql", iot_sql),
    ("ipc_frame", ipc_frame),
    ("jobs_request", jobs_request),
    ("modbus_response", modbus_response),
    ("mqtt5_packet", mqtt5_packet),
    ("mqtt_packet", mqtt_packet),
    ("recipe", recipe),
    ("shadow_document", shadow_document),
    ("sigv4_request", sigv4_request),
];

/// Splits `data` at its first NUL byte: the part before it and, if there is one, the part after.
fn split_nul(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;

    fn seeds_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
    }

    fn fuzz_targets_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets")
    }

    fn names_in(dir: &Path, strip: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(strip).to_owned())
            .collect();
        names.sort();
        names
    }

    /// Every seed of every target goes through the target's check: a seed that panics fails
    /// this test. Each corpus must hold inputs the parser accepts (so the invariants run) and
    /// inputs it refuses (so the error paths run).
    #[test]
    fn every_seed_replays_through_its_target() {
        let targets: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names_in(&seeds_dir(), ""), targets, "one seed directory per target, and no other");
        assert_eq!(names_in(&fuzz_targets_dir(), ".rs"), targets, "one fuzz target file per check, and no other");

        let mut failures = Vec::new();
        for (name, check) in TARGETS {
            let dir = seeds_dir().join(name);
            let mut outcomes = BTreeMap::new();
            for file in names_in(&dir, "") {
                let path = dir.join(&file);
                let data = std::fs::read(&path).unwrap();
                match std::panic::catch_unwind(|| check(&data)) {
                    Ok(outcome) => outcomes.entry(format!("{outcome:?}")).or_insert_with(Vec::new).push(file),
                    Err(_) => failures.push(format!("{name}/{file} panicked")),
                }
            }
            for wanted in ["Accepted", "Rejected"] {
                if !outcomes.contains_key(wanted) {
                    failures.push(format!("{name}: no seed is {wanted} (seeds: {outcomes:?})"));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
