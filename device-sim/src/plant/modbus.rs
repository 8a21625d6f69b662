//! The plant's Modbus TCP server: requests decoded by tokio-modbus, answered from the model
//! through the register map of `pump-map` (Modbus Application Protocol v1.1b3).
//!
//! Exceptions: an address or range outside a table is 02 (Illegal Data Address); a zero or
//! oversize quantity or an out-of-range setpoint is 03 (Illegal Data Value); a function the plant
//! does not implement is 01 (Illegal Function). A refused request changes nothing.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use pump_map::{Coil, MapError, Measurement, Setpoint, Status};
use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};
use tokio_util::sync::CancellationToken;

use super::{SharedPlant, lock};
use crate::plant::model::PlantModel;

/// One service shared by every connection; each request locks the model briefly.
struct PlantService {
    plant: SharedPlant,
}

impl tokio_modbus::server::Service for PlantService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        ready(handle(&mut lock(&self.plant), req))
    }
}

/// Serves Modbus TCP on `listener` until `cancel` fires; connections are served concurrently.
pub(super) async fn run(listener: TcpListener, plant: SharedPlant, cancel: CancellationToken) {
    let server = Server::new(listener);
    let service = Arc::new(PlantService { plant });
    let on_connected = |stream, addr| {
        let service = Arc::clone(&service);
        async move { accept_tcp_connection(stream, addr, |_| Ok(Some(Arc::clone(&service)))) }
    };
    let on_process_error = |err: std::io::Error| tracing::debug!("modbus connection ended: {err}");
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            result = server.serve(&on_connected, on_process_error) => {
                // `serve` only returns when accept fails (e.g. out of file descriptors): keep
                // listening after a pause rather than losing the plant's interface.
                if let Err(err) = result {
                    tracing::warn!("modbus accept failed: {err}; retrying");
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

fn exception(err: MapError) -> ExceptionCode {
    match err {
        MapError::UnknownAddress { .. } => ExceptionCode::IllegalDataAddress,
        MapError::BadQuantity { .. } | MapError::OutOfRange { .. } => ExceptionCode::IllegalDataValue,
    }
}

/// Answers one request against the model. Writes are checked whole before anything changes.
pub(super) fn handle(model: &mut PlantModel, req: Request<'_>) -> Result<Response, ExceptionCode> {
    match req {
        Request::ReadInputRegisters(start, count) => {
            let points = Measurement::block(start, count).map_err(exception)?;
            let m = model.measurements();
            Ok(Response::ReadInputRegisters(points.iter().map(|&p| p.spec().encode_saturating(m.get(p))).collect()))
        }
        Request::ReadHoldingRegisters(start, count) => {
            let points = Setpoint::block(start, count).map_err(exception)?;
            let s = model.setpoints();
            Ok(Response::ReadHoldingRegisters(points.iter().map(|&p| p.spec().encode_saturating(s.get(p))).collect()))
        }
        Request::WriteSingleRegister(address, word) => {
            write_registers(model, address, &[word])?;
            Ok(Response::WriteSingleRegister(address, word))
        }
        Request::WriteMultipleRegisters(start, words) => {
            write_registers(model, start, &words)?;
            Ok(Response::WriteMultipleRegisters(start, words.len() as u16))
        }
        Request::ReadCoils(start, count) => {
            let points = Coil::block(start, count).map_err(exception)?;
            Ok(Response::ReadCoils(points.iter().map(|&c| model.coil(c)).collect()))
        }
        Request::ReadDiscreteInputs(start, count) => {
            let points = Status::block(start, count).map_err(exception)?;
            Ok(Response::ReadDiscreteInputs(points.iter().map(|&s| model.status(s)).collect()))
        }
        Request::WriteSingleCoil(address, on) => {
            let coil = Coil::from_address(address).map_err(exception)?;
            model.set_coil(coil, on);
            Ok(Response::WriteSingleCoil(address, on))
        }
        Request::WriteMultipleCoils(start, bits) => {
            let count = u16::try_from(bits.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
            let coils = Coil::block(start, count).map_err(exception)?;
            for (&c, &on) in coils.iter().zip(bits.iter()) {
                model.set_coil(c, on);
            }
            Ok(Response::WriteMultipleCoils(start, count))
        }
        _ => Err(ExceptionCode::IllegalFunction),
    }
}

fn write_registers(model: &mut PlantModel, start: u16, words: &[u16]) -> Result<(), ExceptionCode> {
    let count = u16::try_from(words.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
    let points = Setpoint::block(start, count).map_err(exception)?;
    let mut values = Vec::with_capacity(points.len());
    for (&p, &w) in points.iter().zip(words) {
        values.push((p, p.spec().decode_checked(w).map_err(exception)?));
    }
    for (p, v) in values {
        model.set_setpoint(p, v).map_err(exception)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::plant::model::PlantParams;

    fn model() -> PlantModel {
        PlantModel::new(PlantParams::default(), 9)
    }

    #[test]
    fn reads_outside_a_table_are_illegal_addresses_and_bad_quantities_illegal_values() {
        use ExceptionCode::{IllegalDataAddress as Address, IllegalDataValue as Value, IllegalFunction as Function};
        let mut m = model();
        let table: Vec<(Request<'static>, ExceptionCode)> = vec![
            (Request::ReadInputRegisters(12, 1), Address),
            (Request::ReadInputRegisters(10, 3), Address),
            (Request::ReadInputRegisters(0, 0), Value),
            (Request::ReadInputRegisters(0, 126), Value),
            (Request::ReadHoldingRegisters(2, 1), Address),
            (Request::ReadCoils(0, 3), Address),
            (Request::ReadDiscreteInputs(5, 1), Address),
            (Request::WriteSingleCoil(2, true), Address),
            (Request::WriteSingleRegister(2, 1), Address),
            (Request::WriteSingleRegister(0, 3001), Value),
            (Request::WriteSingleRegister(1, 5), Value),
            (Request::WriteMultipleRegisters(0, Cow::Owned(vec![1000, 2000])), Value),
            (Request::WriteMultipleRegisters(1, Cow::Owned(vec![100, 100])), Address),
            (Request::WriteMultipleCoils(1, Cow::Owned(vec![true, true])), Address),
            (Request::MaskWriteRegister(0, 0, 0), Function),
        ];
        for (req, code) in table {
            let text = format!("{req:?}");
            assert_eq!(handle(&mut m, req), Err(code), "{text}");
        }
        assert_eq!(m.setpoints(), model().setpoints(), "refused writes change nothing");
        assert!(m.coil(Coil::Run) && !m.coil(Coil::BypassOpen));
    }

    #[test]
    fn registers_serve_the_map_encoding_and_writes_apply() {
        let mut m = model();
        let Ok(Response::ReadInputRegisters(words)) = handle(&mut m, Request::ReadInputRegisters(0, 12)) else {
            panic!("read failed");
        };
        assert_eq!(words, m.measurements().to_registers());
        let Ok(Response::ReadInputRegisters(tail)) = handle(&mut m, Request::ReadInputRegisters(9, 3)) else {
            panic!("read failed");
        };
        assert_eq!(tail, words[9..]);

        let reply = handle(&mut m, Request::WriteMultipleRegisters(0, Cow::Owned(vec![1800, 500])));
        assert_eq!(reply, Ok(Response::WriteMultipleRegisters(0, 2)));
        assert_eq!(
            handle(&mut m, Request::ReadHoldingRegisters(0, 2)),
            Ok(Response::ReadHoldingRegisters(vec![1800, 500]))
        );
        assert_eq!(handle(&mut m, Request::WriteSingleCoil(1, true)), Ok(Response::WriteSingleCoil(1, true)));
        assert_eq!(
            handle(&mut m, Request::WriteMultipleCoils(0, Cow::Owned(vec![false]))),
            Ok(Response::WriteMultipleCoils(0, 1))
        );
        assert_eq!(handle(&mut m, Request::ReadCoils(0, 2)), Ok(Response::ReadCoils(vec![false, true])));
        let Ok(Response::ReadDiscreteInputs(bits)) = handle(&mut m, Request::ReadDiscreteInputs(0, 5)) else {
            panic!("read failed");
        };
        assert_eq!(bits, vec![true, false, false, false, false], "running, not at the new speed, no alarms");
    }
}
