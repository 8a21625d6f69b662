//! The plant over Modbus TCP (tokio-modbus, the `pump-map` register map): read back the
//! three commands, write the ones that differ. The only I/O with the pump.
//!
//! A transport failure drops the connection; the next request connects again. Every request
//! has a timeout, so a plant that stops answering cannot stall the controller.

use std::net::SocketAddr;
use std::time::Duration;

use pump_map::{Coil, Setpoint};
use tokio_modbus::client::{Context, Reader as _, Writer as _};
use tokio_modbus::{ExceptionCode, Slave};

use crate::settings::Command;

/// What the plant's commands read back as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlantState {
    /// The speed setpoint holding register.
    pub speed_rpm: u16,
    /// The run coil.
    pub run: bool,
    /// The bypass valve coil.
    pub bypass_open: bool,
}

impl PlantState {
    /// As the commands that would produce it.
    pub fn as_command(&self) -> Command {
        Command { speed_rpm: self.speed_rpm, run: self.run, bypass_open: self.bypass_open }
    }

    /// The state from the plant's answers to [`PlantLink::read`]'s two requests: the holding
    /// register(s) from the speed setpoint's address, and the coils from address 0. An answer
    /// that does not fit the map (no register, a setpoint out of range, too few coils) is
    /// [`PlantError::BadData`]. Pure, so the fuzz checks feed it arbitrary answers.
    pub fn from_answers(words: &[u16], coils: &[bool]) -> Result<PlantState, PlantError> {
        let word = *words.first().ok_or_else(|| bad_data(READ_SPEED, "no register in the answer".into()))?;
        let speed = Setpoint::SpeedRpm.spec().decode_checked(word).map_err(|e| bad_data(READ_SPEED, e.to_string()))?;
        let coil = |which: Coil| {
            coils
                .get(usize::from(which.address()))
                .copied()
                .ok_or_else(|| bad_data(READ_COILS, format!("{} coils in the answer", coils.len())))
        };
        Ok(PlantState { speed_rpm: speed.round() as u16, run: coil(Coil::Run)?, bypass_open: coil(Coil::BypassOpen)? })
    }
}

const READ_SPEED: &str = "read speed setpoint";
const READ_COILS: &str = "read coils";

fn bad_data(what: &'static str, detail: String) -> PlantError {
    PlantError::BadData { what, detail }
}

/// A Modbus request that failed, by what to do next.
#[derive(Debug, thiserror::Error)]
pub enum PlantError {
    /// No connection, a transport error or no answer in time: try again later.
    #[error("plant unreachable: {0}")]
    Unreachable(String),
    /// The plant answered with a Modbus exception: it refused the request.
    #[error("plant refused {what}: Modbus exception {code}")]
    Exception {
        /// The request.
        what: &'static str,
        /// The exception.
        code: ExceptionCode,
    },
    /// The answer does not fit the register map (wrong length, value out of range).
    #[error("plant answered {what} with unexpected data: {detail}")]
    BadData {
        /// The request.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// One Modbus request.
#[derive(Debug, Clone, Copy)]
enum Op {
    ReadRegisters(u16, u16),
    ReadCoils(u16, u16),
    WriteRegister(u16, u16),
    WriteCoil(u16, bool),
}

/// Its answer.
#[derive(Debug)]
enum Answer {
    Words(Vec<u16>),
    Bits(Vec<bool>),
    Done,
}

/// The connection to the plant.
pub struct PlantLink {
    address: SocketAddr,
    unit: u8,
    timeout: Duration,
    context: Option<Context>,
}

impl std::fmt::Debug for PlantLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlantLink")
            .field("address", &self.address)
            .field("connected", &self.context.is_some())
            .finish_non_exhaustive()
    }
}

impl PlantLink {
    /// A link to `address` (not connected yet).
    pub fn new(address: SocketAddr, unit: u8, timeout: Duration) -> Self {
        PlantLink { address, unit, timeout, context: None }
    }

    /// The plant's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    async fn context(&mut self) -> Result<&mut Context, PlantError> {
        if self.context.is_none() {
            let connect = tokio_modbus::client::tcp::connect_slave(self.address, Slave(self.unit));
            let context = tokio::time::timeout(self.timeout, connect)
                .await
                .map_err(|_| {
                    PlantError::Unreachable(format!("no connection to {} within {:?}", self.address, self.timeout))
                })?
                .map_err(|e| PlantError::Unreachable(format!("connecting to {}: {e}", self.address)))?;
            self.context = Some(context);
        }
        self.context.as_mut().ok_or_else(|| PlantError::Unreachable("not connected".into()))
    }

    /// Runs one request with the timeout; a transport failure drops the connection.
    async fn request(&mut self, what: &'static str, op: Op) -> Result<Answer, PlantError> {
        let timeout = self.timeout;
        let context = self.context().await?;
        let call = async {
            match op {
                Op::ReadRegisters(address, count) => {
                    context.read_holding_registers(address, count).await.map(|r| r.map(Answer::Words))
                }
                Op::ReadCoils(address, count) => context.read_coils(address, count).await.map(|r| r.map(Answer::Bits)),
                Op::WriteRegister(address, word) => {
                    context.write_single_register(address, word).await.map(|r| r.map(|()| Answer::Done))
                }
                Op::WriteCoil(address, on) => {
                    context.write_single_coil(address, on).await.map(|r| r.map(|()| Answer::Done))
                }
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(code))) => Err(PlantError::Exception { what, code }),
            Ok(Err(e)) => {
                self.context = None;
                Err(PlantError::Unreachable(format!("{what}: {e}")))
            }
            Err(_) => {
                self.context = None;
                Err(PlantError::Unreachable(format!("{what}: no answer within {timeout:?}")))
            }
        }
    }

    /// Reads the speed setpoint and both coils.
    pub async fn read(&mut self) -> Result<PlantState, PlantError> {
        let Answer::Words(words) = self.request(READ_SPEED, Op::ReadRegisters(Setpoint::SpeedRpm.address(), 1)).await?
        else {
            return Err(bad_data(READ_SPEED, "not registers".into()));
        };
        let Answer::Bits(coils) = self.request(READ_COILS, Op::ReadCoils(0, Coil::ALL.len() as u16)).await? else {
            return Err(bad_data(READ_COILS, "not coils".into()));
        };
        PlantState::from_answers(&words, &coils)
    }

    /// Writes each command that differs from `current`: the speed first (a reduction takes
    /// effect before anything else), then the bypass, then the run coil. Returns how many
    /// writes were made.
    pub async fn write(&mut self, current: &PlantState, target: &Command) -> Result<usize, PlantError> {
        let mut writes = 0;
        if target.speed_rpm != current.speed_rpm {
            let word = Setpoint::SpeedRpm
                .spec()
                .encode(f64::from(target.speed_rpm))
                .map_err(|e| PlantError::BadData { what: "write speed setpoint", detail: e.to_string() })?;
            let address = Setpoint::SpeedRpm.address();
            self.request("write speed setpoint", Op::WriteRegister(address, word)).await?;
            writes += 1;
        }
        if target.bypass_open != current.bypass_open {
            let (address, on) = (Coil::BypassOpen.address(), target.bypass_open);
            self.request("write bypass coil", Op::WriteCoil(address, on)).await?;
            writes += 1;
        }
        if target.run != current.run {
            let (address, on) = (Coil::Run.address(), target.run);
            self.request("write run coil", Op::WriteCoil(address, on)).await?;
            writes += 1;
        }
        Ok(writes)
    }
}
