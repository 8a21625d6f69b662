//! One poll's Modbus words and bits → a [`pump_types::Reading`] → a telemetry row. Pure.
//!
//! Values are rounded to their register's resolution (a count of 413 at 0.1 m³/h reads
//! `41.3`, not `41.300000000000004`): the register holds no more precision, and the shorter
//! numbers keep telemetry within fewer 5 KiB billing units.

use pump_map::{Coil, MapError, Measurement, Measurements, Status, Table};
use pump_types::{PAYLOAD_VERSION, Reading};
use serde_json::{Map, Value};

/// The member of a telemetry row that carries [`Reading::seq`].
pub const SEQ_KEY: &str = "seq";

/// What one poll read: the whole input register table, the status bits and the coils.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Input registers from address 0 (all of [`Measurement::ALL`]).
    pub inputs: Vec<u16>,
    /// Discrete inputs from address 0 (all of [`Status::ALL`]).
    pub status: Vec<bool>,
    /// Coils from address 0 (all of [`Coil::ALL`]).
    pub coils: Vec<bool>,
}

/// A poll answer that does not fit the register map (a plant of another map version).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The input registers do not decode.
    #[error("input registers: {0}")]
    Registers(#[from] MapError),
    /// Fewer bits than the map has.
    #[error("{} table: got {got} bits, the map has {want}", table.name())]
    Bits {
        /// Which table.
        table: Table,
        /// Bits received.
        got: usize,
        /// Bits expected.
        want: usize,
    },
}

/// How many registers, status bits and coils a poll reads.
pub fn poll_sizes() -> (u16, u16, u16) {
    (Measurement::ALL.len() as u16, Status::ALL.len() as u16, Coil::ALL.len() as u16)
}

fn bits(table: Table, bits: &[bool], want: usize) -> Result<(), DecodeError> {
    if bits.len() < want { Err(DecodeError::Bits { table, got: bits.len(), want }) } else { Ok(()) }
}

/// Decodes one poll taken at `ts` (epoch ms) as reading number `seq`.
pub fn decode(seq: u64, ts: u64, snapshot: &Snapshot) -> Result<Reading, DecodeError> {
    let m = Measurements::from_registers(&snapshot.inputs)?;
    bits(Table::DiscreteInput, &snapshot.status, Status::ALL.len())?;
    bits(Table::Coil, &snapshot.coils, Coil::ALL.len())?;
    Ok(Reading {
        v: PAYLOAD_VERSION,
        seq,
        ts,
        m: tidy(m),
        running: snapshot.status[usize::from(Status::Running.address())],
        bypass_open: snapshot.coils[usize::from(Coil::BypassOpen.address())],
    })
}

/// Rounds every value to its register's resolution.
fn tidy(mut m: Measurements) -> Measurements {
    for &point in Measurement::ALL {
        let decimals = (-point.spec().resolution.log10()).round().max(0.0) as i32;
        let scale = 10f64.powi(decimals);
        m.set(point, (m.get(point) * scale).round() / scale);
    }
    m
}

/// The reading as a telemetry row for `kit::batch`: `seq`, the measurements as top-level
/// members (so the per-measurement deadband applies to them), `running`, `bypass_open`. The
/// batcher writes `ts` first.
pub fn telemetry_row(reading: &Reading) -> kit::batch::Reading {
    let mut values = Map::new();
    values.insert(SEQ_KEY.into(), reading.seq.into());
    if let Ok(Value::Object(m)) = serde_json::to_value(reading.m) {
        values.extend(m);
    }
    values.insert("running".into(), reading.running.into());
    values.insert("bypass_open".into(), reading.bypass_open.into());
    kit::batch::Reading { ts: reading.ts, values }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plant_like() -> Measurements {
        let mut m = Measurements::default();
        for (point, value) in [
            (Measurement::SpeedRpm, 2901.0),
            (Measurement::FlowM3h, 41.3),
            (Measurement::SuctionPressureKpa, -12.5),
            (Measurement::DischargePressureKpa, 509.2),
            (Measurement::HeadM, 50.03),
            (Measurement::MotorCurrentA, 33.21),
            (Measurement::BearingTempC, -3.4),
            (Measurement::VibrationMmS, 1.61),
        ] {
            m.set(point, value);
        }
        m
    }

    fn snapshot(m: &Measurements) -> Snapshot {
        Snapshot { inputs: m.to_registers(), status: vec![true, true, false, false, false], coils: vec![true, false] }
    }

    #[test]
    fn a_poll_decodes_to_a_versioned_reading_with_values_at_register_resolution() {
        let m = plant_like();
        let r = decode(7, 1_700_000_000_000, &snapshot(&m)).unwrap();
        assert_eq!((r.v, r.seq, r.ts, r.running, r.bypass_open), (1, 7, 1_700_000_000_000, true, false));
        assert_eq!(r.m, m, "every value equals the decimal the register holds");
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"flow_m3h\":41.3,"), "{text}");
        assert!(text.contains("\"suction_pressure_kpa\":-12.5,"), "{text}");
        assert_eq!(pump_types::parse::<Reading>(text.as_bytes()).unwrap(), r);
    }

    #[test]
    fn running_comes_from_the_status_bit_and_bypass_from_its_coil() {
        let m = plant_like();
        let mut s = snapshot(&m);
        s.status[usize::from(Status::Running.address())] = false;
        s.coils = vec![true, true];
        let r = decode(1, 1, &s).unwrap();
        assert_eq!((r.running, r.bypass_open), (false, true));
    }

    #[test]
    fn answers_that_do_not_fit_the_map_are_errors_not_readings() {
        let m = plant_like();
        let mut short = snapshot(&m);
        short.inputs.pop();
        assert!(matches!(decode(1, 1, &short), Err(DecodeError::Registers(_))));
        let mut few_bits = snapshot(&m);
        few_bits.status.truncate(2);
        assert_eq!(decode(1, 1, &few_bits), Err(DecodeError::Bits { table: Table::DiscreteInput, got: 2, want: 5 }));
        let mut no_coils = snapshot(&m);
        no_coils.coils.clear();
        assert!(matches!(decode(1, 1, &no_coils), Err(DecodeError::Bits { table: Table::Coil, .. })));
    }

    #[test]
    fn the_telemetry_row_flattens_the_measurements_after_seq() {
        let r = decode(42, 5, &snapshot(&plant_like())).unwrap();
        let row = telemetry_row(&r);
        assert_eq!(row.ts, 5);
        let keys: Vec<&str> = row.values.keys().map(String::as_str).collect();
        assert_eq!(keys[0], "seq");
        assert_eq!(&keys[1..13], Measurement::ALL.iter().map(|m| m.name()).collect::<Vec<_>>());
        assert_eq!(&keys[13..], ["running", "bypass_open"]);
        assert_eq!(row.values["seq"], 42);
        assert_eq!(row.values["flow_m3h"], json!(41.3));
        assert!(!row.values.contains_key("ts"), "the batcher owns ts");
    }

    #[test]
    fn poll_sizes_cover_each_table_whole() {
        assert_eq!(poll_sizes(), (12, 5, 2));
    }
}
