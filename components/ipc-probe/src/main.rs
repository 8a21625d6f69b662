//! `ipc-probe`: a tiny Greengrass component for the simulated core's own tests.
//!
//! Started by a core from its recipe, it connects over IPC (`kit::ipc`, from the environment
//! the core gives) and, in order:
//! 1. UpdateState RUNNING;
//! 2. GetConfiguration of its own `--config-key` path;
//! 3. SubscribeToTopic `--topic` (RECEIVE_ALL_MESSAGES), PublishToTopic on it, and waits for
//!    its own message to come back;
//! 4. UpdateThingShadow then GetThingShadow of `--shadow` on its core's thing.
//!
//! Every step is recorded, success or failure (with the IPC error code), in a JSON report
//! written atomically to `--report` (see the README for its shape). A failing step does not
//! stop the others. Then it stays running until SIGTERM or SIGINT and exits 0. It exits
//! non-zero only when it cannot connect or cannot write the report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kit::ipc::model::*;
use kit::ipc::{IpcClient, IpcError};
use serde_json::{Map, Value, json};

#[derive(Debug, Parser)]
#[command(name = "ipc-probe", about = "Exercises Greengrass IPC operations and reports what it saw.")]
struct Args {
    /// Where to write the JSON report.
    #[arg(long, value_name = "FILE")]
    report: PathBuf,
    /// The local pub/sub topic for the round trip.
    #[arg(long, default_value = "probe/echo")]
    topic: String,
    /// The named shadow to update and read ("" for the classic shadow).
    #[arg(long, default_value = "probe")]
    shadow: String,
    /// The key path to read with GetConfiguration, `/`-separated (empty: the whole configuration).
    #[arg(long, default_value = "message")]
    config_key: String,
    /// How long to wait for the published message to come back, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    receive_timeout_ms: u64,
    /// Exit after writing the report instead of waiting for a signal.
    #[arg(long)]
    once: bool,
}

/// A step's outcome as the report records it.
fn outcome(result: Result<Value, IpcError>) -> Value {
    match result {
        Ok(value) => json!({"ok": true, "value": value}),
        Err(e) => json!({
            "ok": false,
            "error": {"code": e.code().map(ToString::to_string), "message": e.to_string()}
        }),
    }
}

fn payload_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

async fn probe(ipc: &IpcClient, args: &Args, thing: &str) -> Map<String, Value> {
    let mut steps = Map::new();

    let r = ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await;
    steps.insert("UpdateState".into(), outcome(r.map(|_| Value::Null)));

    let key_path: Vec<String> = args.config_key.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let r = ipc.get_configuration(&GetConfigurationRequest { component_name: None, key_path }).await;
    steps.insert("GetConfiguration".into(), outcome(r.map(|r| r.value)));

    let nonce = format!("{}-{}", std::process::id(), now_ms());
    let sub = ipc
        .subscribe_to_topic(&SubscribeToTopicRequest {
            topic: args.topic.clone(),
            receive_mode: Some(ReceiveMode::ReceiveAllMessages),
        })
        .await;
    let mut sub = match sub {
        Ok(s) => {
            steps.insert("SubscribeToTopic".into(), json!({"ok": true, "value": args.topic}));
            Some(s)
        }
        Err(e) => {
            steps.insert("SubscribeToTopic".into(), outcome(Err(e)));
            None
        }
    };
    let sent = json!({"probe": nonce});
    let r = ipc
        .publish_to_topic(&PublishToTopicRequest {
            topic: args.topic.clone(),
            publish_message: PubSubMessage::json(sent.clone()),
        })
        .await;
    let published = r.is_ok();
    steps.insert("PublishToTopic".into(), outcome(r.map(|_| sent.clone())));
    if let (Some(sub), true) = (sub.as_mut(), published) {
        let wait = Duration::from_millis(args.receive_timeout_ms);
        let received = tokio::time::timeout(wait, async {
            while let Some(event) = sub.next_event().await {
                let message = event?;
                let topic = message.topic().map(str::to_owned);
                let body = match message {
                    PubSubMessage::Json(m) => m.message,
                    PubSubMessage::Binary(m) => payload_json(m.message.as_bytes()),
                };
                if body == sent {
                    return Ok(json!({"topic": topic, "message": body}));
                }
            }
            Err(IpcError::ConnectionClosed { reason: "the subscription ended".into() })
        })
        .await;
        let value = match received {
            Ok(r) => outcome(r),
            Err(_) => {
                json!({"ok": false, "error": {"code": null, "message": format!("nothing received within {wait:?}")}})
            }
        };
        steps.insert("ReceiveMessage".into(), value);
    }

    let update = json!({"state": {"reported": {"probe": nonce, "status": "ok"}}});
    let r = ipc
        .update_thing_shadow(&UpdateThingShadowRequest {
            thing_name: thing.to_owned(),
            shadow_name: Some(args.shadow.clone()),
            payload: Blob(update.to_string().into_bytes()),
        })
        .await;
    steps.insert("UpdateThingShadow".into(), outcome(r.map(|r| payload_json(r.payload.as_bytes()))));
    let r = ipc
        .get_thing_shadow(&GetThingShadowRequest {
            thing_name: thing.to_owned(),
            shadow_name: Some(args.shadow.clone()),
        })
        .await;
    steps.insert("GetThingShadow".into(), outcome(r.map(|r| payload_json(r.payload.as_bytes()))));
    steps
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// Writes `report` to `path` via a temporary file and a rename, so readers never see half.
fn write_report(path: &Path, report: &Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(report).context("cannot serialise the report")?;
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let env = |k: &str| std::env::var(k).ok();
    let thing = env("AWS_IOT_THING_NAME").unwrap_or_default();
    let ipc = IpcClient::connect_from_env().await.context("cannot connect to the Greengrass IPC socket")?;
    let steps = probe(&ipc, &args, &thing).await;
    let report = json!({
        "environment": {
            "thingName": thing,
            "region": env("AWS_REGION"),
            "ggcVersion": env("GGC_VERSION"),
            "rootCaPath": env("GG_ROOT_CA_PATH"),
        },
        "topic": args.topic,
        "shadow": args.shadow,
        "steps": steps,
        "complete": true,
    });
    write_report(&args.report, &report)?;
    println!("ipc-probe: report written to {}", args.report.display());
    if args.once {
        return Ok(());
    }
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("ipc-probe: stopping");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc-probe: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
