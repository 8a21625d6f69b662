//! The local cloud as its own process (`local-cloud serve` on ephemeral
//! loopback ports), so its RSS and CPU time are measured exactly like
//! Mosquitto's; provisioned over its HTTP API with `aws-sdk-iot`, the way a
//! user provisions it.
//!
//! Policies are the realistic thing-scoped ones (policy variables,
//! `iot:Connection.Thing.IsAttached`), not allow-all: evaluating them on
//! CONNECT, PUBLISH, SUBSCRIBE and delivery is part of the broker's real cost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_credential_types::Credentials;
use aws_sdk_iot::config::{BehaviorVersion, Region};
use cloud_api::endpoints::Endpoints;
use futures::{StreamExt, TryStreamExt};

use crate::child::ChildGuard;
use crate::pki::Identity;
use crate::plan::Plan;
use crate::target::{Kind, Target, names};

/// How long the local cloud gets to write `endpoints.json`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Provisioning requests in flight at once.
const PROVISION_CONCURRENCY: usize = 8;

/// Finds the `local-cloud` binary. Without `explicit`, and when started by
/// `cargo run`, builds it first (`cargo build --release -p local-cloud` into
/// this binary's target directory) so the benchmark never measures a stale build.
pub fn binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.is_file(), "{} does not exist", p.display());
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let profile_dir = exe.parent().context("this binary has no directory")?;
    let target_dir = profile_dir.parent().context("this binary is not in a cargo target directory")?;
    let bin = target_dir.join("release").join("local-cloud");
    if let Some(cargo) = std::env::var_os("CARGO") {
        eprintln!("building local-cloud (release) into {}", target_dir.display());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "local-cloud"])
            .env("CARGO_TARGET_DIR", target_dir)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            anyhow::ensure!(bin.is_file(), "`cargo build --release -p local-cloud` failed ({status})");
            eprintln!("warning: `cargo build --release -p local-cloud` failed; using the existing {}", bin.display());
        }
    }
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: build it with `cargo build --release -p local-cloud` or pass --local-cloud-bin",
        bin.display()
    );
    Ok(bin)
}

/// A running local cloud process.
#[derive(Debug)]
pub struct LocalCloudProcess {
    /// How to reach and measure it.
    pub target: Target,
    child: ChildGuard,
}

impl LocalCloudProcess {
    /// Stops the process (SIGTERM: it checkpoints its database and exits).
    pub fn stop(self) {
        self.child.stop();
    }
}

/// A `local-cloud serve` process on ephemeral loopback ports, once it wrote
/// `endpoints.json`: the process, its endpoints, and its CA in PEM.
pub async fn spawn(bin: &Path, data_dir: &Path) -> anyhow::Result<(ChildGuard, Endpoints, String)> {
    std::fs::create_dir_all(data_dir)?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--greengrass-data-plane-addr", "127.0.0.1:0"])
        // Warnings only: logging is not what is being measured.
        .env("RUST_LOG", "warn");
    let log = data_dir.join("local-cloud.log");
    let mut child = ChildGuard::spawn("local-cloud", cmd, &log)?;
    let endpoints_file = data_dir.join("endpoints.json");
    let until = Instant::now() + START_TIMEOUT;
    let endpoints: Endpoints = loop {
        if let Some(status) = child.exited() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!("local-cloud exited at start ({status}): {log}");
        }
        if let Ok(bytes) = std::fs::read(&endpoints_file)
            && let Ok(e) = serde_json::from_slice(&bytes)
        {
            break e;
        }
        anyhow::ensure!(Instant::now() < until, "local-cloud wrote no endpoints.json within {START_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ca_pem = std::fs::read_to_string(&endpoints.ca_file)
        .with_context(|| format!("reading {}", endpoints.ca_file.display()))?;
    eprintln!("local cloud listening on {} and {} (pid {})", endpoints.mqtt, endpoints.http, child.pid());
    Ok((child, endpoints, ca_pem))
}

/// Starts `local-cloud serve` with a fresh data directory and provisions the
/// benchmark's things, certificates and policies.
pub async fn start(bin: &Path, data_dir: &Path, plan: &Plan) -> anyhow::Result<LocalCloudProcess> {
    let (child, endpoints, ca_pem) = spawn(bin, data_dir).await?;
    let started = Instant::now();
    let (identities, idle) = provision(&endpoints, plan).await.context("provisioning over the HTTP API")?;
    eprintln!("provisioned {} things over HTTP in {:.1} s", identities.len(), started.elapsed().as_secs_f64());
    let target = target(&endpoints, ca_pem, child.pid(), identities, idle)?;
    Ok(LocalCloudProcess { target, child })
}

/// The [`Target`] of a local cloud process `pid` announcing `endpoints`.
pub fn target(
    endpoints: &Endpoints,
    ca_pem: String,
    pid: u32,
    identities: HashMap<String, Identity>,
    idle: Identity,
) -> anyhow::Result<Target> {
    let (host, port) = endpoints.mqtt_host_port().map_err(|e| anyhow::anyhow!("endpoints.json: {e}"))?;
    Ok(Target { kind: Kind::LocalCloud, name: "local cloud".into(), host, port, ca_pem, pid, identities, idle })
}

/// An `aws-sdk-iot` client for the local cloud of `endpoints`, signing with its administrator's
/// key pair (the local cloud verifies every signature).
pub fn iot_client(endpoints: &cloud_api::endpoints::Endpoints) -> aws_sdk_iot::Client {
    let (id, secret) = endpoints
        .credentials
        .as_ref()
        .map(|p| (p.access_key_id.clone(), p.secret_access_key.clone()))
        .unwrap_or_default();
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    // The SDK's default HTTPS client would bring a second crypto provider; use ring, like the rest.
    let http_client =
        aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let config = aws_sdk_iot::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(id, secret, None, None, "broker-bench"))
        .endpoint_url(&endpoints.http)
        .http_client(http_client)
        .build();
    aws_sdk_iot::Client::from_conf(config)
}

/// The thing-scoped policies, with this cloud's region and account.
fn policies(region: &str, account: &str) -> [(&'static str, String); 4] {
    let arn = |resource: &str| format!("arn:aws:iot:{region}:{account}:{resource}");
    let connect_as_thing = format!(
        r#"{{"Effect":"Allow","Action":"iot:Connect","Resource":"{}",
            "Condition":{{"Bool":{{"iot:Connection.Thing.IsAttached":"true"}}}}}}"#,
        arn("client/${iot:Connection.Thing.ThingName}")
    );
    let doc = |statements: Vec<String>| format!(r#"{{"Version":"2012-10-17","Statement":[{}]}}"#, statements.join(","));
    let allow = |actions: &str, resource: &str| {
        format!(r#"{{"Effect":"Allow","Action":{actions},"Resource":"{}"}}"#, arn(resource))
    };
    [
        (
            "BenchDevicePolicy",
            doc(vec![
                connect_as_thing.clone(),
                allow(r#""iot:Publish""#, "topic/dt/bench/${iot:Connection.Thing.ThingName}/telemetry"),
                allow(
                    r#"["iot:Publish","iot:Receive"]"#,
                    "topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*",
                ),
                allow(r#""iot:Subscribe""#, "topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"),
            ]),
        ),
        (
            "BenchConsumerPolicy",
            doc(vec![
                connect_as_thing.clone(),
                allow(r#""iot:Subscribe""#, "topicfilter/dt/bench/*"),
                allow(r#""iot:Receive""#, "topic/dt/bench/*"),
            ]),
        ),
        (
            "BenchOperatorPolicy",
            doc(vec![connect_as_thing, allow(r#""iot:Publish""#, "topic/$aws/things/*/shadow/update")]),
        ),
        ("BenchIdlePolicy", doc(vec![allow(r#""iot:Connect""#, &format!("client/{}*", names::IDLE_PREFIX))])),
    ]
}

/// A new ACTIVE certificate with `policy` attached.
async fn certificate(iot: &aws_sdk_iot::Client, policy: &str) -> anyhow::Result<(String, Identity)> {
    let keys =
        iot.create_keys_and_certificate().set_as_active(true).send().await.context("CreateKeysAndCertificate")?;
    let arn = keys.certificate_arn().context("no certificateArn")?.to_owned();
    let identity = Identity {
        cert_pem: keys.certificate_pem().context("no certificatePem")?.to_owned(),
        key_pem: keys.key_pair().and_then(|k| k.private_key()).context("no private key")?.to_owned(),
    };
    iot.attach_policy().policy_name(policy).target(&arn).send().await.context("AttachPolicy")?;
    Ok((arn, identity))
}

/// The thing group `group`, created, holding one new thing per name, each with its own certificate
/// and `policy` (provisioned [`PROVISION_CONCURRENCY`] at a time): the group's ARN and each
/// thing's identity.
pub async fn group_of_things(
    iot: &aws_sdk_iot::Client,
    group: &str,
    names: impl IntoIterator<Item = String>,
    policy: &str,
) -> anyhow::Result<(String, HashMap<String, Identity>)> {
    let created = iot.create_thing_group().thing_group_name(group).send().await.context("CreateThingGroup")?;
    let arn = created.thing_group_arn().context("CreateThingGroup: no thingGroupArn")?.to_owned();
    let identities: HashMap<String, Identity> = futures::stream::iter(names)
        .map(|name| thing(iot, name, policy))
        .buffer_unordered(PROVISION_CONCURRENCY)
        .try_collect()
        .await?;
    for name in identities.keys() {
        iot.add_thing_to_thing_group().thing_group_name(group).thing_name(name).send().await?;
    }
    Ok((arn, identities))
}

/// A thing with its own certificate and `policy`.
pub async fn thing(iot: &aws_sdk_iot::Client, name: String, policy: &str) -> anyhow::Result<(String, Identity)> {
    iot.create_thing().thing_name(&name).send().await.with_context(|| format!("CreateThing {name}"))?;
    let (arn, identity) = certificate(iot, policy).await?;
    iot.attach_thing_principal().thing_name(&name).principal(&arn).send().await.context("AttachThingPrincipal")?;
    Ok((name, identity))
}

async fn provision(e: &Endpoints, plan: &Plan) -> anyhow::Result<(HashMap<String, Identity>, Identity)> {
    let iot = iot_client(e);
    for (name, document) in policies(&e.region, &e.account_id) {
        iot.create_policy()
            .policy_name(name)
            .policy_document(document)
            .send()
            .await
            .with_context(|| format!("CreatePolicy {name}"))?;
    }
    let mut wanted = vec![
        (names::SUBSCRIBER.to_owned(), "BenchConsumerPolicy"),
        (names::SHADOW_DEVICE.to_owned(), "BenchDevicePolicy"),
        (names::OPERATOR.to_owned(), "BenchOperatorPolicy"),
    ];
    wanted.extend((0..plan.max_publishers()).map(|i| (names::publisher(i), "BenchDevicePolicy")));
    let identities: HashMap<String, Identity> = futures::stream::iter(wanted)
        .map(|(name, policy)| thing(&iot, name, policy))
        .buffer_unordered(PROVISION_CONCURRENCY)
        .try_collect()
        .await?;
    let (_, idle) = certificate(&iot, "BenchIdlePolicy").await?;
    Ok((identities, idle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_valid_json_scoped_to_the_thing() {
        for (name, doc) in policies("us-east-1", "000000000000") {
            let v: serde_json::Value = serde_json::from_str(&doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v["Version"], "2012-10-17");
        }
        let [(_, device), ..] = policies("us-east-1", "000000000000");
        assert!(device.contains("topic/dt/bench/${iot:Connection.Thing.ThingName}/telemetry"));
        assert!(device.contains("iot:Connection.Thing.IsAttached"));
    }
}
