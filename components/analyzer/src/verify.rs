//! `pump-analyzer verify-model DIR`: loads a model directory with every check the component
//! makes, runs the test vectors that `train.py` wrote (onnxruntime's reference outputs) through
//! tract, and measures load time and per-window inference latency. The test command runs it on
//! the model the training test produces, so the pipeline cannot rot between Python and Rust.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::{Model, ModelError};

/// The test vectors file `train.py` writes next to the model.
pub const TEST_VECTORS_FILE: &str = "test-vectors.json";

/// `test-vectors.json`: inputs and onnxruntime's outputs.
#[derive(Debug, Clone, Deserialize)]
pub struct TestVectors {
    /// The SHA-256 of the model the outputs came from.
    pub model_sha256: String,
    /// The largest absolute difference another runtime may show per output.
    pub tolerance_abs: f64,
    /// The vectors.
    pub vectors: Vec<TestVector>,
}

/// One input and its reference outputs.
#[derive(Debug, Clone, Deserialize)]
pub struct TestVector {
    /// Where the row came from (`validation/validation.csv:LINE`).
    pub source: String,
    /// The float32 feature vector.
    pub input: Vec<f32>,
    /// The reference label (class index).
    pub label: i64,
    /// The reference probabilities.
    pub probabilities: Vec<f64>,
}

/// How tract compares with the reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parity {
    /// Vectors run.
    pub vectors: usize,
    /// The largest absolute difference of any probability.
    pub max_abs_diff: f64,
    /// The tolerance the vectors ask for.
    pub tolerance_abs: f64,
    /// Vectors (by source) whose label or a probability is outside the tolerance, or that failed.
    pub mismatches: Vec<String>,
}

impl Parity {
    /// Every vector agreed.
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty() && self.vectors > 0
    }
}

/// Runs every vector through `model` and compares with the reference outputs.
pub fn parity(model: &Model, vectors: &TestVectors) -> Parity {
    let mut report =
        Parity { vectors: 0, max_abs_diff: 0.0, tolerance_abs: vectors.tolerance_abs, mismatches: Vec::new() };
    if !vectors.model_sha256.eq_ignore_ascii_case(model.sha256()) {
        report.mismatches.push(format!("the vectors are for model {}, not {}", vectors.model_sha256, model.sha256()));
        return report;
    }
    for v in &vectors.vectors {
        report.vectors += 1;
        let got = match model.infer(&v.input) {
            Ok(got) => got,
            Err(e) => {
                report.mismatches.push(format!("{}: {e}", v.source));
                continue;
            }
        };
        let mut ok = got.label == v.label && got.probabilities.len() == v.probabilities.len();
        for (g, w) in got.probabilities.iter().zip(&v.probabilities) {
            let diff = (f64::from(*g) - w).abs();
            report.max_abs_diff = report.max_abs_diff.max(diff);
            ok &= diff <= vectors.tolerance_abs;
        }
        if !ok {
            report.mismatches.push(format!(
                "{}: tract label {} {:?}, reference label {} {:?}",
                v.source, got.label, got.probabilities, v.label, v.probabilities
            ));
        }
    }
    report
}

/// Percentiles of a set of durations, µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Runs measured.
    pub runs: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest.
    pub max_us: f64,
}

impl Latency {
    /// The nearest-rank percentiles of `samples` (the benchmarks' own, `bench_common::stats`).
    fn of(samples: &[Duration]) -> Latency {
        let ns = samples.iter().map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).collect();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        match bench_common::stats::latency(ns) {
            Some(l) => Latency { runs: l.count, p50_us: us(l.p50), p99_us: us(l.p99), max_us: us(l.max) },
            None => Latency { runs: 0, p50_us: 0.0, p99_us: 0.0, max_us: 0.0 },
        }
    }
}

/// What `verify-model` prints (one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The card's name.
    pub model: String,
    /// The card's version.
    pub version: String,
    /// The file's SHA-256.
    pub sha256: String,
    /// Wall-clock time of [`Model::load`] (read, digest, checks, tract's optimization), ms.
    pub load_ms: f64,
    /// Test vector parity, when the directory has them.
    pub parity: Option<Parity>,
    /// One feature vector per run, the test vectors (or zeros) in turn.
    pub latency: Latency,
    /// The process's peak resident set (`VmHWM` of `/proc/self/status`) after loading and
    /// running the model, KiB; `None` where there is no such file.
    pub peak_rss_kib: Option<u64>,
    /// The process's resident set once the model is loaded and has run (`VmRSS`), KiB: what a
    /// running analyzer holds; the peak includes the load's transient allocations.
    pub rss_kib: Option<u64>,
}

/// Why `verify-model` failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The model was refused.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The test vectors could not be read.
    #[error("{0}")]
    Vectors(String),
}

/// Loads `dir`, checks its test vectors (if `test-vectors.json` is there) and times `runs`
/// inferences.
pub fn verify(dir: &Path, runs: usize) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let model = Model::load(dir)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let path = dir.join(TEST_VECTORS_FILE);
    let vectors: Option<TestVectors> = match std::fs::read(&path) {
        Ok(bytes) => {
            Some(serde_json::from_slice(&bytes).map_err(|e| VerifyError::Vectors(format!("{}: {e}", path.display())))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(VerifyError::Vectors(format!("{}: {e}", path.display()))),
    };
    let parity = vectors.as_ref().map(|v| parity(&model, v));
    let inputs: Vec<Vec<f32>> = match &vectors {
        Some(v) if !v.vectors.is_empty() => v.vectors.iter().map(|v| v.input.clone()).collect(),
        _ => vec![vec![0.0; model.card().input.features.len()]],
    };
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let input = &inputs[i % inputs.len()];
        let t = Instant::now();
        model.infer(input)?;
        samples.push(t.elapsed());
    }
    let pid = std::process::id();
    Ok(Report {
        model: model.card().name.clone(),
        version: model.version().to_owned(),
        sha256: model.sha256().to_owned(),
        load_ms,
        parity,
        latency: Latency::of(&samples),
        peak_rss_kib: bench_common::machine::hwm_kib(pid),
        rss_kib: bench_common::machine::rss_kib(pid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_the_nearest_rank_percentiles_in_microseconds() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = Latency::of(&samples);
        assert_eq!((l.runs, l.p50_us.round(), l.p99_us.round(), l.max_us.round()), (100, 50.0, 99.0, 100.0));
        assert_eq!(Latency::of(&[]).runs, 0);
    }
}
