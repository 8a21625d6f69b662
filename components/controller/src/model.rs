//! `reported.model`: what the analyzer says about its detectors and its model
//! ([`pump_types::ModelStatus`] on local `pump/model`), as the controller reports it in the
//! `pump` shadow. Pure: statuses in, the value to report out.
//!
//! The analyzer repeats its status periodically (local pub/sub keeps nothing for a late
//! subscriber), so most statuses say nothing new: the report changes, and `since` moves, only
//! when something other than the status's timestamp changed. The shape never holds `null`
//! (the shadow engine never deletes reported keys, and `null` would delete one): what is
//! missing is an empty string, and `status` says what the other keys mean. The rules are in
//! the repository's `docs/shadow.md` ("The pump controller's rules").

use pump_types::{ModelStatus, PayloadError};
use serde_json::{Value, json};

/// Longest `error` reported, in bytes: the shadow's state is limited to 8 KiB, and the
/// analyzer's reasons may quote paths and file contents.
pub const MAX_ERROR_BYTES: usize = 240;
/// Longest model name or version accepted.
const MAX_NAME_BYTES: usize = 128;

/// The configured detector choices, as the analyzer's `detector` key spells them.
const DETECTOR_CHOICES: [&str; 3] = ["rules", "model", "both"];
/// The detectors that can run.
const DETECTORS: [&str; 2] = ["rules", "model"];

/// A message on `pump/model` that is not a status this controller reports.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Not a versioned `ModelStatus` payload.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// Parses, but says something impossible.
    #[error("invalid model status: {0}")]
    Invalid(String),
}

/// Parses and checks a message from `pump/model`.
pub fn parse_status(bytes: &[u8]) -> Result<ModelStatus, StatusError> {
    let status: ModelStatus = pump_types::parse(bytes)?;
    if !DETECTOR_CHOICES.contains(&status.detector.as_str()) {
        return Err(StatusError::Invalid(format!("detector {:?} is not one of rules, model, both", status.detector)));
    }
    if let Some(unknown) = status.running.iter().find(|d| !DETECTORS.contains(&d.as_str())) {
        return Err(StatusError::Invalid(format!("running names an unknown detector {unknown:?}")));
    }
    if let Some(model) = &status.model {
        if model.version.is_empty() || model.version.len() > MAX_NAME_BYTES || model.name.len() > MAX_NAME_BYTES {
            return Err(StatusError::Invalid("model name or version empty or too long".into()));
        }
        if model.sha256.len() != 64 || !model.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StatusError::Invalid(format!("model sha256 {:?} is not 64 hex digits", model.sha256)));
        }
    }
    Ok(status)
}

/// What `reported.model.status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No status received since the controller started.
    Unknown,
    /// The model detector runs, as configured.
    Running,
    /// A model passed its checks but the configured detector is `rules`.
    Standby,
    /// No model and nothing wrong: the rules run, as configured, and no model was offered.
    None,
    /// The configured model does not run, or the model offered last was refused: `error` says
    /// why, `running` what runs instead, `version` the model kept (if any).
    Error,
}

impl State {
    /// As the shadow spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Running => "running",
            State::Standby => "standby",
            State::None => "none",
            State::Error => "error",
        }
    }

    fn of(status: &ModelStatus) -> Self {
        if status.error.is_some() {
            State::Error
        } else if status.running.iter().any(|d| d == "model") {
            State::Running
        } else if status.model.is_some() {
            State::Standby
        } else {
            State::None
        }
    }
}

/// The content of `reported.model`, without `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content {
    status: State,
    detector: String,
    running: Vec<String>,
    name: String,
    version: String,
    sha256: String,
    error: String,
}

impl Content {
    fn unknown() -> Self {
        Content {
            status: State::Unknown,
            detector: String::new(),
            running: Vec::new(),
            name: String::new(),
            version: String::new(),
            sha256: String::new(),
            error: String::new(),
        }
    }

    fn of(status: &ModelStatus) -> Self {
        let model = status.model.as_ref();
        Content {
            status: State::of(status),
            detector: status.detector.clone(),
            running: status.running.clone(),
            name: model.map(|m| m.name.clone()).unwrap_or_default(),
            version: model.map(|m| m.version.clone()).unwrap_or_default(),
            sha256: model.map(|m| m.sha256.clone()).unwrap_or_default(),
            error: status.error.as_deref().map(shorten).unwrap_or_default(),
        }
    }
}

/// `text` cut to [`MAX_ERROR_BYTES`] on a character boundary, with `…` when cut.
fn shorten(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The latest model status and since when it says what it says.
#[derive(Debug, Clone)]
pub struct ModelReport {
    content: Content,
    since: u64,
}

impl ModelReport {
    /// `unknown` since `now_ms` (the controller's start).
    pub fn new(now_ms: u64) -> Self {
        ModelReport { content: Content::unknown(), since: now_ms }
    }

    /// Takes a status; returns whether the report changed (a repeat changes nothing, not even
    /// `since`, which is the status's `ts` when its content first appeared).
    pub fn update(&mut self, status: &ModelStatus) -> bool {
        let content = Content::of(status);
        if content == self.content {
            return false;
        }
        self.content = content;
        self.since = status.ts;
        true
    }

    /// What `status` says now.
    pub fn state(&self) -> State {
        self.content.status
    }

    /// The value of `reported.model`.
    pub fn report(&self) -> Value {
        let c = &self.content;
        json!({
            "status": c.status.as_str(),
            "detector": c.detector,
            "running": c.running,
            "name": c.name,
            "version": c.version,
            "sha256": c.sha256,
            "error": c.error,
            "since": self.since,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump_types::ModelInfo;

    const SHA: &str = "592a00b6c4e234f43ae3d0190490c8957ca51ae4fb421ef05c778f7b64589316";

    fn status(detector: &str, running: &[&str], version: Option<&str>, error: Option<&str>, ts: u64) -> ModelStatus {
        ModelStatus {
            v: 1,
            ts,
            detector: detector.into(),
            running: running.iter().map(|s| (*s).to_owned()).collect(),
            model: version.map(|v| ModelInfo {
                name: "pump-fault-classifier".into(),
                version: v.into(),
                sha256: SHA.into(),
            }),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn the_status_says_what_runs_and_what_became_of_the_model() {
        let rows = [
            ("model runs", status("model", &["model"], Some("1.0.0"), None, 1), State::Running),
            ("both run", status("both", &["rules", "model"], Some("1.0.0"), None, 1), State::Running),
            ("loaded, rules configured", status("rules", &["rules"], Some("1.0.0"), None, 1), State::Standby),
            ("no model, rules configured", status("rules", &["rules"], None, None, 1), State::None),
            (
                "model refused, rules instead",
                status("model", &["rules"], None, Some("model refused: digest"), 1),
                State::Error,
            ),
            (
                "new version refused, old kept",
                status("model", &["model"], Some("1.0.0"), Some("model refused, keeping version 1.0.0"), 1),
                State::Error,
            ),
        ];
        for (name, s, want) in rows {
            let mut report = ModelReport::new(0);
            assert!(report.update(&s), "{name}");
            assert_eq!(report.state(), want, "{name}");
            assert_eq!(report.report()["status"], want.as_str(), "{name}");
        }
    }

    #[test]
    fn the_report_holds_every_key_and_never_null() {
        let unknown = ModelReport::new(42).report();
        assert_eq!(
            unknown,
            json!({"status": "unknown", "detector": "", "running": [], "name": "", "version": "", "sha256": "",
                   "error": "", "since": 42})
        );
        let mut report = ModelReport::new(42);
        report.update(&status("model", &["model"], Some("1.0.0"), None, 1000));
        assert_eq!(
            report.report(),
            json!({"status": "running", "detector": "model", "running": ["model"], "name": "pump-fault-classifier",
                   "version": "1.0.0", "sha256": SHA, "error": "", "since": 1000})
        );
        report.update(&status("model", &["rules"], None, Some("model refused: no card"), 2000));
        let value = report.report();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 8, "{value}");
        assert!(value.as_object().unwrap().values().all(|v| !v.is_null()), "{value}");
        assert_eq!((value["status"].as_str(), value["version"].as_str()), (Some("error"), Some("")));
    }

    #[test]
    fn a_repeated_status_changes_nothing_and_keeps_since() {
        let mut report = ModelReport::new(0);
        assert!(report.update(&status("both", &["rules", "model"], Some("1.0.0"), None, 1000)));
        for ts in [31_000, 61_000] {
            assert!(!report.update(&status("both", &["rules", "model"], Some("1.0.0"), None, ts)), "ts {ts}");
        }
        assert_eq!(report.report()["since"], 1000);
        // A new version is news.
        assert!(report.update(&status("both", &["rules", "model"], Some("1.1.0"), None, 90_000)));
        assert_eq!(
            (report.report()["version"].clone(), report.report()["since"].clone()),
            (json!("1.1.0"), json!(90_000))
        );
    }

    #[test]
    fn a_long_error_is_cut_on_a_character_boundary() {
        let long = "é".repeat(400);
        let mut report = ModelReport::new(0);
        report.update(&status("model", &["rules"], None, Some(&long), 1));
        let error = report.report()["error"].as_str().unwrap().to_owned();
        assert!(error.len() <= MAX_ERROR_BYTES, "{}", error.len());
        assert!(error.ends_with('…') && error.starts_with("éé"), "{error}");
        assert_eq!(shorten("short"), "short");
    }

    #[test]
    fn bad_model_status_payloads_get_clear_errors() {
        let good = serde_json::to_value(status("model", &["model"], Some("1.0.0"), None, 1)).unwrap();
        assert!(parse_status(&serde_json::to_vec(&good).unwrap()).is_ok());
        let with = |pointer: &str, value: Value| {
            let mut v = good.clone();
            *v.pointer_mut(pointer).unwrap() = value;
            serde_json::to_vec(&v).unwrap()
        };
        let rows: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not JSON", b"{nope".to_vec(), "malformed payload"),
            ("no version", br#"{"detector":"model"}"#.to_vec(), "missing \"v\""),
            ("newer version", br#"{"v":2}"#.to_vec(), "payload version 2"),
            ("missing fields", br#"{"v":1,"ts":1}"#.to_vec(), "malformed payload"),
            ("unknown detector", with("/detector", json!("magic")), "detector \"magic\""),
            ("unknown running detector", with("/running", json!(["rules", "oracle"])), "unknown detector \"oracle\""),
            ("empty version", with("/model/version", json!("")), "name or version"),
            ("bad digest", with("/model/sha256", json!("abc")), "64 hex digits"),
            ("model not an object", with("/model", json!("1.0.0")), "malformed payload"),
        ];
        for (name, bytes, want) in rows {
            let err = parse_status(&bytes).expect_err(name).to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }
}
