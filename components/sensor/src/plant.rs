//! The Modbus TCP link to the plant (tokio-modbus client): connect, read one snapshot, and on
//! a lost connection reconnect with backoff. The thin I/O shell around [`crate::reading`].
//!
//! A poll is three requests on one connection (Modbus Application Protocol v1.1b3): read input
//! registers (04) of the whole measurement table, read discrete inputs (02) and read coils
//! (01), each from address 0. A Modbus exception keeps the connection (the plant answered; the
//! map disagrees); a timeout, an I/O or a framing error drops it, because an answer that
//! arrives late would be taken for the next request's.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader as _};
use tokio_modbus::{ExceptionCode, Slave};

use crate::backoff::Backoff;
use crate::config::ModbusConfig;
use crate::reading::{Snapshot, poll_sizes};

/// Why a poll produced no snapshot.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Not connected, and the next connection attempt is not due yet.
    #[error("not connected to the plant; next attempt in {0:?}")]
    Waiting(Duration),
    /// The connection attempt failed.
    #[error("cannot connect to the plant at {address}: {reason}")]
    Connect {
        /// `host:port`.
        address: String,
        /// The cause.
        reason: String,
    },
    /// The plant did not answer in time; the connection was dropped.
    #[error("the plant did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke (I/O or framing error); it was dropped.
    #[error("the plant connection broke: {0}")]
    Lost(String),
    /// The plant answered with a Modbus exception (connection kept).
    #[error("the plant refused the read with Modbus exception {0}")]
    Exception(ExceptionCode),
}

/// The connection to the plant and its reconnect schedule.
pub struct PlantLink {
    config: ModbusConfig,
    ctx: Option<Context>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// Connections made.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    failing_since_connected: bool,
}

enum ReadFailure {
    Exception(ExceptionCode),
    Broken(String),
}

fn flatten<T>(r: tokio_modbus::Result<T>) -> Result<T, ReadFailure> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(code)) => Err(ReadFailure::Exception(code)),
        Err(e) => Err(ReadFailure::Broken(e.to_string())),
    }
}

async fn read_snapshot(ctx: &mut Context) -> Result<Snapshot, ReadFailure> {
    let (inputs, status, coils) = poll_sizes();
    let inputs = flatten(ctx.read_input_registers(0, inputs).await)?;
    let status = flatten(ctx.read_discrete_inputs(0, status).await)?;
    let coils = flatten(ctx.read_coils(0, coils).await)?;
    Ok(Snapshot { inputs, status, coils })
}

impl PlantLink {
    /// A link that connects on the first poll.
    pub fn new(config: ModbusConfig) -> Self {
        let backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
        PlantLink {
            config,
            ctx: None,
            backoff,
            retry_at: None,
            connects: 0,
            connect_failures: 0,
            failing_since_connected: false,
        }
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }

    /// Reads one snapshot, connecting first if needed and due.
    pub async fn poll(&mut self) -> Result<Snapshot, PollError> {
        if self.ctx.is_none() {
            self.connect().await?;
        }
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(PollError::Lost("no connection".into()));
        };
        match tokio::time::timeout(self.config.timeout, read_snapshot(ctx)).await {
            Ok(Ok(snapshot)) => Ok(snapshot),
            Ok(Err(ReadFailure::Exception(code))) => Err(PollError::Exception(code)),
            Ok(Err(ReadFailure::Broken(reason))) => {
                self.drop_connection(&reason);
                Err(PollError::Lost(reason))
            }
            Err(_) => {
                self.drop_connection("no answer in time");
                Err(PollError::Timeout(self.config.timeout))
            }
        }
    }

    async fn connect(&mut self) -> Result<(), PollError> {
        let now = Instant::now();
        if let Some(at) = self.retry_at
            && now < at
        {
            return Err(PollError::Waiting(at - now));
        }
        let address = self.config.address.clone();
        let attempt = tokio::time::timeout(self.config.timeout, TcpStream::connect(address.as_str())).await;
        let reason = match attempt {
            Ok(Ok(stream)) => {
                // Small request/response frames: do not let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                self.ctx = Some(tokio_modbus::client::tcp::attach_slave(stream, Slave(self.config.unit_id)));
                self.connects += 1;
                self.retry_at = None;
                self.backoff.reset();
                self.failing_since_connected = false;
                tracing::info!(%address, unit = self.config.unit_id, "connected to the plant");
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no connection within {:?}", self.config.timeout),
        };
        self.connect_failures += 1;
        let pause = self.backoff.next_pause();
        self.retry_at = Some(now + pause);
        // One warning per outage; the rest at debug level so a long outage does not flood the log.
        if !self.failing_since_connected {
            tracing::warn!(%address, %reason, "cannot connect to the plant; retrying with backoff");
            self.failing_since_connected = true;
        } else {
            tracing::debug!(%address, %reason, ?pause, "plant still unreachable");
        }
        Err(PollError::Connect { address, reason })
    }

    fn drop_connection(&mut self, reason: &str) {
        tracing::warn!(address = %self.config.address, %reason, "lost the plant connection; reconnecting");
        self.ctx = None;
        self.failing_since_connected = true;
        // Reconnect at the next poll: a plant that restarts is usually back at once.
        self.retry_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{Ready, ready};
    use std::sync::Arc;
    use tokio::net::TcpListener;
    use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
    use tokio_modbus::{Request, Response};

    /// A Modbus server that refuses every request with Illegal Data Address.
    struct Refuser;

    impl tokio_modbus::server::Service for Refuser {
        type Request = Request<'static>;
        type Response = Response;
        type Exception = ExceptionCode;
        type Future = Ready<Result<Response, ExceptionCode>>;

        fn call(&self, _req: Self::Request) -> Self::Future {
            ready(Err(ExceptionCode::IllegalDataAddress))
        }
    }

    async fn refusing_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let server = Server::new(listener);
            let service = Arc::new(Refuser);
            let on_connected = |stream, addr| {
                let service = Arc::clone(&service);
                async move { accept_tcp_connection(stream, addr, |_| Ok(Some(Arc::clone(&service)))) }
            };
            let _ = server.serve(&on_connected, |_| {}).await;
        });
        address
    }

    fn config(address: String) -> ModbusConfig {
        ModbusConfig {
            address,
            unit_id: 1,
            timeout: Duration::from_millis(300),
            reconnect_min: Duration::from_secs(60),
            reconnect_max: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_modbus_exception_fails_the_poll_and_keeps_the_connection() {
        let mut link = PlantLink::new(config(refusing_server().await));
        for _ in 0..2 {
            let err = link.poll().await.unwrap_err();
            assert!(matches!(err, PollError::Exception(ExceptionCode::IllegalDataAddress)), "{err}");
            assert!(link.is_connected());
        }
        assert_eq!((link.connects, link.connect_failures), (1, 0), "one connection served both polls");
    }

    #[tokio::test]
    async fn a_silent_plant_times_out_and_the_connection_is_dropped() {
        // Accepts connections and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let keep = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let mut link = PlantLink::new(config(address));
        let err = link.poll().await.unwrap_err();
        assert!(matches!(err, PollError::Timeout(_)), "{err}");
        assert!(!link.is_connected(), "a late answer must not be taken for the next request's");
        assert!(link.poll().await.is_err());
        assert_eq!(link.connects, 2, "the next poll reconnects at once");
        keep.abort();
    }

    #[tokio::test]
    async fn an_unreachable_plant_is_retried_only_after_the_backoff() {
        // A port that was just free: nothing listens there.
        let address = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let mut link = PlantLink::new(config(address.clone()));
        let err = link.poll().await.unwrap_err();
        assert!(matches!(&err, PollError::Connect { address: a, .. } if *a == address), "{err}");
        let err = link.poll().await.unwrap_err();
        assert!(matches!(err, PollError::Waiting(d) if d > Duration::from_secs(59)), "{err}");
        assert_eq!((link.connects, link.connect_failures), (0, 1), "no attempt before the pause is over");
    }
}
