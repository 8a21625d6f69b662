//! The edge footprint of a run: for the simulated core and each component process, the binary's
//! stripped size, resident memory (VmRSS at the end, VmHWM the peak) and CPU seconds, read from
//! `/proc` while the site runs.
//!
//! The components are found without asking the core: every descendant of this process whose
//! first argument names a component's artifact (`…/pump-sensor`) is that component, so a
//! recipe's `exec` or a shell in between makes no difference. The simulated core runs inside
//! this process, which also hosts the local cloud, the plant and the observer: its figures are
//! an upper bound for the core.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bench_common::binary::{self, BinarySize};
use bench_common::machine;
use serde::Serialize;

/// The name the core goes by in the figures.
pub const CORE: &str = "simulated core";

/// What the footprint goals are: the largest stripped binary in bytes and the largest peak
/// resident set in KiB of each component, and of the three together.
pub const GOALS: &[(&str, u64, u64)] = &[
    (pump_types::SENSOR_COMPONENT, 6_000_000, 8 * 1024),
    (pump_types::ANALYZER_COMPONENT, 10_000_000, 15 * 1024),
    (pump_types::CONTROLLER_COMPONENT, 6_000_000, 8 * 1024),
];

/// The most the three components may hold resident together (sum of their peaks), KiB.
pub const TOGETHER_GOAL_KIB: u64 = 25 * 1024;

/// One process's figures over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessFootprint {
    /// [`CORE`] or the component's name.
    pub name: String,
    /// The executable that ran (`/proc/{pid}/exe`).
    pub executable: String,
    /// Whether that executable is the component's own binary, rather than the demo's
    /// multi-call executable staged under the component's artifact name.
    pub own_binary: bool,
    /// Its size.
    pub binary_file_bytes: Option<u64>,
    /// Its size stripped of symbols and debug information.
    pub binary_stripped_bytes: Option<u64>,
    /// The process ids seen, in order (more than one when the core restarted the component).
    pub pids: Vec<u32>,
    /// VmRSS at the last sample of the last pid, KiB.
    pub vm_rss_kib: Option<u64>,
    /// The largest VmHWM of any of its pids, KiB.
    pub vm_hwm_kib: Option<u64>,
    /// CPU time (user + system) of all its pids, seconds.
    pub cpu_seconds: f64,
}

/// The footprint of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Footprint {
    /// The core first, then the components in deployment order.
    pub processes: Vec<ProcessFootprint>,
    /// How often `/proc` was read.
    pub sample_period_ms: u64,
    /// Samples taken.
    pub samples: u64,
}

/// What one sample saw of one pid.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PidFigures {
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
    cpu_ticks: u64,
}

#[derive(Debug, Default)]
struct Watch {
    name: String,
    executable: String,
    size: Option<BinarySize>,
    /// By pid in the order first seen.
    pids: Vec<(u32, PidFigures)>,
}

impl Watch {
    fn record(&mut self, pid: u32, f: PidFigures) {
        if self.size.is_none()
            && let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe"))
        {
            self.size = binary::size(&exe).ok();
            self.executable = exe.display().to_string();
        }
        match self.pids.iter_mut().find(|(p, _)| *p == pid) {
            // A process that exited between two reads of /proc keeps its last figures.
            Some((_, last)) => {
                *last = PidFigures {
                    rss_kib: f.rss_kib.or(last.rss_kib),
                    hwm_kib: f.hwm_kib.max(last.hwm_kib),
                    cpu_ticks: f.cpu_ticks.max(last.cpu_ticks),
                }
            }
            None => self.pids.push((pid, f)),
        }
    }

    fn figures(&self, own_binary: bool) -> ProcessFootprint {
        let (rss, hwm, ticks) = summarize(&self.pids);
        ProcessFootprint {
            name: self.name.clone(),
            executable: self.executable.clone(),
            own_binary,
            binary_file_bytes: self.size.map(|s| s.file_bytes),
            binary_stripped_bytes: self.size.map(|s| s.stripped_bytes),
            pids: self.pids.iter().map(|(p, _)| *p).collect(),
            vm_rss_kib: rss,
            vm_hwm_kib: hwm,
            cpu_seconds: ticks as f64 / machine::TICKS_PER_SECOND,
        }
    }
}

/// VmRSS of the last pid, the largest VmHWM, and the CPU ticks of all pids together.
fn summarize(pids: &[(u32, PidFigures)]) -> (Option<u64>, Option<u64>, u64) {
    let rss = pids.last().and_then(|(_, f)| f.rss_kib);
    let hwm = pids.iter().filter_map(|(_, f)| f.hwm_kib).max();
    (rss, hwm, pids.iter().map(|(_, f)| f.cpu_ticks).sum())
}

fn read(pid: u32) -> Option<PidFigures> {
    let (rss_kib, hwm_kib) = machine::rss_and_hwm_kib(pid);
    Some(PidFigures { rss_kib, hwm_kib, cpu_ticks: machine::cpu_ticks(pid)? })
}

#[derive(Debug, Default)]
struct State {
    core: Watch,
    /// By artifact name.
    components: Vec<(String, Watch)>,
    samples: u64,
}

impl State {
    fn sample(&mut self) {
        let me = std::process::id();
        if let Some(f) = read(me) {
            self.core.record(me, f);
        }
        for pid in machine::descendants(me) {
            let Some(argv0) = machine::cmdline(pid).into_iter().next() else { continue };
            let file = Path::new(&argv0).file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if let Some((_, watch)) = self.components.iter_mut().find(|(artifact, _)| artifact == file)
                && let Some(f) = read(pid)
            {
                watch.record(pid, f);
            }
        }
        self.samples += 1;
    }
}

/// Reads `/proc` every period until [`Sampler::finish`].
pub struct Sampler {
    state: Arc<Mutex<State>>,
    period: Duration,
    own_binaries: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling this process and the components, given as (name, artifact file name);
    /// `own_binaries` says whether the components run their own binaries.
    pub fn start(components: &[(&str, &str)], own_binaries: bool, period: Duration) -> Sampler {
        let state = State {
            core: Watch { name: CORE.into(), ..Watch::default() },
            components: components
                .iter()
                .map(|(name, artifact)| ((*artifact).to_owned(), Watch { name: (*name).into(), ..Watch::default() }))
                .collect(),
            samples: 0,
        };
        let state = Arc::new(Mutex::new(state));
        let s = state.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            loop {
                every.tick().await;
                let s = s.clone();
                // /proc reads are blocking file reads.
                let _ = tokio::task::spawn_blocking(move || s.lock().unwrap_or_else(|e| e.into_inner()).sample()).await;
            }
        });
        Sampler { state, period, own_binaries, task }
    }

    /// Takes a last sample (call it while the components still run) and stops.
    pub fn finish(self) -> Footprint {
        self.task.abort();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.sample();
        let mut processes = vec![state.core.figures(true)];
        processes.extend(state.components.iter().map(|(_, w)| w.figures(self.own_binaries)));
        Footprint { processes, sample_period_ms: self.period.as_millis() as u64, samples: state.samples }
    }
}

/// One goal and whether the run met it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Goal {
    /// What it asks.
    pub goal: String,
    /// `Some(met)`, or `None` when the run could not tell (a figure missing, or the component
    /// ran the multi-call executable so its binary is not its own).
    pub met: Option<bool>,
}

impl Footprint {
    /// The figures of one process by name.
    pub fn process(&self, name: &str) -> Option<&ProcessFootprint> {
        self.processes.iter().find(|p| p.name == name)
    }

    /// The components' peak resident sets added up, KiB; `None` when one is missing.
    pub fn components_hwm_kib(&self) -> Option<u64> {
        GOALS.iter().map(|(name, _, _)| self.process(name)?.vm_hwm_kib).sum()
    }

    /// The goals, each met or not.
    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for (name, max_bytes, max_kib) in GOALS {
            let p = self.process(name);
            let own = p.filter(|p| p.own_binary);
            goals.push(Goal {
                goal: format!("{name}: stripped binary under {} MB", max_bytes / 1_000_000),
                met: own.and_then(|p| p.binary_stripped_bytes).map(|b| b < *max_bytes),
            });
            goals.push(Goal {
                goal: format!("{name}: peak RSS (VmHWM) under {} MiB", max_kib / 1024),
                met: p.and_then(|p| p.vm_hwm_kib).map(|k| k < *max_kib),
            });
        }
        goals.push(Goal {
            goal: format!("the three components together: peak RSS under {} MiB", TOGETHER_GOAL_KIB / 1024),
            met: self.components_hwm_kib().map(|k| k < TOGETHER_GOAL_KIB),
        });
        goals
    }

    /// The figures as a Markdown table with its goals, for the report and the benchmark.
    pub fn markdown(&self) -> String {
        let mb = |b: Option<u64>| b.map_or("–".into(), |b| format!("{:.1}", b as f64 / 1e6));
        let mib = |k: Option<u64>| k.map_or("–".into(), bench_common::format::mib);
        let mut s = String::from(
            "| process | binary, MB stripped (file) | VmRSS at the end, MiB | VmHWM (peak), MiB | CPU, s | pids |\n| --- | ---: | ---: | ---: | ---: | --- |\n",
        );
        for p in &self.processes {
            let which = if p.name == CORE {
                " (the demo's process: the core with the local cloud, plant and observer)"
            } else if p.own_binary {
                ""
            } else {
                " (ran the demo's multi-call executable)"
            };
            let pids: Vec<String> = p.pids.iter().map(u32::to_string).collect();
            s.push_str(&format!(
                "| {}{which} | {} ({}) | {} | {} | {:.2} | {} |\n",
                p.name,
                mb(p.binary_stripped_bytes),
                mb(p.binary_file_bytes),
                mib(p.vm_rss_kib),
                mib(p.vm_hwm_kib),
                p.cpu_seconds,
                if pids.is_empty() { "not seen".into() } else { pids.join(", ") }
            ));
        }
        s.push_str(&format!(
            "| the three components together | | {} | {} | {:.2} | |\n",
            mib(GOALS.iter().map(|(n, _, _)| self.process(n)?.vm_rss_kib).sum()),
            mib(self.components_hwm_kib()),
            GOALS.iter().filter_map(|(n, _, _)| self.process(n)).map(|p| p.cpu_seconds).sum::<f64>()
        ));
        s.push_str(&format!(
            "\nRead from `/proc` every {} ms ({} samples) and once more before the core stopped. \
             MB = 10^6 bytes, MiB = 2^20 bytes.\n\nGoals:\n\n",
            self.sample_period_ms, self.samples
        ));
        for g in self.goals() {
            let met = match g.met {
                Some(true) => "met",
                Some(false) => "**not met**",
                None => "not measured in this run",
            };
            s.push_str(&format!("- {}: {met}\n", g.goal));
        }
        s
    }
}

/// `pump-station footprint` flags: the demo's, and where the section goes.
#[derive(Debug, clap::Args)]
pub struct FootprintArgs {
    /// The demo's options; `--component-bins` is required here.
    #[command(flatten)]
    pub demo: crate::demo::DemoArgs,
    /// The Markdown file whose section between the `pump-station-footprint` markers is replaced
    /// (created if missing); without it the section is only printed.
    #[arg(long)]
    pub benchmarks: Option<std::path::PathBuf>,
}

/// The markers of the section this command writes.
pub fn markers() -> bench_common::section::Markers {
    bench_common::section::Markers::new("pump-station-footprint")
}

/// Runs the benchmark: builds nothing, runs the demo with the components' binaries from
/// `--component-bins`, and writes the section when every step held.
pub fn main(args: FootprintArgs) -> std::process::ExitCode {
    if args.demo.component_bins.is_none() {
        eprintln!(
            "pump-station footprint: --component-bins DIR is required: the directory with pump-sensor, pump-analyzer and pump-controller (for example `cargo build --profile edge -p pump-sensor -p pump-analyzer -p pump-controller`, then --component-bins target/edge)"
        );
        return std::process::ExitCode::from(2);
    }
    let machine = bench_common::machine::Machine::describe();
    let result = crate::demo::execute(args.demo);
    if let Ok(report) = &result
        && report.passed
        && let Some(fp) = &report.footprint
    {
        // The command as run, with the build of this executable (the core's) that ran it.
        let profile = if cfg!(debug_assertions) { "" } else { " --release" };
        let rest: Vec<String> = std::env::args().skip(1).collect();
        let command = format!("cargo run{profile} -- {}", rest.join(" "));
        let section = section(fp, &command, &bench_common::format::now_utc(), &machine.summary());
        match &args.benchmarks {
            Some(path) => {
                if let Err(e) = bench_common::section::write_section(path, &section, &markers()) {
                    eprintln!("pump-station footprint: {e}");
                    return std::process::ExitCode::FAILURE;
                }
                eprintln!("footprint: {}", path.display());
            }
            None => println!("{section}"),
        }
    }
    crate::demo::exit_code(&result)
}

/// The "Edge footprint" section of `docs/benchmarks.md`, between its markers.
pub fn section(fp: &Footprint, command: &str, date: &str, machine: &str) -> String {
    let m = markers();
    format!(
        "{}\n## Edge footprint: the simulated core and the components over a demo run\n\n\
         - Command: `{command}` (builds nothing: build the component binaries first)\n\
         - Date: {date}\n\
         - Machine: {machine}. The machine is shared: other processes may have been running.\n\
         - Run: the whole demo (`pump-station demo`'s default scenario) with each component running its own binary from the directory given, staged as its artifact; the core's figures are the demo's process, which also runs the local cloud, the plant and the cloud-side observer.\n\n\
         {}\n\
         ### How to read these figures\n\n\
         - Binary size is the file's size less its symbol table and debug sections (what `strip` removes), read from the ELF section headers; the file's own size is in parentheses.\n\
         - VmRSS is resident memory at the last sample, VmHWM the peak since the process started; a component restarted by the core shows every pid, the largest peak and the CPU time of all of them.\n\
         - CPU is user + system time from `/proc/{{pid}}/stat` until the last sample, for a run of about two minutes with the demo's faster periods (the sensor polls every 250 ms).\n\
         - The components together: their VmRSS and VmHWM added up; shared library pages count in each.\n\
         {}\n",
        m.begin,
        fp.markdown(),
        m.end
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(rss: u64, hwm: u64, ticks: u64) -> PidFigures {
        PidFigures { rss_kib: Some(rss), hwm_kib: Some(hwm), cpu_ticks: ticks }
    }

    #[test]
    fn a_restarted_component_adds_its_cpu_keeps_the_highest_peak_and_the_last_rss() {
        let mut w = Watch::default();
        w.record(10, f(5000, 6000, 30));
        w.record(10, f(4000, 6500, 50));
        // Exited: the next read finds no memory lines; the last figures stay.
        w.record(10, PidFigures { rss_kib: None, hwm_kib: None, cpu_ticks: 0 });
        w.record(11, f(3000, 3500, 20));
        let p = w.figures(true);
        assert_eq!(p.pids, vec![10, 11]);
        assert_eq!((p.vm_rss_kib, p.vm_hwm_kib), (Some(3000), Some(6500)));
        assert!((p.cpu_seconds - 0.7).abs() < 1e-9, "{}", p.cpu_seconds);
    }

    fn process(name: &str, own: bool, stripped: u64, hwm_mib: u64) -> ProcessFootprint {
        ProcessFootprint {
            name: name.into(),
            own_binary: own,
            binary_stripped_bytes: Some(stripped),
            vm_hwm_kib: Some(hwm_mib * 1024),
            vm_rss_kib: Some(hwm_mib * 1024),
            pids: vec![1],
            ..Default::default()
        }
    }

    #[test]
    fn goals_are_met_below_each_limit_and_not_at_it() {
        let fp = Footprint {
            processes: vec![
                process(pump_types::SENSOR_COMPONENT, true, 5_999_999, 7),
                process(pump_types::ANALYZER_COMPONENT, true, 10_000_000, 14),
                process(pump_types::CONTROLLER_COMPONENT, true, 3_000_000, 8),
            ],
            ..Default::default()
        };
        let met: Vec<Option<bool>> = fp.goals().iter().map(|g| g.met).collect();
        assert_eq!(met, [Some(true), Some(true), Some(false), Some(true), Some(true), Some(false), Some(false)]);
        assert_eq!(fp.components_hwm_kib(), Some(29 * 1024));
        let md = fp.markdown();
        assert!(md.contains("| the three components together | | 29.0 | 29.0 |"), "{md}");
        assert!(md.contains("com.example.pump.Analyzer: stripped binary under 10 MB: **not met**"), "{md}");
    }

    #[test]
    fn the_multi_call_executable_is_not_judged_as_a_components_binary() {
        let fp =
            Footprint { processes: vec![process(pump_types::SENSOR_COMPONENT, false, 1_000, 1)], ..Default::default() };
        let goals = fp.goals();
        assert_eq!(goals[0].met, None, "{goals:?}");
        assert_eq!(goals[1].met, Some(true));
        assert_eq!(goals.last().unwrap().met, None, "the analyzer and controller were not seen");
        assert!(fp.markdown().contains("(ran the demo's multi-call executable)"));
    }

    #[test]
    fn the_section_is_marked_and_names_its_command_and_goals() {
        let fp = Footprint {
            processes: vec![process(pump_types::SENSOR_COMPONENT, true, 2_000_000, 4)],
            ..Default::default()
        };
        let text = section(
            &fp,
            "cargo run --release -- footprint --component-bins target/edge",
            "2026-12-06 05:00 UTC",
            "2 × CPU",
        );
        let m = markers();
        assert!(text.starts_with(&m.begin) && text.trim_end().ends_with(&m.end), "{text}");
        assert!(text.contains("- Command: `cargo run --release -- footprint --component-bins target/edge`"), "{text}");
        assert!(text.contains("com.example.pump.Sensor: stripped binary under 6 MB: met"), "{text}");
        let doc = format!("# Benchmarks\n\n{text}");
        assert_eq!(bench_common::section::splice(&doc, &text, &m).unwrap(), doc, "a re-run replaces it in place");
    }

    #[tokio::test]
    async fn a_child_named_after_an_artifact_is_measured_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let sleeper = dir.path().join("pump-sensor");
        std::fs::copy("/bin/sleep", &sleeper).unwrap();
        let mut child = std::process::Command::new(&sleeper).arg("30").spawn().unwrap();
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // The kernel lets the parent go on during exec before the new image's arguments are in
        // place: until then /proc/PID/cmdline reads empty.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while [child.id(), other.id()].iter().any(|&pid| machine::cmdline(pid).is_empty()) {
            assert!(std::time::Instant::now() < deadline, "the children never showed their arguments");
            tokio::task::yield_now().await;
        }
        let sampler =
            Sampler::start(&[("sensor", "pump-sensor"), ("gone", "pump-nothing")], true, Duration::from_secs(3600));
        let fp = sampler.finish();
        child.kill().unwrap();
        other.kill().unwrap();
        let _ = (child.wait(), other.wait());
        let core = fp.process(CORE).unwrap();
        assert_eq!(core.pids, vec![std::process::id()]);
        assert!(core.vm_hwm_kib.unwrap() >= core.vm_rss_kib.unwrap());
        let sensor = fp.process("sensor").unwrap();
        assert_eq!(sensor.pids, vec![child.id()]);
        assert!(sensor.vm_rss_kib.unwrap() > 0);
        assert_eq!(sensor.binary_file_bytes, Some(std::fs::metadata(&sleeper).unwrap().len()));
        assert!(sensor.executable.ends_with("pump-sensor"), "{}", sensor.executable);
        assert_eq!(fp.process("gone").unwrap().pids, Vec::<u32>::new());
    }
}
