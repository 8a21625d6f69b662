//! Mosquitto from Debian's package, configured like the local cloud: TLS on
//! 127.0.0.1 with client certificates required (the certificate's common name
//! is the user name), 100 QoS 1 messages in flight per client, no persistence,
//! and an ACL file that mirrors the local cloud's thing-scoped policies, so
//! both brokers check authorization on every publish and delivery.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::child::ChildGuard;
use crate::pki::Pki;
use crate::plan::Plan;
use crate::target::{Kind, Target, names};

/// Where Debian puts the broker (not on a non-root user's PATH).
const DEBIAN_PATH: &str = "/usr/sbin/mosquitto";
/// How long Mosquitto gets to accept TCP connections after starting.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether there is a Mosquitto to compare with.
#[derive(Debug)]
pub enum Found {
    /// The broker binary.
    Binary(PathBuf),
    /// Why not.
    Missing(String),
}

fn locate() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("mosquitto")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from(DEBIAN_PATH)]).find(|p| p.is_file())
}

/// Finds `mosquitto` on PATH or in /usr/sbin; if it is missing and this runs
/// as root on a machine with apt-get, installs Debian's `mosquitto` package.
pub fn locate_or_install() -> anyhow::Result<Found> {
    if let Some(bin) = locate() {
        return Ok(Found::Binary(bin));
    }
    if !rustix::process::geteuid().is_root() {
        return Ok(Found::Missing(
            "mosquitto is not installed and this is not root; install it with `apt-get install mosquitto`".into(),
        ));
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        return Ok(Found::Missing("mosquitto is not installed and there is no apt-get to install it".into()));
    }
    eprintln!("mosquitto not found: installing Debian's package (apt-get update; apt-get install mosquitto)");
    for args in [&["update"][..], &["install", "-y", "--no-install-recommends", "mosquitto"][..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .status()
            .context("running apt-get")?;
        if !status.success() {
            return Ok(Found::Missing(format!("`apt-get {}` failed ({status})", args.join(" "))));
        }
    }
    Ok(locate()
        .map_or_else(|| Found::Missing("installed the package but found no mosquitto binary".into()), Found::Binary))
}

/// `mosquitto version 2.0.11` (from `mosquitto -h`, which exits non-zero).
fn version(bin: &Path) -> String {
    let out = Command::new(bin).arg("-h").output();
    out.ok()
        .and_then(|o| {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            text.lines().find(|l| l.contains("version")).map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "mosquitto (version unknown)".into())
}

/// A running Mosquitto.
#[derive(Debug)]
pub struct Mosquitto {
    /// How to reach and measure it.
    pub target: Target,
    /// `mosquitto -h`'s version line.
    pub version: String,
    /// Stops it when dropped.
    _child: ChildGuard,
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The configuration file (`mosquitto.conf(5)`, Mosquitto 2.0).
fn config(port: u16, dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# Written by broker-bench.\n\
         per_listener_settings false\n\
         # Stay root: the certificates live in a directory only root can read.\n\
         user root\n\
         persistence false\n\
         allow_anonymous false\n\
         max_inflight_messages 100\n\
         max_queued_messages 1000000\n\
         max_queued_bytes 0\n\
         set_tcp_nodelay true\n\
         acl_file {d}/acl\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         connection_messages false\n\
         listener {port} 127.0.0.1\n\
         cafile {d}/ca.pem\n\
         certfile {d}/server.pem\n\
         keyfile {d}/server.key.pem\n\
         require_certificate true\n\
         use_identity_as_username true\n"
    )
}

/// Mirrors the local cloud's policies: a publisher may publish its own
/// telemetry only; the subscriber may read everyone's.
fn acl() -> String {
    format!(
        "pattern write {}\nuser {}\ntopic read {}\n",
        names::telemetry_topic("%u"),
        names::SUBSCRIBER,
        names::TELEMETRY_FILTER
    )
}

/// Writes certificates and configuration into `dir` and starts Mosquitto;
/// returns once it accepts TCP connections.
pub async fn start(bin: &Path, dir: &Path, plan: &Plan) -> anyhow::Result<Mosquitto> {
    std::fs::create_dir_all(dir)?;
    let pki = Pki::new()?;
    let server = pki.server()?;
    std::fs::write(dir.join("ca.pem"), pki.ca_pem())?;
    std::fs::write(dir.join("server.pem"), &server.cert_pem)?;
    std::fs::write(dir.join("server.key.pem"), &server.key_pem)?;
    std::fs::write(dir.join("acl"), acl())?;
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, config(port, dir))?;

    let mut identities = HashMap::new();
    let mut ids = vec![names::SUBSCRIBER.to_owned()];
    ids.extend((0..plan.max_publishers()).map(names::publisher));
    for id in ids {
        let identity = pki.client(&id)?;
        identities.insert(id, identity);
    }
    let idle = pki.client("bench-idle")?;

    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&conf);
    let log = dir.join("mosquitto.log");
    let mut child = ChildGuard::spawn("mosquitto", cmd, &log)?;
    let until = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.exited() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!("mosquitto exited at start ({status}): {log}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "mosquitto did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let version = version(bin);
    eprintln!("{version} listening on 127.0.0.1:{port} (pid {})", child.pid());
    let target = Target {
        kind: Kind::Mosquitto,
        name: "Mosquitto".into(),
        host: "127.0.0.1".into(),
        port,
        ca_pem: pki.ca_pem().to_owned(),
        pid: child.pid(),
        identities,
        idle,
    };
    Ok(Mosquitto { target, version, _child: child })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_listens_on_loopback_and_requires_client_certificates() {
        let conf = config(18883, Path::new("/tmp/x"));
        assert!(conf.contains("listener 18883 127.0.0.1\n"));
        assert!(conf.contains("require_certificate true\n"));
        assert!(conf.contains("use_identity_as_username true\n"));
        assert!(conf.contains("persistence false\n"));
        assert!(conf.contains("max_inflight_messages 100\n"));
    }

    #[test]
    fn acl_lets_publishers_write_only_their_own_telemetry() {
        assert_eq!(acl(), "pattern write dt/bench/%u/telemetry\nuser bench-sub\ntopic read dt/bench/+/telemetry\n");
    }
}
