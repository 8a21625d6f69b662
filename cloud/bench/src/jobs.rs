//! `--jobs`: the time from CreateJob to `notify-next` on every device of a
//! thing group, on the local cloud only (AWS IoT Jobs has no Mosquitto
//! counterpart).
//!
//! Set-up: `local-cloud serve` in its own process; `things` things, each with
//! its own certificate and a thing-scoped Jobs policy, all in one thing group
//! (provisioned with `aws-sdk-iot`); one MQTT connection per thing subscribed
//! (QoS 1) to its `$aws/things/{thing}/jobs/notify-next`. Each round sends
//! CreateJob for the group and stamps every device's notify-next naming that
//! job against the moment the request was sent; then CancelJob empties the
//! queues again and the round waits for every device's empty notify-next, so
//! the next job is again the next one everywhere.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench_common::stats::{Latency, latency};
use tokio::sync::mpsc;

use crate::client::{Incoming, Protocol, connect};
use crate::local::{group_of_things, iot_client, spawn};

/// The thing group every job targets.
const GROUP: &str = "bench-jobs-fleet";
/// Policy of the job devices.
const POLICY: &str = "BenchJobsPolicy";
/// Longest one round may wait for every device.
const ROUND_DEADLINE: Duration = Duration::from_secs(30);

/// What a device saw: the job id of a notify-next (`None` for an empty one) and when.
type Seen = (Option<String>, Instant);

/// The measured figures.
#[derive(Debug)]
pub struct JobsResult {
    /// Devices per job.
    pub things: usize,
    /// Per round: CreateJob's own round trip.
    pub create: Vec<Duration>,
    /// Per round: until the first device had its notify-next.
    pub first: Vec<Duration>,
    /// Per round: until the last device had it.
    pub last: Vec<Duration>,
    /// Every device of every round.
    pub all: Option<Latency>,
    /// Provisioning time.
    pub provisioned_in: Duration,
}

/// Runs the benchmark against the `local-cloud` binary `bin`.
pub async fn run(bin: &Path, data_dir: &Path, things: usize, rounds: usize) -> anyhow::Result<JobsResult> {
    let (child, endpoints, ca_pem) = spawn(bin, data_dir).await?;
    let iot = iot_client(&endpoints);
    let arn = |resource: &str| format!("arn:aws:iot:{}:{}:{resource}", endpoints.region, endpoints.account_id);
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Action":"iot:Connect","Resource":"{}"}},
            {{"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"{}"}},
            {{"Effect":"Allow","Action":"iot:Subscribe","Resource":"{}"}}]}}"#,
        arn("client/${iot:Connection.Thing.ThingName}"),
        arn("topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"),
        arn("topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"),
    );
    let started = Instant::now();
    iot.create_policy().policy_name(POLICY).policy_document(policy).send().await.context("CreatePolicy")?;
    let (_, identities) = group_of_things(&iot, GROUP, (0..things).map(|i| format!("bench-jobs-{i}")), POLICY).await?;
    let provisioned_in = started.elapsed();
    eprintln!("provisioned {things} things in {:.1} s", provisioned_in.as_secs_f64());

    let idle = identities.values().next().cloned().context("no things")?;
    let target = crate::local::target(&endpoints, ca_pem, child.pid(), identities, idle)?;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    let mut clients = Vec::new();
    for name in target.identities.keys() {
        let (client, mut events) = connect(&target, name, Protocol::V311, 10).await?;
        client.subscribe(&[format!("$aws/things/{name}/jobs/notify-next")]).await.map_err(anyhow::Error::msg)?;
        let granted = events.wait_for("SUBACK", |e| if let Incoming::SubAck(r) = e { Some(r) } else { None }).await;
        granted.with_context(|| format!("{name}: subscribing"))?.map_err(anyhow::Error::msg)?;
        let tx = seen_tx.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                if let Incoming::Publish(p) = event {
                    let at = Instant::now();
                    let body: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                    let job = body["execution"]["jobId"].as_str().map(str::to_owned);
                    if tx.send((job, at)).is_err() {
                        return;
                    }
                }
            }
        });
        clients.push(client);
    }
    eprintln!("{things} devices connected and subscribed to notify-next");

    let mut result =
        JobsResult { things, create: Vec::new(), first: Vec::new(), last: Vec::new(), all: None, provisioned_in };
    let mut samples = Vec::new();
    for round in 0..rounds {
        let job_id = format!("bench-job-{round}");
        let sent = Instant::now();
        iot.create_job()
            .job_id(&job_id)
            .targets(arn(&format!("thinggroup/{GROUP}")))
            .document(r#"{"operation":"bench"}"#)
            .send()
            .await
            .context("CreateJob")?;
        result.create.push(sent.elapsed());
        let arrivals = collect(&mut seen_rx, things, |job| job.as_deref() == Some(job_id.as_str())).await?;
        let mut offsets: Vec<Duration> = arrivals.iter().map(|at| at.saturating_duration_since(sent)).collect();
        offsets.sort_unstable();
        result.first.push(offsets[0]);
        result.last.push(offsets[offsets.len() - 1]);
        samples.extend(offsets.iter().map(|d| d.as_nanos() as u64));
        iot.cancel_job().job_id(&job_id).send().await.context("CancelJob")?;
        collect(&mut seen_rx, things, Option::is_none).await?;
    }
    result.all = latency(samples);
    for client in clients {
        client.try_disconnect();
    }
    child.stop();
    Ok(result)
}

/// Waits for `n` notify-next messages matching `want`, with a deadline.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    n: usize,
    want: impl Fn(&Option<String>) -> bool,
) -> anyhow::Result<Vec<Instant>> {
    let deadline = tokio::time::Instant::now() + ROUND_DEADLINE;
    let mut arrivals = Vec::with_capacity(n);
    while arrivals.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((job, at))) if want(&job) => arrivals.push(at),
            Ok(Some(_)) => {}
            Ok(None) => anyhow::bail!("the devices' connections ended"),
            Err(_) => anyhow::bail!("only {} of {n} notify-next messages within {ROUND_DEADLINE:?}", arrivals.len()),
        }
    }
    Ok(arrivals)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn median_min_max(values: &[Duration]) -> String {
    let mut v = values.to_vec();
    v.sort_unstable();
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(min), Some(med), Some(max)) => format!("{} | {} / {}", ms(*med), ms(*min), ms(*max)),
        _ => "– | –".into(),
    }
}

/// The `docs/benchmarks.md` section.
pub fn markdown(r: &JobsResult, command: &str, machine: &str, build: &str, rounds: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## IoT Jobs: CreateJob to notify-next at {} subscribed things\n", r.things);
    let _ = writeln!(out, "- Command: `{command}`");
    let _ = writeln!(out, "- Date: {}", bench_common::format::now_utc());
    let _ = writeln!(out, "- Machine: {machine}. The machine is shared: other processes may have been running.");
    let _ = writeln!(
        out,
        "- Local cloud: `local-cloud serve`, {build}, its own process, MQTT over mTLS and HTTP on 127.0.0.1. \
         The benchmark's clients run in one process on the same cores."
    );
    let _ = writeln!(
        out,
        "- {} things in one thing group, each with its own certificate and a thing-scoped Jobs policy \
         (provisioned with `aws-sdk-iot` in {:.1} s), one MQTT 3.1.1 connection each, subscribed at QoS 1 \
         to its `notify-next`. {rounds} rounds: CreateJob (`aws-sdk-iot`, the group's ARN as target) → \
         every device's notify-next naming the job, timed from just before the request was sent; then \
         CancelJob and every device's empty notify-next before the next round.\n",
        r.things,
        r.provisioned_in.as_secs_f64()
    );
    let _ = writeln!(out, "| per round | ms median | ms min / max |");
    let _ = writeln!(out, "| --- | ---: | ---: |");
    let _ = writeln!(out, "| CreateJob request → response | {} |", median_min_max(&r.create));
    let _ = writeln!(out, "| CreateJob sent → first device's notify-next | {} |", median_min_max(&r.first));
    let _ =
        writeln!(out, "| CreateJob sent → last ({}th) device's notify-next | {} |", r.things, median_min_max(&r.last));
    if let Some(all) = &r.all {
        let _ = writeln!(
            out,
            "\nOver all {} deliveries: p50 {} ms, p99 {} ms, max {} ms.",
            all.count,
            ms(all.p50),
            ms(all.p99),
            ms(all.max)
        );
    }
    let _ = writeln!(
        out,
        "\n- CreateJob answers after the executions are queued, persisted (one SQLite transaction) and their \
         notifications handed to the broker, so the first notify-next can arrive before the HTTP response."
    );
    out
}
