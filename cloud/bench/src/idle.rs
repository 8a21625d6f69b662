//! Idle connections: open thousands of mTLS MQTT connections (full TLS
//! handshakes, no session resumption; each sends CONNECT and waits for
//! CONNACK), hold them, and read the broker's RSS. Raw tokio-rustls streams and
//! a CONNECT encoded with rumqttc's codec keep the client side small; opening
//! is bounded in concurrency and time.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::plan::Plan;
use crate::target::{Target, names};

/// Keep-alive in the CONNECT: IoT Core's maximum, so no PINGREQ is due while the connections sit idle.
const KEEP_ALIVE_SECS: u16 = 1200;
/// Time for the broker's memory to settle before reading RSS.
const SETTLE: Duration = Duration::from_secs(2);
/// A step gives up after this many failed connections.
const MAX_FAILURES: usize = 100;

/// The broker's memory with `connections` idle connections open.
#[derive(Debug, Clone)]
pub struct Step {
    /// Connections wanted.
    pub connections: usize,
    /// Connections that got CONNACK 0 and are open.
    pub open: usize,
    /// Attempts that failed in this step.
    pub failed: usize,
    /// Broker RSS, KiB.
    pub rss_kib: Option<u64>,
    /// Connections opened per second in this step (TLS handshake + CONNECT/CONNACK).
    pub connect_rate: f64,
    /// The step hit its deadline.
    pub timed_out: bool,
}

/// The idle-connection scenario on one broker.
#[derive(Debug, Clone)]
pub struct IdleResult {
    /// Broker RSS before any idle connection, KiB.
    pub baseline_kib: Option<u64>,
    /// One entry per plan step.
    pub steps: Vec<Step>,
    /// Broker RSS a few seconds after every connection closed, KiB.
    pub after_close_kib: Option<u64>,
    /// The largest step opened again after closing everything: RSS that grows
    /// again by as much as the first time points at a leak, RSS that stays put
    /// is memory the allocator kept for reuse.
    pub reopened: Option<Step>,
    /// The first distinct errors.
    pub errors: Vec<String>,
}

impl IdleResult {
    /// RSS growth per open connection at a step, KiB.
    pub fn per_connection_kib(&self, step: &Step) -> Option<f64> {
        let (base, rss) = (self.baseline_kib?, step.rss_kib?);
        (step.open > 0).then(|| (rss as f64 - base as f64) / step.open as f64)
    }
}

/// The bytes of an MQTT 3.1.1 CONNECT with a clean session.
fn connect_packet(client_id: &str) -> anyhow::Result<Vec<u8>> {
    let mut connect = rumqttc::Connect::new(client_id);
    connect.clean_session = true;
    connect.keep_alive = KEEP_ALIVE_SECS;
    let mut buf = bytes::BytesMut::new();
    connect.write(&mut buf).map_err(|e| anyhow::anyhow!("encoding CONNECT: {e:?}"))?;
    Ok(buf.to_vec())
}

async fn open_one(target: &Target, connector: TlsConnector, client_id: String) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(target.host.clone())?;
    let mut tls = connector.connect(name, tcp).await.context("TLS handshake")?;
    tls.write_all(&connect_packet(&client_id)?).await?;
    tls.flush().await?;
    let mut ack = [0u8; 4];
    tls.read_exact(&mut ack).await.context("reading CONNACK")?;
    anyhow::ensure!(ack[0] == 0x20 && ack[1] == 2 && ack[3] == 0, "CONNACK refused: {ack:02x?}");
    Ok(tls)
}

/// Runs the plan's steps against `target`. `Err` holds why it could not run at all.
pub async fn run(target: &Target, plan: &Plan) -> Result<IdleResult, String> {
    let connector = TlsConnector::from(target.idle_tls().map_err(|e| format!("{e:#}"))?);
    let mut open: Vec<TlsStream<TcpStream>> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let baseline_kib = target.rss_kib();
    let mut steps = Vec::new();
    for &wanted in &plan.idle_steps {
        let step = open_up_to(target, &connector, plan, wanted, &mut open, &mut errors).await;
        let stop = step.failed >= MAX_FAILURES || step.timed_out;
        steps.push(step);
        if stop {
            break;
        }
    }
    let most = open.len();
    drop(open);
    tokio::time::sleep(SETTLE + SETTLE).await;
    let after_close_kib = target.rss_kib();
    let mut reopened = None;
    if most > 0 {
        eprintln!("{}: all closed; opening {most} again", target.name);
        let mut open = Vec::new();
        reopened = Some(open_up_to(target, &connector, plan, most, &mut open, &mut errors).await);
        drop(open);
        tokio::time::sleep(SETTLE).await;
    }
    Ok(IdleResult { baseline_kib, steps, after_close_kib, reopened, errors })
}

/// Opens connections until `open` holds `wanted`, at most `plan.idle_concurrency`
/// handshakes at a time, then waits for the broker to settle and reads its RSS.
async fn open_up_to(
    target: &Target,
    connector: &TlsConnector,
    plan: &Plan,
    wanted: usize,
    open: &mut Vec<TlsStream<TcpStream>>,
    errors: &mut Vec<String>,
) -> Step {
    let start = Instant::now();
    let deadline = start + plan.idle_deadline;
    let from = open.len();
    let mut attempts = futures::stream::iter(from..wanted)
        .map(|i| open_one(target, connector.clone(), format!("{}{i}", names::IDLE_PREFIX)))
        .buffer_unordered(plan.idle_concurrency);
    let (mut failed, mut timed_out) = (0, false);
    loop {
        match tokio::time::timeout_at(deadline, attempts.next()).await {
            Err(_) => {
                timed_out = true;
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(stream))) => open.push(stream),
            Ok(Some(Err(e))) => {
                failed += 1;
                let e = format!("{e:#}");
                if errors.len() < 5 && !errors.contains(&e) {
                    errors.push(e);
                }
                if failed >= MAX_FAILURES {
                    break;
                }
            }
        }
    }
    drop(attempts);
    let opened = open.len() - from;
    let connect_rate = opened as f64 / start.elapsed().as_secs_f64().max(1e-9);
    eprintln!("{}: {} idle connections open ({failed} failed, {connect_rate:.0}/s)", target.name, open.len());
    tokio::time::sleep(SETTLE).await;
    Step { connections: wanted, open: open.len(), failed, rss_kib: target.rss_kib(), connect_rate, timed_out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_mqtt_311_with_the_long_keep_alive() {
        let p = connect_packet("bench-idle-7").unwrap();
        assert_eq!(p[0], 0x10);
        // Variable header: "MQTT", level 4, flags (clean session), keep-alive.
        assert_eq!(&p[2..12], &[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0x04, 0xb0]);
    }

    #[test]
    fn per_connection_memory_is_growth_over_baseline() {
        let step =
            Step { connections: 10, open: 10, failed: 0, rss_kib: Some(1_100), connect_rate: 1.0, timed_out: false };
        let r = IdleResult {
            baseline_kib: Some(1_000),
            steps: vec![step.clone()],
            after_close_kib: None,
            reopened: None,
            errors: vec![],
        };
        assert_eq!(r.per_connection_kib(&step), Some(10.0));
    }
}
