//! The HTTPS listener with mutual TLS that devices call with their certificate: the Greengrass
//! data plane and the AWS IoT credentials provider (on AWS two endpoints, here one listener).
//! Handlers learn the certificate from the connection ([`Peer`]). The TLS handshakes run in
//! their own tasks, so a client that stalls its handshake holds up no one else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client at the other end of a data-plane connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// The id of the certificate it presented (SHA-256 of the DER, as IoT names certificates).
    pub certificate_id: String,
}

/// Accepted, handshaken connections, handed to axum.
struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The acceptor stopped (shutdown): wait for axum's graceful shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer { addr: self.local, certificate_id: String::new() })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Serves `app` on `listener` until `shutdown`. `tls` must require client
/// certificates ([`crate::ca::LocalCa::server_tls_config`]).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let stop = shutdown.child_token();
    let stop_acceptor = stop.clone();
    // Owns the listening socket; it ends (closing the socket) at `shutdown`, and `serve` waits
    // for it, so a restart on the same port finds the port free.
    let acceptor_task = tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                _ = stop_acceptor.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of descriptors, say: back off instead of spinning.
                        tracing::warn!(error = %e, "data plane: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::debug!(%addr, error = %e, "data plane: TLS handshake failed"),
                    Err(_) => return tracing::debug!(%addr, "data plane: TLS handshake timed out"),
                };
                let Some(der) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else { return };
                let certificate_id = crate::ca::certificate_id(der);
                let _ = tx.send((tls, Peer { addr, certificate_id })).await;
            });
        }
    });
    let app = app.into_make_service_with_connect_info::<Peer>();
    let served =
        axum::serve(TlsListener { accepted: rx, local }, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    stop.cancel();
    let _ = acceptor_task.await;
    served
}
