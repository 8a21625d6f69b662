//! The results as a Markdown section: printed, and with `--out` written into
//! `docs/benchmarks.md` between the `ipc-bench` markers (other sections are left as they are).

use std::fmt::Write as _;
use std::time::Duration;

use bench_common::format::{mib, thousands};
use bench_common::machine::Machine;
use bench_common::section::Markers;
use bench_common::stats::{Latency, latency};

use crate::plan::Plan;
use crate::wire::{PhaseSeen, PublisherResult, Ready, RttResult, SubscriberResult};

/// The command's name, which also names its markers.
pub const COMMAND: &str = "ipc-bench";
/// The core's memory goal with ten components, KiB.
const CORE_MEMORY_GOAL_KIB: u64 = 64 * 1024;

/// The markers of this command's section.
pub fn markers() -> Markers {
    Markers::new(COMMAND)
}

/// The command that reproduces a run.
pub fn command_line(quick: bool, out: Option<&std::path::Path>) -> String {
    let mut c = "cargo run --release -p ipc-bench --".to_owned();
    if quick {
        c.push_str(" --quick");
    }
    if let Some(out) = out {
        let _ = write!(c, " --out {}", out.display());
    }
    c
}

/// A process's memory at one moment, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_kib: Option<u64>,
    /// `VmHWM`: the peak so far.
    pub hwm_kib: Option<u64>,
}

impl From<&Ready> for Memory {
    fn from(r: &Ready) -> Memory {
        Memory { rss_kib: r.rss_kib, hwm_kib: r.hwm_kib }
    }
}

/// A figure, or why there is none.
pub type Outcome<T> = Result<T, String>;

/// Everything one run measured; a scenario that failed holds its error.
#[derive(Debug)]
pub struct Results {
    /// The command line.
    pub command: String,
    /// When the run started.
    pub date: String,
    /// The machine, described at the start.
    pub machine: Machine,
    /// The counts.
    pub plan: Plan,
    /// Versions of Python and awsiotsdk, or why Python was not run.
    pub python: String,
    /// Round trips with the Rust client.
    pub rtt_rust: Outcome<RttResult>,
    /// Round trips with the Python client.
    pub rtt_python: Outcome<RttResult>,
    /// Local pub/sub.
    pub pubsub: Outcome<(PublisherResult, SubscriberResult)>,
    /// The core with one idle component.
    pub core_one: Outcome<Memory>,
    /// The core with `plan.idle_components` idle components.
    pub core_many: Outcome<Memory>,
    /// The benchmark core once its components are connected, before measuring.
    pub core_bench_ready: Outcome<Memory>,
    /// The benchmark core after every scenario.
    pub core_bench_after: Outcome<Memory>,
    /// An idle Rust component (connected, subscribed).
    pub rust_idle: Outcome<Memory>,
    /// The Rust round-trip component, connected.
    pub rust_rtt_ready: Outcome<Memory>,
    /// The Python round-trip component, connected.
    pub python_rtt_ready: Outcome<Memory>,
    /// Anything else worth saying about the run.
    pub notes: Vec<String>,
}

/// `d` in milliseconds with three significant-ish digits.
fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}

fn cell<T>(r: &Outcome<T>, f: impl Fn(&T) -> Option<String>) -> String {
    match r {
        Err(e) if e.starts_with("not run") => e.clone(),
        Err(_) => "error (see notes)".into(),
        Ok(t) => f(t).unwrap_or_else(|| "–".into()),
    }
}

fn p50_p99(l: &Latency) -> String {
    format!("{} / {}", ms(l.p50), ms(l.p99))
}

fn rtt_latency(r: &RttResult, op: &str) -> Option<Latency> {
    latency(r.calls.get(op)?.clone())
}

fn calls_per_second(r: &RttResult, op: &str) -> Option<String> {
    let n = r.calls.get(op)?.len() as f64;
    let secs = *r.elapsed_ns.get(op)? as f64 / 1e9;
    (secs > 0.0).then(|| thousands((n / secs).round() as u64))
}

/// One figure of a round-trip result.
type RttFigure<'a> = dyn Fn(&RttResult) -> Option<String> + 'a;

/// A goal's verdict: `Some(true)` met, `Some(false)` not met, `None` not judged.
type Verdict = Option<bool>;

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not judged (a figure is missing)",
    }
}

fn phase_label(plan: &Plan, i: usize) -> String {
    match i {
        0 => format!("end-to-end window {}", thousands(plan.window)),
        1 => format!("paced {} msg/s", thousands(plan.paced_rate)),
        _ => "saturated (32 calls in flight, no window)".into(),
    }
}

fn delivered(p: &PhaseSeen) -> String {
    let mut s = format!("{} / {}", thousands(p.received), thousands(p.sent));
    if p.received < p.sent {
        let lost = (p.sent - p.received) as f64 * 100.0 / p.sent.max(1) as f64;
        let _ = write!(s, " ({lost:.1}% lost)");
    }
    s
}

impl Results {
    /// Results with nothing measured yet, for a run starting now.
    pub fn new(command: String, machine: Machine, plan: Plan) -> Results {
        fn none<T>() -> Outcome<T> {
            Err("not run".to_owned())
        }
        Results {
            command,
            date: bench_common::format::now_utc(),
            machine,
            plan,
            python: "not run".into(),
            rtt_rust: none(),
            rtt_python: none(),
            pubsub: none(),
            core_one: none(),
            core_many: none(),
            core_bench_ready: none(),
            core_bench_after: none(),
            rust_idle: none(),
            rust_rtt_ready: none(),
            python_rtt_ready: none(),
            notes: Vec::new(),
        }
    }

    fn rtt_table(&self, out: &mut String, notes: &mut Vec<String>) {
        let _ = writeln!(
            out,
            "| operation | figure | Rust `kit::ipc::IpcClient` | Python `awsiot.greengrasscoreipc.clientv2` |"
        );
        out.push_str("| --- | --- | ---: | ---: |\n");
        for op in ["GetConfiguration", "PublishToTopic"] {
            let lat = |r: &RttResult| rtt_latency(r, op);
            let rows: [(&str, &RttFigure); 3] = [
                ("round trip p50 / p99, ms", &|r| lat(r).map(|l| p50_p99(&l))),
                ("round trip mean, ms", &|r| lat(r).map(|l| ms(l.mean))),
                ("calls per second (one caller, sequential)", &|r| calls_per_second(r, op)),
            ];
            for (i, (figure, f)) in rows.iter().enumerate() {
                let name = if i == 0 { op } else { "" };
                let _ = writeln!(
                    out,
                    "| {name} | {figure} | {} | {} |",
                    cell(&self.rtt_rust, f),
                    cell(&self.rtt_python, f)
                );
            }
        }
        for (client, r) in [("Rust", &self.rtt_rust), ("Python", &self.rtt_python)] {
            match r {
                Ok(r) => {
                    for (op, e) in &r.errors {
                        notes.push(format!("{client} {op}: {e}"));
                    }
                }
                Err(e) if e.starts_with("not run") => {}
                Err(e) => notes.push(format!("{client} round trips could not run: {e}")),
            }
        }
    }

    fn pubsub_table(&self, out: &mut String, notes: &mut Vec<String>) {
        out.push_str("| phase | throughput, msg/s | delivered / published | latency p50 / p99, ms |\n");
        out.push_str("| --- | ---: | ---: | ---: |\n");
        let phases: &[PhaseSeen] = match &self.pubsub {
            Ok((_, s)) => &s.phases,
            Err(_) => &[],
        };
        for i in 0..3 {
            let phase = phases.iter().find(|p| p.phase == i as u32);
            let label = phase_label(&self.plan, i);
            let (tp, del, lat) = match (&self.pubsub, phase) {
                (Err(e), _) => {
                    let c = cell::<()>(&Err(e.clone()), |_| None);
                    (c.clone(), c.clone(), c)
                }
                (Ok(_), None) => ("–".into(), "–".into(), "–".into()),
                (Ok(_), Some(p)) => {
                    let tp = if i == 1 {
                        "(paced)".to_owned()
                    } else {
                        p.throughput().map(|t| thousands(t.round() as u64)).unwrap_or_else(|| "–".into())
                    };
                    let lat = latency(p.latencies_ns.clone()).map(|l| p50_p99(&l)).unwrap_or_else(|| "–".into());
                    (tp, delivered(p), lat)
                }
            };
            let _ = writeln!(out, "| {label} | {tp} | {del} | {lat} |");
        }
        match &self.pubsub {
            Ok((publisher, subscriber)) => {
                for (i, (failed, error)) in publisher.failed.iter().enumerate() {
                    if *failed > 0 || error.is_some() {
                        notes.push(format!(
                            "pub/sub {}: {} publish calls failed{}",
                            phase_label(&self.plan, i),
                            thousands(*failed),
                            error.as_deref().map(|e| format!("; {e}")).unwrap_or_default()
                        ));
                    }
                }
                for p in subscriber.phases.iter().filter(|p| p.duplicates > 0) {
                    notes.push(format!("pub/sub phase {}: {} duplicates", p.phase, p.duplicates));
                }
                if subscriber.late > 0 || subscriber.malformed > 0 {
                    notes.push(format!(
                        "pub/sub: {} messages arrived after their phase was closed, {} were not benchmark messages",
                        subscriber.late, subscriber.malformed
                    ));
                }
            }
            Err(e) if e.starts_with("not run") => {}
            Err(e) => notes.push(format!("pub/sub could not run: {e}")),
        }
    }

    fn memory_table(&self, out: &mut String, notes: &mut Vec<String>) {
        let p = &self.plan;
        out.push_str("| process | state | VmRSS, MiB | VmHWM (peak), MiB |\n");
        out.push_str("| --- | --- | ---: | ---: |\n");
        let rtt_mem = |r: &Outcome<RttResult>| {
            r.as_ref().map(|r| Memory { rss_kib: r.rss_kib, hwm_kib: r.hwm_kib }).map_err(Clone::clone)
        };
        let after = format!("after {} round trips of each operation", thousands(p.rtt_calls + p.rtt_warmup));
        let rows: Vec<(&str, String, Outcome<Memory>)> = vec![
            ("simulated core", "1 idle component".into(), self.core_one.clone()),
            ("simulated core", format!("{} idle components", p.idle_components), self.core_many.clone()),
            (
                "simulated core",
                "4 benchmark components connected, before measuring".into(),
                self.core_bench_ready.clone(),
            ),
            ("simulated core", "after the round trips and pub/sub".into(), self.core_bench_after.clone()),
            ("Rust component (`kit::ipc`)", "idle: connected, subscribed".into(), self.rust_idle.clone()),
            ("Rust component (`kit::ipc`)", "round-trip component, connected".into(), self.rust_rtt_ready.clone()),
            ("Rust component (`kit::ipc`)", format!("round-trip component, {after}"), rtt_mem(&self.rtt_rust)),
            ("Python component (`clientv2`)", "round-trip component, connected".into(), self.python_rtt_ready.clone()),
            ("Python component (`clientv2`)", format!("round-trip component, {after}"), rtt_mem(&self.rtt_python)),
        ];
        for (process, state, m) in &rows {
            let _ = writeln!(
                out,
                "| {process} | {state} | {} | {} |",
                cell(m, |m| m.rss_kib.map(mib)),
                cell(m, |m| m.hwm_kib.map(mib))
            );
            if let Err(e) = m
                && !e.starts_with("not run")
            {
                notes.push(format!("{process}, {state}: {e}"));
            }
        }
    }

    fn goals(&self) -> Vec<(String, Verdict)> {
        let p50 =
            |r: &Outcome<RttResult>| r.as_ref().ok().and_then(|r| rtt_latency(r, "GetConfiguration")).map(|l| l.p50);
        let rtt = p50(&self.rtt_rust).zip(p50(&self.rtt_python)).map(|(r, py)| r <= py);
        let windowed = self
            .pubsub
            .as_ref()
            .ok()
            .and_then(|(_, s)| s.phases.iter().find(|p| p.phase == 0))
            .map(|p| p.sent > 0 && p.received >= p.sent && p.sent == self.plan.window_count);
        let core = self.core_many.as_ref().ok().and_then(|m| m.rss_kib).map(|k| k < CORE_MEMORY_GOAL_KIB);
        vec![
            ("GetConfiguration p50 round trip of our Rust client no slower than AWS's Python client".into(), rtt),
            ("local pub/sub with an end-to-end window: every message delivered".into(), windowed),
            (
                format!(
                    "simulated core with {} running components under {} MiB RSS",
                    self.plan.idle_components,
                    CORE_MEMORY_GOAL_KIB / 1024
                ),
                core,
            ),
        ]
    }

    /// The section, markers included.
    pub fn markdown(&self) -> String {
        let p = &self.plan;
        let m = markers();
        let mut out = String::new();
        let mut notes = self.notes.clone();
        let _ = writeln!(out, "{}", m.begin);
        let _ = writeln!(out, "## Greengrass IPC: simulated core, Rust `kit::ipc` vs AWS's Python client\n");
        let _ = writeln!(out, "- Command: `{}` (needs `cargo build --release -p device-sim` first)", self.command);
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(
            out,
            "- Machine: {}. The machine is shared and noisy: other processes may have been running, and the core, \
             its components and the driver all run on these {} cores.",
            self.machine.summary(),
            self.machine.nproc
        );
        let _ = writeln!(
            out,
            "- Core: `device-sim core`, release build, its own process (memory read from `/proc/<pid>/status`); \
             every measuring client is a component it starts from a recipe (its own `SVCUID`, the IPC socket, \
             accessControl checked on every call), Rust components from the release build of `ipc-bench-component`."
        );
        let _ = writeln!(out, "- Python: {}", self.python);
        let _ = writeln!(
            out,
            "- Round trips: {} sequential calls per operation and client after {} warm-up calls, one caller, \
             both clients against the same core process one after the other (Rust first); GetConfiguration reads \
             a small object of the component's own configuration; PublishToTopic sends a small JSON message to \
             a topic nobody subscribes to.",
            thousands(p.rtt_calls),
            thousands(p.rtt_warmup)
        );
        let _ = writeln!(
            out,
            "- Pub/sub: one Rust publisher component → one Rust subscriber component, {}-byte JSON messages \
             carrying their send time (CLOCK_MONOTONIC, the same clock in both processes); in the first two \
             phases the publisher awaits each PublishToTopic response. Phases: {} messages with at most {} published and not yet \
             acknowledged by the subscriber; {} messages at {} msg/s; {} messages with 32 publish calls in flight \
             and no window (the one phase that can outrun the subscriber).",
            p.payload_size,
            thousands(p.window_count),
            thousands(p.window),
            thousands(p.paced_count),
            thousands(p.paced_rate),
            thousands(p.saturated_count)
        );
        if p.quick {
            let _ = writeln!(out, "- **Quick run**: small counts, the figures only show that every path works.");
        }
        let _ = writeln!(out, "\n### Request round trip\n");
        self.rtt_table(&mut out, &mut notes);
        let _ = writeln!(out, "\n### Local pub/sub (Rust → Rust)\n");
        self.pubsub_table(&mut out, &mut notes);
        let _ = writeln!(out, "\n### Memory\n");
        self.memory_table(&mut out, &mut notes);
        let _ = writeln!(out, "\n### Goals\n");
        for (goal, v) in self.goals() {
            let _ = writeln!(out, "- {goal}: {}", verdict_text(v));
        }
        let _ = writeln!(out, "\n### How to read these figures\n");
        for line in [
            "A round trip is one request → response over the Unix socket, including JSON encoding and decoding in \
             the client, the core's authorization and the event-stream framing; a component that awaits each call \
             makes at most the calls per second shown.",
            "AWS's Python client speaks the event-stream protocol in C (awscrt) on its own event-loop thread; a \
             call goes from Python to that thread and back through a future, which is what a Python component \
             pays on top of the core's work. Both clients meet the same core, so the difference is the client's.",
            "The p99 of a few thousand calls on a shared 2-core machine is mostly other processes' scheduling: \
             compare p50 and mean, and the columns of one run rather than runs.",
            "Pub/sub throughput is delivered messages per second from the first publish to the last delivery. The \
             core gives each subscription a queue of 1,024 messages and drops the newest for that subscription when \
             it is full (a flooding publisher does not stall others), so the saturated phase may lose messages; the \
             windowed phase shows the rate sustained without loss.",
            "Latency of the paced phase is what a lightly loaded core adds between two components; in the unpaced \
             phases it includes queueing.",
            "VmRSS is resident memory at that moment, VmHWM the peak since the process started. A component's \
             figures are its own process; the core's do not include its components.",
        ] {
            let _ = writeln!(out, "- {line}");
        }
        if !notes.is_empty() {
            let _ = writeln!(out, "\n### Notes from the run\n");
            for n in &notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        let _ = writeln!(out, "{}", m.end);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn machine() -> Machine {
        Machine {
            nproc: 2,
            cpu_model: "Test CPU".into(),
            mem_total_kib: 1 << 20,
            kernel: "6.1".into(),
            loadavg_at_start: "0.1".into(),
        }
    }

    fn rtt(client: &str, get_config_ns: Vec<u64>) -> RttResult {
        let n = get_config_ns.len() as u64;
        RttResult {
            client: client.into(),
            calls: BTreeMap::from([("GetConfiguration".into(), get_config_ns), ("PublishToTopic".into(), vec![1])]),
            elapsed_ns: BTreeMap::from([("GetConfiguration".into(), n * 1_000_000), ("PublishToTopic".into(), 1)]),
            rss_kib: Some(2048),
            hwm_kib: Some(4096),
            errors: BTreeMap::new(),
        }
    }

    fn phase(phase: u32, sent: u64, received: u64) -> PhaseSeen {
        PhaseSeen {
            phase,
            sent,
            received,
            duplicates: 0,
            latencies_ns: vec![100_000; received as usize],
            first_sent_ns: Some(0),
            last_received_ns: Some(1_000_000_000),
        }
    }

    #[test]
    fn section_is_marked_and_replaceable() {
        let r = Results::new("cmd".into(), machine(), Plan::quick());
        let md = r.markdown();
        let m = markers();
        assert!(md.starts_with(&m.begin));
        assert!(md.trim_end().ends_with(&m.end));
        assert!(md.contains("**Quick run**"));
        let doc = format!("# B\n\n{md}");
        assert_eq!(bench_common::section::splice(&doc, &md, &m).unwrap(), doc);
    }

    #[test]
    fn nothing_measured_reads_not_run_and_judges_nothing() {
        let md = Results::new("cmd".into(), machine(), Plan::full()).markdown();
        assert!(md.contains("| not run | not run |"), "{md}");
        assert!(!md.contains(": met\n") && !md.contains("**not met**"), "{md}");
    }

    #[test]
    fn figures_land_in_their_cells_and_goals_are_judged() {
        let mut r = Results::new("cmd".into(), machine(), Plan::quick());
        // Rust: 1 ms each; Python: 2 ms each.
        r.rtt_rust = Ok(rtt("rust", vec![1_000_000; 10]));
        r.rtt_python = Ok(rtt("python", vec![2_000_000; 10]));
        let w = Plan::quick().window_count;
        let sub = SubscriberResult {
            phases: vec![phase(0, w, w), phase(1, 200, 200), phase(2, 1000, 900)],
            late: 0,
            malformed: 0,
        };
        let publisher = PublisherResult { sent: vec![w, 200, 1000], failed: vec![(0, None); 3] };
        r.pubsub = Ok((publisher, sub));
        r.core_many = Ok(Memory { rss_kib: Some(20 * 1024), hwm_kib: Some(30 * 1024) });
        let md = r.markdown();
        assert!(md.contains("| GetConfiguration | round trip p50 / p99, ms | 1.00 / 1.00 | 2.00 / 2.00 |"), "{md}");
        assert!(md.contains("| calls per second (one caller, sequential) | 1,000 | 1,000 |"), "{md}");
        assert!(
            md.contains(&format!(
                "| end-to-end window 256 | {} | {} / {} | 0.100 / 0.100 |",
                thousands(w),
                thousands(w),
                thousands(w)
            )),
            "{md}"
        );
        assert!(md.contains("| saturated (32 calls in flight, no window) | 900 | 900 / 1,000 (10.0% lost) |"), "{md}");
        assert!(md.contains("| simulated core | 10 idle components | 20.0 | 30.0 |"), "{md}");
        assert!(md.contains("no slower than AWS's Python client: met"), "{md}");
        assert!(md.contains("every message delivered: met"), "{md}");
        assert!(md.contains("under 64 MiB RSS: met"), "{md}");
    }

    #[test]
    fn a_lost_windowed_message_or_a_slower_client_fails_its_goal_and_errors_become_notes() {
        let mut r = Results::new("cmd".into(), machine(), Plan::quick());
        r.rtt_rust = Ok(rtt("rust", vec![3_000_000; 10]));
        r.rtt_python = Ok(rtt("python", vec![2_000_000; 10]));
        let w = Plan::quick().window_count;
        let sub = SubscriberResult { phases: vec![phase(0, w, w - 1)], late: 0, malformed: 0 };
        r.pubsub = Ok((PublisherResult { sent: vec![w], failed: vec![(0, None)] }, sub));
        r.core_one = Err("the core exited: status 78".into());
        let md = r.markdown();
        assert!(md.contains("no slower than AWS's Python client: **not met**"), "{md}");
        assert!(md.contains("every message delivered: **not met**"), "{md}");
        assert!(md.contains("| simulated core | 1 idle component | error (see notes) |"), "{md}");
        assert!(md.contains("- simulated core, 1 idle component: the core exited: status 78"), "{md}");
    }

    #[test]
    fn command_line_reproduces_the_flags() {
        assert_eq!(command_line(false, None), "cargo run --release -p ipc-bench --");
        assert_eq!(
            command_line(true, Some(std::path::Path::new("docs/benchmarks.md"))),
            "cargo run --release -p ipc-bench -- --quick --out docs/benchmarks.md"
        );
    }

    #[test]
    fn milliseconds_keep_three_digits() {
        assert_eq!(ms(Duration::from_micros(123)), "0.123");
        assert_eq!(ms(Duration::from_micros(1_234)), "1.23");
        assert_eq!(ms(Duration::from_micros(12_345)), "12.3");
    }
}
