//! How the Greengrass CLI reaches the core, both sides.
//!
//! The nucleus's CLI service (`aws.greengrass.Cli`, `CLIService.generateCliIpcInfo`) hands
//! the `greengrass-cli` client an IPC token through the file system rather than an
//! environment: it registers a token for the client id `user-{uid}` of the user running the
//! nucleus (or `group-{gid}` per `AuthorizedPosixGroups`), and writes
//! `{root}/cli_ipc_info/{clientId}` = `{"cli_auth_token": …, "domain_socket_path": …}`,
//! readable by that user (or group) only. The client (`NucleusAdapterIpcClientImpl`) reads
//! `user-{euid}`, else `group-{egid}`, else any file there, and connects to the socket with
//! the token like a component. Its principal is `greengrass-cli#{clientId}`, which may call
//! every CLI operation.
//!
//! The simulated core does the same for the user running it (no `AuthorizedPosixGroups`):
//! the directory is 0700 and the file 0600, so only that user (and root) can deploy.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cloud_api::ipc::error::ServiceError;
use cloud_api::ipc::frame::FrameCodec;
use cloud_api::ipc::operation::Operation;
use cloud_api::ipc::rpc::{MessageType, RpcMessage, StreamId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use super::Tokens;
use super::access::CLI_CLIENT_PREFIX;

/// The directory under the core's root that holds the CLI's IPC info files.
pub const IPC_INFO_DIR: &str = "cli_ipc_info";

/// One IPC info file's content (the nucleus's member names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcInfo {
    /// `cli_auth_token`: the token to CONNECT with.
    pub cli_auth_token: String,
    /// `domain_socket_path`: the core's IPC socket.
    pub domain_socket_path: PathBuf,
}

/// Why the CLI client could not do it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No IPC info file this user may read: the core is not running in that root, or the
    /// user is not the one running it.
    #[error(
        "no Greengrass CLI auth information readable in {}: is the core running with this --root, as this user?",
        dir.display()
    )]
    NoIpcInfo {
        /// The directory looked in.
        dir: PathBuf,
    },
    /// The IPC info file is not valid JSON of the expected shape.
    #[error("{} is not a CLI IPC info file: {why}", path.display())]
    BadIpcInfo {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The socket could not be reached or broke.
    #[error("IPC connection to {}: {source}", socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The core refused the token (a core restarted since the file was read?).
    #[error("the core refused the CLI auth token")]
    Refused,
    /// The core answered something this client does not understand.
    #[error("IPC protocol error: {0}")]
    Protocol(String),
    /// The core answered the call with an error.
    #[error("{0}")]
    Service(ServiceError),
    /// No answer in time.
    #[error("no answer from the core within {0:?}")]
    Timeout(Duration),
}

/// The principal the nucleus gives a CLI client id (`greengrass-cli#user-1000`).
pub fn principal(client_id: &str) -> String {
    format!("{CLI_CLIENT_PREFIX}{client_id}")
}

fn user_client_id() -> String {
    format!("user-{}", rustix::process::geteuid().as_raw())
}

fn group_client_id() -> String {
    format!("group-{}", rustix::process::getegid().as_raw())
}

/// Issues the CLI token of the user running the core and writes
/// `{root}/cli_ipc_info/user-{uid}` (0600, in a 0700 directory; older files are removed, as
/// the nucleus revokes outdated tokens). Returns the file written.
pub fn write_ipc_info(root: &Path, socket: &Path, tokens: &Tokens) -> std::io::Result<PathBuf> {
    let dir = root.join(IPC_INFO_DIR);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::remove_file(&path)?;
        }
    }
    let client_id = user_client_id();
    let info = IpcInfo { cli_auth_token: tokens.issue(&principal(&client_id)), domain_socket_path: socket.to_owned() };
    let path = dir.join(&client_id);
    let tmp = dir.join(format!(".{client_id}.tmp"));
    {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&serde_json::to_vec(&info).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Reads the IPC info for this user from `{root}/cli_ipc_info`: `user-{euid}`, else
/// `group-{egid}`, else any readable file there (the Greengrass CLI's order).
pub fn read_ipc_info(root: &Path) -> Result<IpcInfo, CliError> {
    let dir = root.join(IPC_INFO_DIR);
    let mut candidates = vec![dir.join(user_client_id()), dir.join(group_client_id())];
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut others: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        others.sort();
        candidates.extend(others);
    }
    for path in candidates {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        return serde_json::from_slice(&bytes).map_err(|e| CliError::BadIpcInfo { path, why: e.to_string() });
    }
    Err(CliError::NoIpcInfo { dir })
}

/// A minimal one-call-at-a-time IPC client for the CLI subcommands (components use
/// `kit::ipc`, which this crate does not depend on).
#[derive(Debug)]
pub struct CliClient {
    stream: UnixStream,
    socket: PathBuf,
    codec: FrameCodec,
    buf: BytesMut,
    next: Option<StreamId>,
    timeout: Duration,
}

impl CliClient {
    /// Connects to the socket in `info` and completes the handshake with its token.
    pub async fn connect(info: &IpcInfo, timeout: Duration) -> Result<Self, CliError> {
        let socket = info.domain_socket_path.clone();
        let stream = tokio::time::timeout(timeout, UnixStream::connect(&socket))
            .await
            .map_err(|_| CliError::Timeout(timeout))?
            .map_err(|source| CliError::Io { socket: socket.clone(), source })?;
        let mut client = Self {
            stream,
            socket,
            codec: FrameCodec::new(),
            buf: BytesMut::new(),
            next: Some(StreamId::FIRST),
            timeout,
        };
        client.send(&RpcMessage::connect(&info.cli_auth_token)).await?;
        let ack = client.receive().await?;
        if ack.message_type != MessageType::ConnectAck {
            return Err(CliError::Protocol(format!("expected CONNECT_ACK, got {:?}", ack.message_type)));
        }
        if !ack.is_connection_accepted() {
            return Err(CliError::Refused);
        }
        Ok(client)
    }

    /// Calls operation `O` and waits for its response.
    pub async fn call<O: Operation>(&mut self, request: &O::Request) -> Result<O::Response, CliError> {
        let stream = self.next.ok_or_else(|| CliError::Protocol("stream ids exhausted".into()))?;
        self.next = stream.next();
        let json = serde_json::to_vec(request).map_err(|e| CliError::Protocol(e.to_string()))?;
        self.send(&RpcMessage::request(stream, O::NAME, O::REQUEST_TYPE, Bytes::from(json))).await?;
        loop {
            let m = self.receive().await?;
            if m.stream_id.is_connection() {
                match m.message_type {
                    MessageType::Ping => self.send(&RpcMessage::ping_response(&m)).await?,
                    MessageType::PingResponse => {}
                    other => return Err(CliError::Protocol(format!("the core sent {other:?}"))),
                }
                continue;
            }
            if m.stream_id != stream {
                continue;
            }
            return match m.message_type {
                MessageType::ApplicationMessage => {
                    serde_json::from_slice(&m.payload).map_err(|e| CliError::Protocol(format!("bad response: {e}")))
                }
                MessageType::ApplicationError => Err(CliError::Service(ServiceError::from_rpc(&m))),
                other => Err(CliError::Protocol(format!("unexpected {other:?}"))),
            };
        }
    }

    async fn send(&mut self, m: &RpcMessage) -> Result<(), CliError> {
        let mut out = BytesMut::new();
        self.codec.encode(&m.to_message(), &mut out).map_err(|e| CliError::Protocol(e.to_string()))?;
        self.stream.write_all(&out).await.map_err(|source| CliError::Io { socket: self.socket.clone(), source })
    }

    async fn receive(&mut self) -> Result<RpcMessage, CliError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(m) = self.codec.decode(&mut self.buf).map_err(|e| CliError::Protocol(e.to_string()))? {
                return RpcMessage::from_message(m).map_err(|e| CliError::Protocol(e.to_string()));
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| CliError::Timeout(self.timeout))?
                .map_err(|source| CliError::Io { socket: self.socket.clone(), source })?;
            if read == 0 {
                let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the core closed the connection");
                return Err(CliError::Io { socket: self.socket.clone(), source: eof });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipc_info_file_is_private_and_names_a_cli_principal() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::default();
        let path = write_ipc_info(dir.path(), Path::new("/s/ipc.socket"), &tokens).unwrap();
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), user_client_id());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(dir.path().join(IPC_INFO_DIR)).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let info = read_ipc_info(dir.path()).unwrap();
        assert_eq!(info.domain_socket_path, Path::new("/s/ipc.socket"));
        let who = tokens.component(&info.cli_auth_token).unwrap();
        assert_eq!(who, principal(&user_client_id()));
        assert!(who.starts_with("greengrass-cli#user-"));
        // A second start replaces the token: the old one stops working.
        write_ipc_info(dir.path(), Path::new("/s/ipc.socket"), &tokens).unwrap();
        assert_eq!(tokens.component(&info.cli_auth_token), None);
    }

    #[test]
    fn missing_and_malformed_ipc_info_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_ipc_info(dir.path()), Err(CliError::NoIpcInfo { .. })));
        std::fs::create_dir(dir.path().join(IPC_INFO_DIR)).unwrap();
        std::fs::write(dir.path().join(IPC_INFO_DIR).join(user_client_id()), b"{not json").unwrap();
        assert!(matches!(read_ipc_info(dir.path()), Err(CliError::BadIpcInfo { .. })));
    }
}
