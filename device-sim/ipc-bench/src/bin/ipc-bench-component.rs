//! `ipc-bench-component`: the Rust measuring component of `ipc-bench`, built on
//! `kit::ipc::IpcClient`. The simulated core starts it from a recipe (so it has the `SVCUID`
//! and socket path a component gets); the driver talks to it through files in its work
//! directory: it writes `ready.json` once connected, waits for the driver to create the go
//! file, measures, writes `result.json`, then stays running until SIGTERM.
//!
//! Modes: `rtt` (request/response round trips), `publish` and `subscribe` (local pub/sub
//! throughput and latency between two components), `idle` (connected and subscribed, doing
//! nothing: for memory figures).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ipc_bench::wire::{self, Ack, DataMessage, PhaseEnd, PhaseSeen, PublisherResult, RttResult, SubscriberResult};
use kit::ipc::IpcClient;
use kit::ipc::model::*;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Acknowledge every this many messages (the publisher's window moves in these steps).
const ACK_EVERY: u64 = 64;
/// A phase whose end has been announced closes this long after the last message, even if
/// messages are missing (they were lost).
const QUIET: Duration = Duration::from_secs(2);
/// Publish calls in flight at once in the saturated phase.
const SATURATED_IN_FLIGHT: usize = 32;
/// How long the publisher waits for the window to open or for a phase to be closed.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Parser)]
#[command(name = "ipc-bench-component", about = "The Rust measuring component of ipc-bench.")]
struct Cli {
    /// Written (JSON) once connected and ready.
    #[arg(long, value_name = "FILE")]
    ready: PathBuf,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Sequential request/response round trips: GetConfiguration, then PublishToTopic.
    Rtt {
        /// Start when this file exists.
        #[arg(long)]
        go: PathBuf,
        /// Where to write the result.
        #[arg(long)]
        result: PathBuf,
        /// Calls before measuring, per operation.
        #[arg(long)]
        warmup: u64,
        /// Measured calls per operation.
        #[arg(long)]
        calls: u64,
        /// The configuration key read with GetConfiguration.
        #[arg(long)]
        key: String,
        /// The topic of the PublishToTopic calls (nobody subscribes to it).
        #[arg(long)]
        topic: String,
    },
    /// Publishes the pub/sub phases (end-to-end window, paced, saturated) to the subscriber.
    Publish {
        /// Start when this file exists.
        #[arg(long)]
        go: PathBuf,
        /// Where to write the result.
        #[arg(long)]
        result: PathBuf,
        #[command(flatten)]
        topics: Topics,
        /// Serialized size of each message, bytes.
        #[arg(long)]
        size: usize,
        /// Messages of the end-to-end window phase.
        #[arg(long)]
        window_count: u64,
        /// At most this many messages published and not yet acknowledged by the subscriber.
        #[arg(long)]
        window: u64,
        /// Messages of the paced phase.
        #[arg(long)]
        paced_count: u64,
        /// Messages per second of the paced phase.
        #[arg(long)]
        rate: u64,
        /// Messages of the saturated phase (no window).
        #[arg(long)]
        saturated_count: u64,
    },
    /// Receives the publisher's phases and reports what arrived.
    Subscribe {
        /// Where to write the result.
        #[arg(long)]
        result: PathBuf,
        #[command(flatten)]
        topics: Topics,
    },
    /// Connects, subscribes to a topic and idles.
    Idle {
        /// The topic to subscribe to.
        #[arg(long)]
        topic: String,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct Topics {
    /// Data messages.
    #[arg(long)]
    topic: String,
    /// Publisher → subscriber control messages (end of phase).
    #[arg(long)]
    ctl: String,
    /// Subscriber → publisher acknowledgements.
    #[arg(long)]
    ack: String,
}

async fn wait_for_file(path: &Path) {
    // A 5 ms poll costs nothing measurable and needs no IPC of its own.
    while !path.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

fn ready(path: &Path) -> anyhow::Result<()> {
    wire::write_json_atomic(path, &wire::ready_now("rust")).with_context(|| format!("writing {}", path.display()))
}

/// Runs `calls` (after `warmup`) sequential calls of `call`, timing each.
async fn time_calls<F, Fut, T>(warmup: u64, calls: u64, mut call: F) -> (Vec<u64>, u64, Option<(u64, String)>)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<T, kit::ipc::IpcError>>,
{
    let mut failed: Option<(u64, String)> = None;
    let mut note = |e: kit::ipc::IpcError| match &mut failed {
        Some((n, _)) => *n += 1,
        None => failed = Some((1, e.to_string())),
    };
    for i in 0..warmup {
        if let Err(e) = call(i).await {
            note(e);
        }
    }
    let mut samples = Vec::with_capacity(calls as usize);
    let start = wire::monotonic_ns();
    for i in 0..calls {
        let t = wire::monotonic_ns();
        match call(i).await {
            Ok(_) => samples.push(wire::monotonic_ns() - t),
            Err(e) => note(e),
        }
    }
    (samples, wire::monotonic_ns() - start, failed)
}

async fn rtt(
    ipc: &IpcClient,
    ready_path: &Path,
    go: &Path,
    result: &Path,
    (warmup, calls): (u64, u64),
    key: &str,
    topic: &str,
) -> anyhow::Result<()> {
    ready(ready_path)?;
    wait_for_file(go).await;
    let mut out = RttResult {
        client: "rust".into(),
        calls: BTreeMap::new(),
        elapsed_ns: BTreeMap::new(),
        rss_kib: None,
        hwm_kib: None,
        errors: BTreeMap::new(),
    };
    let request = GetConfigurationRequest { component_name: None, key_path: vec![key.to_owned()] };
    let (samples, elapsed, failed) = time_calls(warmup, calls, |_| ipc.get_configuration(&request)).await;
    record(&mut out, "GetConfiguration", samples, elapsed, failed);
    let (samples, elapsed, failed) = time_calls(warmup, calls, |i| {
        let request =
            PublishToTopicRequest { topic: topic.to_owned(), publish_message: PubSubMessage::json(json!({"n": i})) };
        async move { ipc.publish_to_topic(&request).await }
    })
    .await;
    record(&mut out, "PublishToTopic", samples, elapsed, failed);
    let me = wire::ready_now("rust");
    (out.rss_kib, out.hwm_kib) = (me.rss_kib, me.hwm_kib);
    wire::write_json_atomic(result, &out).with_context(|| format!("writing {}", result.display()))
}

fn record(out: &mut RttResult, op: &str, samples: Vec<u64>, elapsed: u64, failed: Option<(u64, String)>) {
    out.calls.insert(op.into(), samples);
    out.elapsed_ns.insert(op.into(), elapsed);
    if let Some((n, first)) = failed {
        out.errors.insert(op.into(), format!("{n} failed; first: {first}"));
    }
}

/// One publishing phase.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// At most this many unacknowledged messages.
    Window(u64),
    /// This many messages per second.
    Rate(u64),
    /// As fast as publish calls return, [`SATURATED_IN_FLIGHT`] at a time.
    Saturated,
}

/// Publish calls of one phase.
#[derive(Default)]
struct Tally {
    sent: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Tally {
    fn add(&mut self, r: Result<(), kit::ipc::IpcError>) {
        match r {
            Ok(()) => self.sent += 1,
            Err(e) => {
                self.failed += 1;
                self.note(e.to_string());
            }
        }
    }

    fn note(&mut self, error: String) {
        self.first_error.get_or_insert(error);
    }
}

struct Publisher<'a> {
    ipc: &'a IpcClient,
    topics: &'a Topics,
    size: usize,
    acks: watch::Receiver<Ack>,
}

impl Publisher<'_> {
    async fn publish(&self, topic: &str, message: Value) -> Result<(), kit::ipc::IpcError> {
        let request = PublishToTopicRequest { topic: topic.to_owned(), publish_message: PubSubMessage::json(message) };
        self.ipc.publish_to_topic(&request).await.map(|_| ())
    }

    /// Publishes one phase; returns (sent, failed, first error).
    async fn phase(&mut self, phase: u32, count: u64, pace: Pace, last: bool) -> (u64, u64, Option<String>) {
        let mut t = Tally::default();
        let mut in_flight = tokio::task::JoinSet::new();
        let start = tokio::time::Instant::now();
        for seq in 0..count {
            match pace {
                Pace::Window(w) => {
                    let open = self.acks.wait_for(|a| a.phase > phase || (a.phase == phase && seq < a.received + w));
                    if tokio::time::timeout(ACK_TIMEOUT, open).await.map(|r| r.is_err()).unwrap_or(true) {
                        t.note(format!("window did not open within {ACK_TIMEOUT:?}"));
                        break;
                    }
                }
                Pace::Rate(r) => {
                    tokio::time::sleep_until(start + Duration::from_nanos(seq * 1_000_000_000 / r.max(1))).await;
                }
                Pace::Saturated => {}
            }
            let m = wire::data_message(DataMessage { phase, seq, sent_ns: wire::monotonic_ns() }, self.size);
            let request =
                PublishToTopicRequest { topic: self.topics.topic.clone(), publish_message: PubSubMessage::json(m) };
            if let Pace::Saturated = pace {
                // Several calls in flight on the one connection, as a component that does not
                // await each publish: this can outrun the subscriber.
                let ipc = self.ipc.clone();
                in_flight.spawn(async move { ipc.publish_to_topic(&request).await.map(|_| ()) });
                if in_flight.len() >= SATURATED_IN_FLIGHT
                    && let Some(done) = in_flight.join_next().await
                {
                    t.add(done.unwrap_or_else(|e| Err(kit::ipc::IpcError::ConnectionClosed { reason: e.to_string() })));
                }
            } else {
                t.add(self.ipc.publish_to_topic(&request).await.map(|_| ()));
            }
        }
        while let Some(done) = in_flight.join_next().await {
            t.add(done.unwrap_or_else(|e| Err(kit::ipc::IpcError::ConnectionClosed { reason: e.to_string() })));
        }
        let end = PhaseEnd { phase, sent: t.sent, last };
        if let Err(e) = self.publish(&self.topics.ctl, serde_json::to_value(end).unwrap_or_default()).await {
            t.note(format!("end of phase not published: {e}"));
        }
        let closed = self.acks.wait_for(|a| a.phase > phase || (a.phase == phase && a.done));
        if tokio::time::timeout(ACK_TIMEOUT, closed).await.map(|r| r.is_err()).unwrap_or(true) {
            t.note(format!("the subscriber did not close the phase within {ACK_TIMEOUT:?}"));
        }
        (t.sent, t.failed, t.first_error)
    }
}

#[allow(clippy::too_many_arguments)]
async fn publish(
    ipc: &IpcClient,
    ready_path: &Path,
    go: &Path,
    result: &Path,
    topics: &Topics,
    size: usize,
    phases: [(u64, Pace); 3],
) -> anyhow::Result<()> {
    let mut acks_sub = ipc
        .subscribe_to_topic(&SubscribeToTopicRequest { topic: topics.ack.clone(), receive_mode: None })
        .await
        .context("subscribing to the acknowledgements")?;
    let (tx, rx) = watch::channel(Ack { phase: 0, received: 0, done: false });
    tokio::spawn(async move {
        while let Some(Ok(m)) = acks_sub.next_event().await {
            if let PubSubMessage::Json(m) = m
                && let Ok(ack) = serde_json::from_value::<Ack>(m.message)
            {
                // Acks of one phase may arrive out of order (each is its own publish): keep the highest.
                tx.send_if_modified(|cur| {
                    let newer = (ack.phase, ack.done, ack.received) > (cur.phase, cur.done, cur.received);
                    if newer {
                        *cur = ack;
                    }
                    newer
                });
            }
        }
    });
    ready(ready_path)?;
    wait_for_file(go).await;
    let mut p = Publisher { ipc, topics, size, acks: rx };
    let mut out = PublisherResult { sent: Vec::new(), failed: Vec::new() };
    for (i, (count, pace)) in phases.into_iter().enumerate() {
        let (sent, failed, error) = p.phase(i as u32, count, pace, i + 1 == phases.len()).await;
        out.sent.push(sent);
        out.failed.push((failed, error));
    }
    wire::write_json_atomic(result, &out).with_context(|| format!("writing {}", result.display()))
}

/// The subscriber's running count of one phase.
#[derive(Default)]
struct Acc {
    seen: HashSet<u64>,
    duplicates: u64,
    latencies_ns: Vec<u64>,
    first_sent_ns: Option<u64>,
    last_received_ns: Option<u64>,
}

async fn subscribe(ipc: &IpcClient, ready_path: &Path, result: &Path, topics: &Topics) -> anyhow::Result<()> {
    let sub = |topic: &str| SubscribeToTopicRequest { topic: topic.to_owned(), receive_mode: None };
    let mut data = ipc.subscribe_to_topic(&sub(&topics.topic)).await.context("subscribing to the data topic")?;
    let mut ctl = ipc.subscribe_to_topic(&sub(&topics.ctl)).await.context("subscribing to the control topic")?;
    ready(ready_path)?;
    let mut phases: BTreeMap<u32, Acc> = BTreeMap::new();
    let mut closed: BTreeSet<u32> = BTreeSet::new();
    let mut out = SubscriberResult { phases: Vec::new(), late: 0, malformed: 0 };
    let mut pending: Option<(PhaseEnd, tokio::time::Instant)> = None;
    let ack = |a: Ack| {
        let ipc = ipc.clone();
        let topic = topics.ack.clone();
        async move {
            let message = PubSubMessage::json(serde_json::to_value(a).unwrap_or_default());
            ipc.publish_to_topic(&PublishToTopicRequest { topic, publish_message: message }).await
        }
    };
    loop {
        let deadline = pending.map(|(_, d)| d);
        tokio::select! {
            event = data.next_event() => {
                let now = wire::monotonic_ns();
                let message = event.context("the data subscription ended")?.context("data subscription")?;
                let parsed = match &message {
                    PubSubMessage::Json(m) => wire::parse_data_message(&m.message),
                    PubSubMessage::Binary(_) => None,
                };
                let Some(m) = parsed else { out.malformed += 1; continue };
                if closed.contains(&m.phase) {
                    out.late += 1;
                    continue;
                }
                let acc = phases.entry(m.phase).or_default();
                if !acc.seen.insert(m.seq) {
                    acc.duplicates += 1;
                    continue;
                }
                acc.latencies_ns.push(now.saturating_sub(m.sent_ns));
                acc.first_sent_ns = Some(acc.first_sent_ns.map_or(m.sent_ns, |f| f.min(m.sent_ns)));
                acc.last_received_ns = Some(now);
                let received = acc.seen.len() as u64;
                if received.is_multiple_of(ACK_EVERY) {
                    // Not awaited: the subscriber keeps reading while the ack travels.
                    tokio::spawn(ack(Ack { phase: m.phase, received, done: false }));
                }
                if let Some((_, d)) = pending.as_mut().filter(|(e, _)| e.phase == m.phase) {
                    *d = tokio::time::Instant::now() + QUIET;
                }
            }
            event = ctl.next_event() => {
                let message = event.context("the control subscription ended")?.context("control subscription")?;
                let end = match message {
                    PubSubMessage::Json(m) => serde_json::from_value::<PhaseEnd>(m.message).ok(),
                    PubSubMessage::Binary(_) => None,
                };
                match end {
                    Some(end) => pending = Some((end, tokio::time::Instant::now() + QUIET)),
                    None => out.malformed += 1,
                }
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await },
                if deadline.is_some() => {
                // Quiet for QUIET after the end was announced: what is missing was lost.
                if let Some((end, _)) = pending.take() && close(&mut phases, &mut closed, &mut out, end, &ack).await {
                    break;
                }
                continue;
            }
        }
        let complete = pending
            .as_ref()
            .is_some_and(|(end, _)| phases.get(&end.phase).map_or(0, |a| a.seen.len() as u64) >= end.sent);
        if complete
            && let Some((end, _)) = pending.take()
            && close(&mut phases, &mut closed, &mut out, end, &ack).await
        {
            break;
        }
    }
    wire::write_json_atomic(result, &out).with_context(|| format!("writing {}", result.display()))
}

/// Closes a phase: records it and tells the publisher. Returns true after the last phase.
async fn close<F, Fut>(
    phases: &mut BTreeMap<u32, Acc>,
    closed: &mut BTreeSet<u32>,
    out: &mut SubscriberResult,
    end: PhaseEnd,
    ack: &F,
) -> bool
where
    F: Fn(Ack) -> Fut,
    Fut: std::future::Future<Output = Result<PublishToTopicResponse, kit::ipc::IpcError>>,
{
    let acc = phases.remove(&end.phase).unwrap_or_default();
    closed.insert(end.phase);
    let received = acc.seen.len() as u64;
    out.phases.push(PhaseSeen {
        phase: end.phase,
        sent: end.sent,
        received,
        duplicates: acc.duplicates,
        latencies_ns: acc.latencies_ns,
        first_sent_ns: acc.first_sent_ns,
        last_received_ns: acc.last_received_ns,
    });
    // Awaited: the publisher waits for this before its next phase.
    let _ = ack(Ack { phase: end.phase, received, done: true }).await;
    end.last
}

async fn idle(ipc: &IpcClient, ready_path: &Path, topic: &str) -> anyhow::Result<()> {
    let mut sub = ipc
        .subscribe_to_topic(&SubscribeToTopicRequest { topic: topic.to_owned(), receive_mode: None })
        .await
        .context("subscribing")?;
    ready(ready_path)?;
    tokio::spawn(async move { while sub.next_event().await.is_some() {} });
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ipc = IpcClient::connect_from_env().await.context("cannot connect to the Greengrass IPC socket")?;
    ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.context("UpdateState")?;
    match &cli.mode {
        Mode::Rtt { go, result, warmup, calls, key, topic } => {
            rtt(&ipc, &cli.ready, go, result, (*warmup, *calls), key, topic).await?
        }
        Mode::Publish { go, result, topics, size, window_count, window, paced_count, rate, saturated_count } => {
            let phases = [
                (*window_count, Pace::Window(*window)),
                (*paced_count, Pace::Rate(*rate)),
                (*saturated_count, Pace::Saturated),
            ];
            publish(&ipc, &cli.ready, go, result, topics, *size, phases).await?
        }
        Mode::Subscribe { result, topics } => subscribe(&ipc, &cli.ready, result, topics).await?,
        Mode::Idle { topic } => idle(&ipc, &cli.ready, topic).await?,
    }
    // Stay RUNNING (as a long-running component does) until the core stops us.
    wait_for_signal().await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc-bench-component: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
