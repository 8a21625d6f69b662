//! The results as a Markdown section (printed, and with `--out` written into
//! `docs/benchmarks.md` between markers, replacing the previous run's section),
//! with every figure side by side and a verdict for each goal of the issue:
//! throughput at least Mosquitto's, p99 latency at most 2× Mosquitto's, and
//! 10,000 concurrent mTLS connections under 1 GiB RSS.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use bench_common::format::{mib, now_utc, thousands};
use bench_common::section::Markers;

use crate::flow::{FlowResult, Phase};
use crate::idle::IdleResult;
use crate::machine::Machine;
use crate::plan::Plan;
use crate::target::Kind;

/// First line of the generated section.
const BEGIN: &str = "<!-- broker-bench:begin (generated; re-running the command it names replaces this section) -->";
/// Last line of the generated section.
const END: &str = "<!-- broker-bench:end -->";
/// Connections at which the memory goal applies.
const MEMORY_GOAL_CONNECTIONS: usize = 10_000;
/// The memory goal, KiB.
const MEMORY_GOAL_KIB: u64 = 1024 * 1024;

/// One scenario's result per broker, or why it could not run there.
pub type ByBroker<T> = Vec<(Kind, Result<T, String>)>;

/// Everything one run measured.
#[derive(Debug)]
pub struct Results {
    plan: Plan,
    command: String,
    machine: Machine,
    mosquitto: String,
    date: String,
    /// Idle connections per broker.
    pub idle: Vec<(Kind, Result<IdleResult, String>)>,
    /// Publishers → subscriber scenarios (1 → 1 and N → 1, per MQTT version), in order: the
    /// scenario's name and its result per broker.
    pub flows: Vec<(String, ByBroker<FlowResult>)>,
    /// Shadow updates (local cloud only).
    pub shadow: Option<Result<FlowResult, String>>,
}

/// The command that reproduces this run.
pub fn command_line(quick: bool, out: Option<&Path>) -> String {
    let mut c = "cargo run --release -p broker-bench --".to_owned();
    if quick {
        c.push_str(" --quick");
    }
    if let Some(out) = out {
        let _ = write!(c, " --out {}", out.display());
    }
    c
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 { format!("{ms:.2}") } else { format!("{ms:.1}") }
}

/// A goal's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Met,
    NotMet,
    /// Could not be judged (Mosquitto missing, an error, a quick run).
    Unknown,
}

impl Verdict {
    fn cell(self) -> &'static str {
        match self {
            Verdict::Met => "yes",
            Verdict::NotMet => "**no**",
            Verdict::Unknown => "n/a",
        }
    }

    fn from(ok: Option<bool>) -> Verdict {
        match ok {
            Some(true) => Verdict::Met,
            Some(false) => Verdict::NotMet,
            None => Verdict::Unknown,
        }
    }
}

fn pick<T>(results: &[(Kind, Result<T, String>)], kind: Kind) -> Option<&Result<T, String>> {
    results.iter().find(|(k, _)| *k == kind).map(|(_, r)| r)
}

/// A table cell for one broker: the figure, or why there is none.
fn cell<T>(r: Option<&Result<T, String>>, f: impl Fn(&T) -> Option<String>) -> String {
    match r {
        None => "not run".into(),
        Some(Err(_)) => "error (see notes)".into(),
        Some(Ok(t)) => f(t).unwrap_or_else(|| "–".into()),
    }
}

/// Which phase of a flow result a row is about.
type PhaseOf = fn(&FlowResult) -> &Phase;

fn throughput_cell(p: &Phase) -> Option<String> {
    let mut c = thousands(p.throughput().round() as u64);
    let share = |n: u64| n as f64 * 100.0 / p.expected.max(1) as f64;
    if p.throttled > 0 {
        let _ = write!(c, " ({:.1}% throttled)", share(p.throttled));
    }
    if p.lost() > 0 {
        let _ = write!(c, " ({:.1}% lost)", share(p.lost()));
    }
    Some(c)
}

fn latency_cell(p: &Phase) -> Option<String> {
    p.latency.map(|l| format!("{} / {}", ms(l.p50), ms(l.p99)))
}

fn delivered_cell(p: &Phase) -> Option<String> {
    let mut s = format!("{} / {}", thousands(p.received), thousands(p.expected));
    if p.timed_out {
        s.push_str(" (deadline)");
    }
    Some(s)
}

/// Refusals apart from losses: a 429 is the shadow service's in-flight limit answering, and the
/// request was never taken.
fn refused_cell(p: &Phase) -> Option<String> {
    let mut s = format!("{} / {}", thousands(p.throttled), thousands(p.lost()));
    if p.rejected > 0 {
        let _ = write!(s, " ({} refused with another code)", thousands(p.rejected));
    }
    Some(s)
}

fn cpu_cell(p: &Phase) -> Option<String> {
    p.cpu_per_message().map(|d| format!("{:.1}", d.as_secs_f64() * 1e6))
}

fn ok_flow(r: Option<&Result<FlowResult, String>>) -> Option<&FlowResult> {
    r.and_then(|r| r.as_ref().ok())
}

struct Table {
    text: String,
    notes: Vec<String>,
    goals: Vec<(String, Verdict)>,
}

impl Table {
    fn row(&mut self, cells: [&str; 6]) {
        let _ = writeln!(self.text, "| {} |", cells.join(" | "));
    }

    /// Rows for one publishers → subscriber scenario; `mosquitto` is `None` for the shadow scenario.
    fn flow(
        &mut self,
        name: &str,
        local: Option<&Result<FlowResult, String>>,
        mosquitto: Option<Option<&Result<FlowResult, String>>>,
        unit: &str,
    ) {
        let (l, m) = (ok_flow(local), mosquitto.and_then(ok_flow));
        let window = l.or(m).map(|r| thousands(r.window as u64)).unwrap_or_default();
        let rate = l.or(m).map(|r| thousands(r.paced_rate)).unwrap_or_default();
        let phases: [(String, PhaseOf, bool); 3] = [
            (format!("{name}, saturated"), |r| &r.saturated, true),
            (format!("{name}, end-to-end window {window}"), |r| &r.windowed, true),
            (format!("{name}, paced {rate} {unit}/s"), |r| &r.paced, false),
        ];
        for (label, of, judge_throughput) in phases {
            self.phase_rows(&label, of, judge_throughput, local, mosquitto, unit);
        }
        for (broker, r) in [("local cloud", local), ("Mosquitto", mosquitto.flatten())] {
            match r {
                Some(Err(e)) => self.notes.push(format!("{name} on {broker} could not run: {e}")),
                Some(Ok(r)) => {
                    for e in &r.errors {
                        self.notes.push(format!("{name} on {broker}: connection ended: {e}"));
                    }
                    for (phase, p) in
                        [("saturated", &r.saturated), ("end-to-end window", &r.windowed), ("paced", &r.paced)]
                    {
                        if p.throttled + p.rejected > 0 {
                            self.notes.push(format!(
                                "{name} on {broker}, {phase}: {} of {} requests refused with 429 \
                                 (more than 10 in flight on the connection; throttled, not lost){}",
                                thousands(p.throttled),
                                thousands(p.expected),
                                if p.rejected > 0 {
                                    format!(", {} refused with another code", thousands(p.rejected))
                                } else {
                                    String::new()
                                }
                            ));
                        }
                        if p.lost() > 0 {
                            self.notes.push(format!(
                                "{name} on {broker}, {phase}: {} of {} messages lost: neither delivered nor refused \
                                 ({} publish calls completed){}",
                                thousands(p.lost()),
                                thousands(p.expected),
                                thousands(p.sent),
                                if p.timed_out { "; phase deadline reached" } else { "" }
                            ));
                        }
                    }
                }
                None => {}
            }
        }
    }

    /// Rows for one phase of a flow scenario, with its goals.
    fn phase_rows(
        &mut self,
        label: &str,
        of: PhaseOf,
        judge_throughput: bool,
        local: Option<&Result<FlowResult, String>>,
        mosquitto: Option<Option<&Result<FlowResult, String>>>,
        unit: &str,
    ) {
        let m_cell = |f: &dyn Fn(&FlowResult) -> Option<String>| match mosquitto {
            None => "n/a (no shadow service)".to_owned(),
            Some(m) => cell(m, f),
        };
        let (l, m) = (ok_flow(local).map(of), mosquitto.and_then(ok_flow).map(of));
        let compare = mosquitto.is_some();
        let mut first = Some(label);
        let mut row =
            |t: &mut Table, figure: &str, f: &dyn Fn(&Phase) -> Option<String>, goal: Option<(&str, Verdict)>| {
                let (g, v) = match goal {
                    Some((g, v)) if compare => (g, v.cell()),
                    _ => ("", ""),
                };
                t.row([first.take().unwrap_or(""), figure, &cell(local, |r| f(of(r))), &m_cell(&|r| f(of(r))), g, v]);
            };
        if judge_throughput {
            // A QoS 1 broker that loses messages does not meet a throughput goal, however fast the rest arrived.
            let v = Verdict::from(l.zip(m).map(|(l, m)| l.received >= l.expected && l.throughput() >= m.throughput()));
            row(self, &format!("throughput, {unit}/s"), &throughput_cell, Some(("≥ Mosquitto, none lost", v)));
            if compare {
                self.goals.push((format!("{label}: throughput at least Mosquitto's, none lost"), v));
            }
        }
        let v = Verdict::from(l.zip(m).and_then(|(l, m)| Some(l.latency?.p99 <= m.latency?.p99 * 2)));
        row(self, "latency p50 / p99, ms", &latency_cell, Some(("p99 ≤ 2× Mosquitto", v)));
        if compare {
            self.goals.push((format!("{label}: p99 latency at most 2× Mosquitto's"), v));
        }
        row(self, "delivered / expected", &delivered_cell, None);
        if !compare {
            row(self, "throttled (429) / lost", &refused_cell, None);
        }
        if judge_throughput {
            row(self, "broker CPU per delivered message, µs", &cpu_cell, None);
        }
    }

    fn idle(
        &mut self,
        local: Option<&Result<IdleResult, String>>,
        mosquitto: Option<&Result<IdleResult, String>>,
        plan: &Plan,
    ) {
        self.row([
            "idle mTLS connections",
            "broker RSS with none, MiB",
            &cell(local, |r| r.baseline_kib.map(mib)),
            &cell(mosquitto, |r| r.baseline_kib.map(mib)),
            "",
            "",
        ]);
        for (i, &n) in plan.idle_steps.iter().enumerate() {
            let at = |r: &IdleResult| {
                let s = r.steps.get(i)?;
                let mut c = format!("{} ({:.1} KiB/conn)", mib(s.rss_kib?), r.per_connection_kib(s)?);
                if s.open < n {
                    let _ = write!(c, ", only {} open", thousands(s.open as u64));
                }
                Some(c)
            };
            let mut goal = ("", Verdict::Unknown);
            if n == MEMORY_GOAL_CONNECTIONS {
                let ok = local.and_then(|r| r.as_ref().ok()).and_then(|r| {
                    let s = r.steps.get(i)?;
                    Some(s.open >= n && s.rss_kib? < MEMORY_GOAL_KIB)
                });
                goal = ("< 1 GiB", Verdict::from(ok));
                self.goals.push(("10,000 concurrent mTLS connections under 1 GiB RSS".into(), goal.1));
            }
            let verdict = if goal.0.is_empty() { "" } else { goal.1.cell() };
            self.row([
                "",
                &format!("RSS at {} open, MiB (growth per connection)", thousands(n as u64)),
                &cell(local, at),
                &cell(mosquitto, at),
                goal.0,
                verdict,
            ]);
        }
        if !plan.idle_steps.contains(&MEMORY_GOAL_CONNECTIONS) {
            self.goals.push((
                "10,000 concurrent mTLS connections under 1 GiB RSS (not measured: quick run)".into(),
                Verdict::Unknown,
            ));
        }
        let rate = |r: &IdleResult| {
            let rates: Vec<String> = r.steps.iter().map(|s| thousands(s.connect_rate.round() as u64)).collect();
            (!rates.is_empty()).then(|| rates.join(" / "))
        };
        self.row(["", "connections opened per second, per step", &cell(local, rate), &cell(mosquitto, rate), "", ""]);
        let after = |r: &IdleResult| r.after_close_kib.map(mib);
        let again = |r: &IdleResult| {
            let s = r.reopened.as_ref()?;
            Some(format!("{} ({} open)", mib(s.rss_kib?), thousands(s.open as u64)))
        };
        self.row(["", "RSS after closing them all, MiB", &cell(local, after), &cell(mosquitto, after), "", ""]);
        self.row(["", "RSS after opening as many again, MiB", &cell(local, again), &cell(mosquitto, again), "", ""]);
        for (broker, r) in [("local cloud", local), ("Mosquitto", mosquitto)] {
            match r {
                Some(Err(e)) => self.notes.push(format!("idle connections on {broker} could not run: {e}")),
                Some(Ok(r)) => {
                    for s in r.steps.iter().filter(|s| s.failed > 0 || s.timed_out) {
                        self.notes.push(format!(
                            "idle connections on {broker}, step {}: {} failed{}",
                            thousands(s.connections as u64),
                            s.failed,
                            if s.timed_out { ", deadline reached" } else { "" }
                        ));
                    }
                    for e in &r.errors {
                        self.notes.push(format!("idle connections on {broker}: {e}"));
                    }
                }
                None => {}
            }
        }
    }
}

impl Results {
    /// Empty results for a run about to start.
    pub fn new(plan: Plan, command: String, machine: Machine, mosquitto: String) -> Results {
        Results {
            plan,
            command,
            machine,
            mosquitto,
            date: now_utc(),
            idle: Vec::new(),
            flows: Vec::new(),
            shadow: None,
        }
    }

    /// The section, markers included.
    pub fn markdown(&self) -> String {
        let p = &self.plan;
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "{BEGIN}");
        let _ = writeln!(out, "## MQTT broker: local cloud vs Mosquitto, MQTT 3.1.1 and MQTT 5\n");
        let _ = writeln!(out, "- Command: `{}`", self.command);
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(
            out,
            "- Machine: {}. The machine is shared: \
             other processes may have been running, and the clients run on the same {} cores as the broker.",
            m.summary(),
            m.nproc
        );
        let _ = writeln!(out, "- Mosquitto: {} (Debian package)", self.mosquitto);
        let _ = writeln!(
            out,
            "- Local cloud: `local-cloud serve`, release build, its own process (RSS and CPU read from /proc like Mosquitto's)"
        );
        let _ = writeln!(
            out,
            "- Both: MQTT 3.1.1 and MQTT 5 on the same port, over TLS on 127.0.0.1, client certificates (EC P-256) \
             required, session resumption off; QoS 1 with at most {} messages in flight per client; {}-byte payloads \
             carrying their send time; authorization on every message (local cloud: thing-scoped IoT policies with \
             policy variables; Mosquitto: an ACL file with the same rules). Clients: rumqttc (ring), its MQTT 3.1.1 \
             and its MQTT 5 client behind one flow, the same code for both brokers and both versions; each scenario \
             names the version its clients speak (mixed: publishers alternate 3.1.1 and 5, the subscriber speaks 5). \
             The shadow scenario and the idle connections use MQTT 3.1.1.",
            p.inflight, p.payload_len
        );
        let _ = writeln!(
            out,
            "- Counts: 1→1 {} messages; {}→1 {} per publisher; shadow {} updates; idle {} connections. \
             Latency is publish call → delivery, so it includes queueing in the client and the broker.",
            thousands(p.one_to_one.saturated_per_publisher),
            p.fan_in_publishers,
            thousands(p.fan_in.saturated_per_publisher),
            thousands(p.shadow.saturated_per_publisher),
            p.idle_steps.iter().map(|n| thousands(*n as u64)).collect::<Vec<_>>().join(" then ")
        );
        let _ = writeln!(out);

        let mut t = Table { text: String::new(), notes: Vec::new(), goals: Vec::new() };
        t.row(["scenario", "figure", "local cloud", "Mosquitto", "goal", "met"]);
        t.text.push_str("| --- | --- | ---: | ---: | --- | --- |\n");
        for (name, results) in &self.flows {
            t.flow(name, pick(results, Kind::LocalCloud), Some(pick(results, Kind::Mosquitto)), "msg");
        }
        t.flow("shadow update → delta", self.shadow.as_ref(), None, "update");
        t.idle(pick(&self.idle, Kind::LocalCloud), pick(&self.idle, Kind::Mosquitto), p);
        out.push_str(&t.text);

        let _ = writeln!(out, "\n### Goals\n");
        for (goal, verdict) in &t.goals {
            let v = match verdict {
                Verdict::Met => "met",
                Verdict::NotMet => "**not met**",
                Verdict::Unknown => "not judged",
            };
            let _ = writeln!(out, "- {goal}: {v}");
        }
        if !t.notes.is_empty() {
            let _ = writeln!(out, "\n### Notes from the run\n");
            for n in &t.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        let _ = writeln!(out, "{END}");
        out
    }
}

/// Puts `section` into the file at `path`, replacing the previous run's section and leaving the
/// rest of the file (other benchmarks' sections) as it was.
pub fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    Ok(bench_common::section::write_section(path, section, &Markers::new("broker-bench"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_the_shared_ones_for_broker_bench() {
        let m = Markers::new("broker-bench");
        assert_eq!((m.begin.as_str(), m.end.as_str()), (BEGIN, END));
    }

    #[test]
    fn command_line_reproduces_the_flags() {
        assert_eq!(command_line(false, None), "cargo run --release -p broker-bench --");
        assert_eq!(
            command_line(true, Some(Path::new("docs/benchmarks.md"))),
            "cargo run --release -p broker-bench -- --quick --out docs/benchmarks.md"
        );
    }

    fn phase(expected: u64, received: u64, throttled: u64) -> Phase {
        Phase {
            expected,
            sent: expected,
            received,
            throttled,
            rejected: 0,
            elapsed: Duration::from_secs(1),
            latency: None,
            broker_cpu: None,
            timed_out: false,
        }
    }

    #[test]
    fn shadow_requests_refused_with_429_are_shown_as_throttled_not_lost() {
        let mut r = Results::new(Plan::quick(), "cmd".into(), Machine::describe(), "not run: missing".into());
        r.shadow = Some(Ok(FlowResult {
            saturated: phase(20_000, 1_408, 18_560),
            windowed: phase(20_000, 19_009, 991),
            window: 1_000,
            paced: phase(1_000, 1_000, 0),
            paced_rate: 100,
            errors: Vec::new(),
        }));
        let md = r.markdown();
        let row = |label: &str| md.lines().skip_while(|l| !l.contains(label)).nth(3).unwrap_or_default().to_owned();
        assert_eq!(
            row("shadow update → delta, saturated"),
            "|  | throttled (429) / lost | 18,560 / 32 | n/a (no shadow service) |  |  |"
        );
        assert_eq!(
            row("shadow update → delta, end-to-end window"),
            "|  | throttled (429) / lost | 991 / 0 | n/a (no shadow service) |  |  |"
        );
        assert!(md.contains("| 1,408 (92.8% throttled) (0.2% lost) |"), "{md}");
        assert!(md.contains("saturated: 18,560 of 20,000 requests refused with 429"), "{md}");
        assert!(md.contains("saturated: 32 of 20,000 messages lost"), "{md}");
        assert!(!md.contains("end-to-end window: 991 of 20,000 messages lost"), "{md}");
    }

    #[test]
    fn report_without_mosquitto_says_so_and_judges_nothing_against_it() {
        let plan = Plan::quick();
        let machine = Machine::describe();
        let r = Results::new(plan, "cmd".into(), machine, "not run: missing".into());
        let md = r.markdown();
        assert!(md.starts_with(BEGIN));
        assert!(md.trim_end().ends_with(END));
        assert!(md.contains("not run"));
        assert!(!md.contains("| yes |"));
    }
}
