//! Modbus answers from the pump plant, through tokio-modbus's response decoder and what the
//! sensor and the controller make of the registers and bits.

use bytes::Bytes;
use pump_controller::PlantState;
use pump_map::{Coil, Measurement, Measurements, Setpoint, Setpoints, Status};
use pump_sensor::reading::{Snapshot, decode, poll_sizes, telemetry_row};
use tokio_modbus::Response;

use crate::Outcome;

/// Feeds `data` as the response PDUs of one poll, each prefixed by its length in one byte, to
/// tokio-modbus's response decoder (`Response::try_from`, what the TCP client runs on every
/// answer), then hands the registers and bits on as the client does (a response of another
/// function is an error; bits are cut to the quantity asked for) to:
/// - the sensor's poll (input registers, discrete inputs, coils → `reading::decode` → the
///   telemetry row), for the first three PDUs;
/// - the controller's read-back (holding register, coils → `PlantState::from_answers`), for
///   the first two;
/// - the register map's `Measurements::from_registers` and `Setpoints::from_registers` on
///   the first PDU's registers.
///
/// Checks: a reading's values are the register values at the register's resolution (they
/// encode back to the words read, clamped to the transmitter range) and its telemetry row is
/// all JSON numbers and booleans; the controller's speed is a setpoint in range; setpoints
/// that decode encode back to the same words.
pub fn modbus_response(data: &[u8]) -> Outcome {
    let answers = pdus(data);
    let words = |i: usize| match answers.get(i) {
        Some(Some(Response::ReadInputRegisters(w) | Response::ReadHoldingRegisters(w))) => Some(w.clone()),
        _ => None,
    };
    let bits = |i: usize, count: u16| match answers.get(i) {
        Some(Some(Response::ReadDiscreteInputs(b) | Response::ReadCoils(b))) => {
            Some(b.iter().copied().take(usize::from(count)).collect::<Vec<bool>>())
        }
        _ => None,
    };
    let mut accepted = false;

    // The sensor: 04 input registers, 02 discrete inputs, 01 coils.
    let (_, status_count, coil_count) = poll_sizes();
    let sensor = match (answers.first(), answers.get(1), answers.get(2)) {
        (
            Some(Some(Response::ReadInputRegisters(inputs))),
            Some(Some(Response::ReadDiscreteInputs(_))),
            Some(Some(Response::ReadCoils(_))),
        ) => Some(Snapshot {
            inputs: inputs.clone(),
            status: bits(1, status_count).unwrap_or_default(),
            coils: bits(2, coil_count).unwrap_or_default(),
        }),
        _ => None,
    };
    if let Some(snapshot) = sensor
        && let Ok(reading) = decode(7, 1_700_000_000_000, &snapshot)
    {
        accepted = true;
        let clamped: Vec<u16> =
            Measurements::from_registers(&snapshot.inputs).expect("a decoded poll's registers decode").to_registers();
        assert_eq!(reading.m.to_registers(), clamped, "a reading holds the values the registers hold");
        assert_eq!(reading.running, snapshot.status[usize::from(Status::Running.address())]);
        assert_eq!(reading.bypass_open, snapshot.coils[usize::from(Coil::BypassOpen.address())]);
        let row = telemetry_row(&reading);
        assert_eq!(row.values.len(), 1 + Measurement::ALL.len() + 2, "seq, every measurement, two flags");
        assert!(row.values.values().all(|v| v.is_number() || v.is_boolean()), "{:?}", row.values);
    }

    // The controller: 03 holding register (the speed setpoint), 01 coils.
    if let (Some(Some(Response::ReadHoldingRegisters(speed))), Some(Some(Response::ReadCoils(_)))) =
        (answers.first(), answers.get(1))
        && let Ok(state) =
            PlantState::from_answers(&speed[..speed.len().min(1)], &bits(1, Coil::ALL.len() as u16).unwrap_or_default())
    {
        accepted = true;
        let spec = Setpoint::SpeedRpm.spec();
        assert!((spec.min..=spec.max).contains(&f64::from(state.speed_rpm)), "speed {}", state.speed_rpm);
        assert_eq!(spec.encode(f64::from(state.speed_rpm)), Ok(speed[0]), "the speed is the register's");
    }

    // The map on the first answer's registers.
    if let Some(words) = words(0) {
        let _ = Measurements::from_registers(&words);
        if let Ok(setpoints) = Setpoints::from_registers(&words) {
            accepted = true;
            assert_eq!(setpoints.to_registers(), words, "setpoints in range encode back to their words");
        }
    }
    Outcome::of(accepted)
}

/// The length-prefixed PDUs of `data`, each decoded (`None` when tokio-modbus refuses it).
fn pdus(mut data: &[u8]) -> Vec<Option<Response>> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        out.push(Response::try_from(Bytes::copy_from_slice(&rest[..len])).ok());
        data = &rest[len..];
    }
    out
}
