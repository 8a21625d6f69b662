//! The lifecycle of a component: steps, their defaults, and `Skipif`.
//!
//! Follows the recipe reference (`Manifests[].Lifecycle`) and the nucleus
//! (`Lifecycle.java`, `GenericExternalService.java`):
//!
//! | step | default timeout |
//! | --- | --- |
//! | `Install` | 120 s (runs at every start of the nucleus, not only once) |
//! | `Run` | none: runs until it exits |
//! | `Startup` | 120 s (must exit, or report RUNNING over IPC) |
//! | `Shutdown` | 15 s |
//! | `Recover` | 60 s |
//! | `Bootstrap` | 120 s (exit 100 restarts the nucleus, 101 reboots the device) |
//!
//! A step is a script string, or an object `{Script, RequiresPrivilege, Skipif, Timeout,
//! Setenv}`. Keys are case-insensitive (the nucleus reads them from a case-insensitive
//! configuration tree); environment variable names and values keep their case. A recipe may
//! define `Run` or `Startup`, not both (the recipe reference: "You can define only one `Startup`
//! or `Run` lifecycle"); we reject both together where the nucleus would silently ignore `Run`.

use std::time::Duration;

use serde_json::Value;

use super::doc::{Diagnostics, Fields, kind_of, string};

/// The lifecycle steps a recipe can define.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepKind {
    /// `Bootstrap`: before install, when the component is new, its version changes or the
    /// bootstrap step changes.
    Bootstrap,
    /// `Install`.
    Install,
    /// `Startup`: a background process that must exit or report RUNNING.
    Startup,
    /// `Run`: the long-running process.
    Run,
    /// `Shutdown`.
    Shutdown,
    /// `Recover`: after the component enters ERRORED.
    Recover,
}

impl StepKind {
    /// Every step, in the order the nucleus may run them.
    pub const ALL: [StepKind; 6] =
        [Self::Bootstrap, Self::Install, Self::Startup, Self::Run, Self::Shutdown, Self::Recover];

    /// The recipe key, as the recipe reference spells it.
    pub fn key(self) -> &'static str {
        match self {
            Self::Bootstrap => "Bootstrap",
            Self::Install => "Install",
            Self::Startup => "Startup",
            Self::Run => "Run",
            Self::Shutdown => "Shutdown",
            Self::Recover => "Recover",
        }
    }

    /// How long the nucleus lets the step run when the recipe sets no `Timeout`; `None` for
    /// `Run`, which has no default timeout.
    pub fn default_timeout(self) -> Option<Duration> {
        let secs = match self {
            Self::Bootstrap | Self::Install | Self::Startup => 120,
            Self::Run => return None,
            Self::Shutdown => 15,
            Self::Recover => 60,
        };
        Some(Duration::from_secs(secs))
    }
}

/// A component lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// `Setenv`: environment for every step, in recipe order.
    pub setenv: Vec<(String, String)>,
    /// The steps defined, in [`StepKind::ALL`] order.
    pub steps: Vec<Step>,
}

impl Lifecycle {
    /// The step of `kind`, if defined.
    pub fn step(&self, kind: StepKind) -> Option<&Step> {
        self.steps.iter().find(|s| s.kind == kind)
    }

    /// True when no step is defined (an artifact-only component, for instance).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The environment of `step`: lifecycle `Setenv`, overridden by the step's own `Setenv`.
    pub fn environment(&self, step: &Step) -> Vec<(String, String)> {
        let mut env = self.setenv.clone();
        for (name, value) in &step.setenv {
            match env.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.clone(),
                None => env.push((name.clone(), value.clone())),
            }
        }
        env
    }

    /// A copy with `expand` applied to every text the nucleus interpolates: scripts, `Skipif`
    /// arguments and `Setenv` values.
    pub fn map_text(&self, expand: &dyn Fn(&str) -> String) -> Lifecycle {
        let env = |vars: &[(String, String)]| vars.iter().map(|(k, v)| (k.clone(), expand(v))).collect();
        Lifecycle {
            setenv: env(&self.setenv),
            steps: self
                .steps
                .iter()
                .map(|s| Step {
                    kind: s.kind,
                    script: expand(&s.script),
                    requires_privilege: s.requires_privilege,
                    skip_if: s.skip_if.as_ref().map(|k| SkipIf { check: k.check.map(expand), negated: k.negated }),
                    timeout: s.timeout,
                    setenv: env(&s.setenv),
                })
                .collect(),
        }
    }
}

/// One lifecycle step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Which step this is.
    pub kind: StepKind,
    /// `Script`: the shell script to run.
    pub script: String,
    /// `RequiresPrivilege`: run as root instead of the component's user.
    pub requires_privilege: bool,
    /// `Skipif`.
    pub skip_if: Option<SkipIf>,
    /// `Timeout` as written; see [`Step::timeout`] for the effective value.
    pub timeout: Option<Duration>,
    /// `Setenv` of this step (overrides the lifecycle's).
    pub setenv: Vec<(String, String)>,
}

impl Step {
    /// The timeout the nucleus applies: the recipe's, else the step's default.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.or(self.kind.default_timeout())
    }
}

/// `Skipif`: `onpath <executable>` or `exists <file>`, optionally negated with a leading `!`
/// (accepted by the nucleus, not documented).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipIf {
    /// The check.
    pub check: SkipCheck,
    /// `!`: skip when the check is false.
    pub negated: bool,
}

/// The check of a [`SkipIf`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipCheck {
    /// `onpath X`: X is an executable on the `PATH`.
    OnPath(String),
    /// `exists X`: the file X exists (the nucleus expands a leading `~`; so must the probe).
    Exists(String),
}

impl SkipCheck {
    fn map(&self, f: &dyn Fn(&str) -> String) -> SkipCheck {
        match self {
            Self::OnPath(x) => Self::OnPath(f(x)),
            Self::Exists(x) => Self::Exists(f(x)),
        }
    }
}

impl SkipIf {
    /// Reads a `Skipif` expression as the nucleus does: trimmed, an optional `!`, then
    /// `onpath` or `exists` (lower case), one or more spaces, and the argument.
    pub fn parse(text: &str) -> Result<SkipIf, String> {
        let mut expr = text.trim();
        let negated = expr.starts_with('!');
        if negated {
            expr = expr[1..].trim();
        }
        let parse_arg = |rest: &str| {
            let arg = rest.trim_start_matches(' ');
            (arg.len() < rest.len() && !arg.is_empty()).then(|| arg.to_owned())
        };
        let check = if let Some(arg) = expr.strip_prefix("onpath").and_then(parse_arg) {
            SkipCheck::OnPath(arg)
        } else if let Some(arg) = expr.strip_prefix("exists").and_then(parse_arg) {
            SkipCheck::Exists(arg)
        } else {
            return Err(format!("Skipif {text:?} must be \"onpath <executable>\" or \"exists <file>\""));
        };
        Ok(SkipIf { check, negated })
    }

    /// Whether the step is skipped, given probes for "is this executable on the PATH" and
    /// "does this file exist". Pure: the caller decides how to probe.
    pub fn should_skip(&self, on_path: &dyn Fn(&str) -> bool, exists: &dyn Fn(&str) -> bool) -> bool {
        let found = match &self.check {
            SkipCheck::OnPath(x) => on_path(x),
            SkipCheck::Exists(x) => exists(x),
        };
        found != self.negated
    }
}

/// Reads a lifecycle object (after selections have been applied) into a [`Lifecycle`].
pub(crate) fn parse_lifecycle(value: &Value, path: &str, diag: &mut Diagnostics) -> Lifecycle {
    let mut lifecycle = Lifecycle::default();
    let Some(mut fields) = Fields::of(value, path, "Lifecycle", diag) else {
        return lifecycle;
    };
    if let Some((p, v)) = fields.get("setenv") {
        lifecycle.setenv = parse_setenv(v, &p, diag);
    }
    for kind in StepKind::ALL {
        if let Some((p, v)) = fields.get(&kind.key().to_ascii_lowercase())
            && let Some(step) = parse_step(kind, v, &p, diag)
        {
            lifecycle.steps.push(step);
        }
    }
    if lifecycle.step(StepKind::Run).is_some() && lifecycle.step(StepKind::Startup).is_some() {
        let p = fields.get("startup").map(|(p, _)| p).unwrap_or_else(|| path.to_owned());
        diag.fault(&p, "Run and Startup are mutually exclusive: a lifecycle defines only one of them");
    }
    fields.warn_unused("lifecycle", diag);
    lifecycle
}

fn parse_step(kind: StepKind, value: &Value, path: &str, diag: &mut Diagnostics) -> Option<Step> {
    let mut step = Step {
        kind,
        script: String::new(),
        requires_privilege: false,
        skip_if: None,
        timeout: None,
        setenv: Vec::new(),
    };
    match value {
        Value::String(script) => {
            step.script = script.clone();
            return Some(step);
        }
        Value::Object(_) => {}
        other => {
            diag.fault(
                path,
                format!("{} must be a script string or an object with Script, found {}", kind.key(), kind_of(other)),
            );
            return None;
        }
    }
    let mut fields = Fields::of(value, path, kind.key(), diag)?;
    let before = diag.faults.len();
    match fields.get("script") {
        Some((p, v)) => step.script = string(v, &p, "Script", diag).unwrap_or_default(),
        None => diag.fault(path, format!("{} is an object without Script", kind.key())),
    }
    if let Some((p, v)) = fields.get("requiresprivilege") {
        match v {
            Value::Bool(b) => step.requires_privilege = *b,
            Value::String(s) if s.eq_ignore_ascii_case("true") => step.requires_privilege = true,
            Value::String(s) if s.eq_ignore_ascii_case("false") => step.requires_privilege = false,
            other => diag.fault(&p, format!("RequiresPrivilege must be true or false, found {}", describe(other))),
        }
    }
    if let Some((p, v)) = fields.get("skipif")
        && let Some(text) = string(v, &p, "Skipif", diag)
    {
        match SkipIf::parse(&text) {
            Ok(skip) => step.skip_if = Some(skip),
            Err(e) => diag.fault(&p, e),
        }
    }
    if let Some((p, v)) = fields.get("timeout") {
        let secs = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match secs {
            Some(secs) => step.timeout = Some(Duration::from_secs(secs)),
            None => diag.fault(&p, format!("Timeout must be a whole number of seconds, found {}", describe(v))),
        }
    }
    if let Some((p, v)) = fields.get("setenv") {
        step.setenv = parse_setenv(v, &p, diag);
    }
    fields.warn_unused(&format!("{} step", kind.key()), diag);
    (diag.faults.len() == before).then_some(step)
}

fn parse_setenv(value: &Value, path: &str, diag: &mut Diagnostics) -> Vec<(String, String)> {
    let Value::Object(map) = value else {
        diag.warn(path, format!("Setenv is {}, not an object of variables: the nucleus ignores it", kind_of(value)));
        return Vec::new();
    };
    let mut vars = Vec::with_capacity(map.len());
    for (name, v) in map {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                let p = super::error::join_path(path, name);
                diag.fault(
                    &p,
                    format!("environment variable value must be a string, number or boolean, found {}", kind_of(other)),
                );
                continue;
            }
        };
        vars.push((name.clone(), text));
    }
    vars
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => kind_of(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> (Lifecycle, Diagnostics) {
        let mut diag = Diagnostics::default();
        let lifecycle = parse_lifecycle(&value, "/Manifests/0/Lifecycle", &mut diag);
        (lifecycle, diag)
    }

    fn parse_ok(value: Value) -> Lifecycle {
        let (lifecycle, diag) = parse(value);
        assert!(diag.faults.is_empty(), "{:?}", diag.faults);
        lifecycle
    }

    fn fault_messages(value: Value) -> Vec<String> {
        parse(value).1.faults.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn string_step_is_a_script_with_defaults() {
        let lifecycle = parse_ok(json!({"Run": "python3 -u hello.py"}));
        let run = lifecycle.step(StepKind::Run).unwrap();
        assert_eq!(run.script, "python3 -u hello.py");
        assert!(!run.requires_privilege);
        assert_eq!(run.skip_if, None);
        assert_eq!(run.timeout(), None);
    }

    #[test]
    fn object_step_reads_every_field() {
        let lifecycle = parse_ok(json!({
            "Install": {
                "Script": "pip3 install -r requirements.txt",
                "RequiresPrivilege": true,
                "Skipif": "onpath pip3",
                "Timeout": 300,
                "Setenv": {"PIP_NO_CACHE": 1, "MODE": "fast", "VERBOSE": false}
            }
        }));
        let install = lifecycle.step(StepKind::Install).unwrap();
        assert_eq!(install.script, "pip3 install -r requirements.txt");
        assert!(install.requires_privilege);
        assert_eq!(install.skip_if, Some(SkipIf { check: SkipCheck::OnPath("pip3".into()), negated: false }));
        assert_eq!(install.timeout(), Some(Duration::from_secs(300)));
        assert_eq!(
            install.setenv,
            vec![
                ("PIP_NO_CACHE".to_owned(), "1".to_owned()),
                ("MODE".to_owned(), "fast".to_owned()),
                ("VERBOSE".to_owned(), "false".to_owned()),
            ]
        );
    }

    #[test]
    fn timeouts_default_per_step() {
        let lifecycle = parse_ok(json!({
            "Bootstrap": "b", "Install": "i", "Startup": "s", "Shutdown": "d", "Recover": "r"
        }));
        let cases = [
            (StepKind::Bootstrap, Some(120)),
            (StepKind::Install, Some(120)),
            (StepKind::Startup, Some(120)),
            (StepKind::Shutdown, Some(15)),
            (StepKind::Recover, Some(60)),
        ];
        for (kind, secs) in cases {
            assert_eq!(lifecycle.step(kind).unwrap().timeout(), secs.map(Duration::from_secs), "{kind:?}");
        }
        assert_eq!(StepKind::Run.default_timeout(), None);
    }

    #[test]
    fn timeout_and_privilege_accept_strings_like_the_nucleus() {
        let lifecycle = parse_ok(json!({"Shutdown": {"Script": "x", "Timeout": "30", "RequiresPrivilege": "TRUE"}}));
        let shutdown = lifecycle.step(StepKind::Shutdown).unwrap();
        assert_eq!(shutdown.timeout(), Some(Duration::from_secs(30)));
        assert!(shutdown.requires_privilege);
    }

    #[test]
    fn lifecycle_keys_are_case_insensitive() {
        let lifecycle = parse_ok(
            json!({"run": {"script": "a", "skipIf": "exists /tmp/x", "TIMEOUT": 5}, "setEnv": {"Path_X": "v"}}),
        );
        let run = lifecycle.step(StepKind::Run).unwrap();
        assert_eq!(run.script, "a");
        assert_eq!(run.timeout(), Some(Duration::from_secs(5)));
        assert_eq!(lifecycle.setenv, vec![("Path_X".to_owned(), "v".to_owned())]);
    }

    #[test]
    fn run_and_startup_together_are_rejected() {
        let messages = fault_messages(json!({"Run": "a", "Startup": "b"}));
        assert_eq!(
            messages,
            vec![
                "/Manifests/0/Lifecycle/Startup: Run and Startup are mutually exclusive: a lifecycle defines only one of them"
            ]
        );
    }

    #[test]
    fn malformed_steps_name_the_field_at_fault() {
        let cases: &[(Value, &str)] = &[
            (
                json!({"Run": 5}),
                "/Manifests/0/Lifecycle/Run: Run must be a script string or an object with Script, found a number",
            ),
            (json!({"Install": {"Timeout": 5}}), "/Manifests/0/Lifecycle/Install: Install is an object without Script"),
            (
                json!({"Run": {"Script": "a", "Timeout": -1}}),
                "/Manifests/0/Lifecycle/Run/Timeout: Timeout must be a whole number of seconds, found a number",
            ),
            (
                json!({"Run": {"Script": "a", "Timeout": "soon"}}),
                "/Manifests/0/Lifecycle/Run/Timeout: Timeout must be a whole number of seconds, found \"soon\"",
            ),
            (
                json!({"Run": {"Script": "a", "Skipif": "which python"}}),
                "/Manifests/0/Lifecycle/Run/Skipif: Skipif \"which python\" must be \"onpath <executable>\" or \"exists <file>\"",
            ),
            (
                json!({"Run": {"Script": "a", "RequiresPrivilege": "yes"}}),
                "/Manifests/0/Lifecycle/Run/RequiresPrivilege: RequiresPrivilege must be true or false, found \"yes\"",
            ),
            (
                json!({"Setenv": {"A": {"nested": 1}}}),
                "/Manifests/0/Lifecycle/Setenv/A: environment variable value must be a string, number or boolean, found an object",
            ),
            (
                json!({"Run": "a", "run": "b"}),
                "/Manifests/0/Lifecycle/run: duplicate key: \"run\" and \"Run\" are the same key (recipe keys are case-insensitive)",
            ),
            (json!("echo hi"), "/Manifests/0/Lifecycle: Lifecycle must be an object, found a string"),
        ];
        for (value, expected) in cases {
            assert_eq!(fault_messages(value.clone()), vec![expected.to_string()], "{value}");
        }
    }

    #[test]
    fn unknown_lifecycle_keys_are_warnings() {
        let (_, diag) = parse(json!({"Run": "a", "Uninstall": "b"}));
        assert!(diag.faults.is_empty());
        assert_eq!(
            diag.warnings[0].to_string(),
            "/Manifests/0/Lifecycle/Uninstall: unknown lifecycle key \"Uninstall\" is ignored"
        );
    }

    #[test]
    fn skipif_parses_like_the_nucleus() {
        let cases: &[(&str, Option<(SkipCheck, bool)>)] = &[
            ("onpath python3", Some((SkipCheck::OnPath("python3".into()), false))),
            ("exists /tmp/my configuration.db", Some((SkipCheck::Exists("/tmp/my configuration.db".into()), false))),
            ("  exists   /x  ", Some((SkipCheck::Exists("/x".into()), false))),
            ("!onpath git", Some((SkipCheck::OnPath("git".into()), true))),
            ("! exists /x", Some((SkipCheck::Exists("/x".into()), true))),
            ("onpath", None),
            ("onpathpython3", None),
            ("OnPath python3", None),
            ("which python3", None),
            ("", None),
        ];
        for (text, expected) in cases {
            let parsed = SkipIf::parse(text).ok().map(|s| (s.check, s.negated));
            assert_eq!(&parsed, expected, "{text:?}");
        }
    }

    #[test]
    fn skipif_decides_with_injected_probes() {
        let on_path = |x: &str| x == "python3";
        let exists = |x: &str| x == "/etc/ready";
        let cases = [
            ("onpath python3", true),
            ("onpath python2", false),
            ("exists /etc/ready", true),
            ("exists /etc/other", false),
            ("!onpath python3", false),
            ("!exists /etc/other", true),
        ];
        for (text, skip) in cases {
            assert_eq!(SkipIf::parse(text).unwrap().should_skip(&on_path, &exists), skip, "{text}");
        }
    }

    #[test]
    fn step_setenv_overrides_lifecycle_setenv() {
        let lifecycle =
            parse_ok(json!({"Setenv": {"A": "1", "B": "2"}, "Run": {"Script": "x", "Setenv": {"B": "3", "C": "4"}}}));
        let run = lifecycle.step(StepKind::Run).unwrap();
        let env = lifecycle.environment(run);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env, [("A", "1"), ("B", "3"), ("C", "4")]);
    }
}
