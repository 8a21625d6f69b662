//! The pump plant's Modbus register map: the contract between the plant (`device-sim plant`) and
//! the components that read and drive it (sensor, controller).
//!
//! Everything here is data and arithmetic, no I/O, so both sides agree on addresses, units and
//! scaling from one source of truth. The readers depend on this crate, never on the simulator.
//!
//! # Layout
//! - Four tables, each numbered from address 0 with no gaps ([`Table`]):
//!   - input registers (function 04, read-only): the measurements, [`Measurement`];
//!   - holding registers (functions 03, 06, 16): the setpoints, [`Setpoint`];
//!   - coils (functions 01, 05, 15): the commands, [`Coil`];
//!   - discrete inputs (function 02, read-only): status and alarm bits, [`Status`].
//! - A register holds one value as a 16-bit integer count: `value = count × resolution`, signed
//!   (two's complement) where [`RegisterSpec::signed`] says so.
//! - Measurements saturate at their transmitter range when encoded (as a 4–20 mA transmitter
//!   clips); setpoints outside their range are refused ([`MapError::OutOfRange`]).
//! - [`Measurements`] and [`Setpoints`] are whole-table values with block encode/decode, for a
//!   reader that polls each table in one request.

use serde::{Deserialize, Serialize};

/// The largest number of registers one Modbus read may ask for (Modbus application protocol
/// v1.1b3, §6.3/6.4).
pub const MAX_READ_REGISTERS: u16 = 125;
/// The largest number of bits one Modbus read may ask for (§6.1/6.2).
pub const MAX_READ_BITS: u16 = 2000;

/// One of the four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Read-only 16-bit registers: measurements.
    InputRegister,
    /// Read/write 16-bit registers: setpoints.
    HoldingRegister,
    /// Read/write bits: commands.
    Coil,
    /// Read-only bits: status and alarms.
    DiscreteInput,
}

impl Table {
    /// The table's name as it appears in messages.
    pub fn name(self) -> &'static str {
        match self {
            Table::InputRegister => "input register",
            Table::HoldingRegister => "holding register",
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete input",
        }
    }
}

/// Why an address, a quantity or a value does not fit the map.
///
/// A Modbus server answers [`MapError::UnknownAddress`] with exception 02 (Illegal Data Address)
/// and the other two with exception 03 (Illegal Data Value); a client that gets them has a bug or
/// a wrong map version, retrying does not help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    /// The address, or part of the requested range, is not in the table.
    #[error("{} address {address} (quantity {count}) is outside the map (0..{len})", table.name())]
    UnknownAddress {
        /// The table asked for.
        table: Table,
        /// The first address asked for.
        address: u16,
        /// How many points were asked for.
        count: u16,
        /// How many points the table has.
        len: u16,
    },
    /// The quantity is zero or above the protocol's limit, or a block has the wrong length.
    #[error("bad quantity {count} for the {} table", table.name())]
    BadQuantity {
        /// The table asked for.
        table: Table,
        /// The quantity given.
        count: usize,
    },
    /// A value outside the point's range (or not a number).
    #[error("{name} = {value} {unit} is outside {min}..={max}")]
    OutOfRange {
        /// The point's name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The point's unit.
        unit: &'static str,
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
    },
}

/// How one register encodes a physical value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegisterSpec {
    /// The point's name (`snake_case`, unit suffixed), as used in JSON and the docs.
    pub name: &'static str,
    /// The register address (0-based protocol address).
    pub address: u16,
    /// The engineering unit.
    pub unit: &'static str,
    /// Engineering units per count: `value = count × resolution`.
    pub resolution: f64,
    /// Whether the count is a two's complement `i16`.
    pub signed: bool,
    /// Smallest value of the range (transmitter range for measurements, accepted range for setpoints).
    pub min: f64,
    /// Largest value of the range.
    pub max: f64,
}

impl RegisterSpec {
    /// Encodes `value`, refusing one outside `min..=max` (or NaN). For setpoints.
    pub fn encode(&self, value: f64) -> Result<u16, MapError> {
        if !(self.min..=self.max).contains(&value) {
            return Err(self.out_of_range(value));
        }
        Ok(self.count_of(value))
    }

    /// Encodes `value`, clamped to `min..=max` as a transmitter clips at its range ends; NaN (a
    /// failed sensor) reads as `min`. For measurements.
    pub fn encode_saturating(&self, value: f64) -> u16 {
        let value = if value.is_nan() { self.min } else { value.clamp(self.min, self.max) };
        self.count_of(value)
    }

    /// Decodes a count to engineering units, whatever the range.
    pub fn decode(&self, count: u16) -> f64 {
        let count = if self.signed { f64::from(count as i16) } else { f64::from(count) };
        count * self.resolution
    }

    /// Decodes a count and refuses a value outside `min..=max`. For setpoint writes.
    pub fn decode_checked(&self, count: u16) -> Result<f64, MapError> {
        let value = self.decode(count);
        if (self.min..=self.max).contains(&value) { Ok(value) } else { Err(self.out_of_range(value)) }
    }

    fn count_of(&self, value: f64) -> u16 {
        // The ranges are chosen to fit the count type, so the casts below never saturate.
        let count = (value / self.resolution).round();
        if self.signed { count as i16 as u16 } else { count as u16 }
    }

    fn out_of_range(&self, value: f64) -> MapError {
        MapError::OutOfRange { name: self.name, value, unit: self.unit, min: self.min, max: self.max }
    }
}

/// Returns `all[start..start + count]` when the whole range is in the table.
fn block<T>(table: Table, all: &[T], start: u16, count: u16, limit: u16) -> Result<&[T], MapError> {
    if count == 0 || count > limit {
        return Err(MapError::BadQuantity { table, count: usize::from(count) });
    }
    let len = all.len() as u16;
    let end = u32::from(start) + u32::from(count);
    if end > u32::from(len) {
        return Err(MapError::UnknownAddress { table, address: start, count, len });
    }
    Ok(&all[usize::from(start)..end as usize])
}

macro_rules! point_enum {
    (
        $(#[$meta:meta])* $name:ident, $table:expr, $limit:expr,
        { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every point of the table, in address order (the address is the index).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The table this point lives in.
            pub const TABLE: Table = $table;

            /// The point's name (`snake_case`), as used in JSON and the docs.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The point named `name`, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|p| p.name() == name)
            }

            /// The point's address in its table.
            pub fn address(self) -> u16 {
                self as u16
            }

            /// The point at `address`.
            pub fn from_address(address: u16) -> Result<Self, MapError> {
                Self::block(address, 1).map(|b| b[0])
            }

            /// The points of a read or write of `count` points from `start`: the whole range must
            /// be in the table, and `count` within the protocol's limit.
            pub fn block(start: u16, count: u16) -> Result<&'static [Self], MapError> {
                block(Self::TABLE, Self::ALL, start, count, $limit)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

point_enum!(
    /// A measurement: one input register each.
    Measurement, Table::InputRegister, MAX_READ_REGISTERS, {
        /// Shaft speed from the drive's encoder.
        SpeedRpm = "speed_rpm",
        /// Pump flow (meter on the pump discharge, upstream of the bypass tee).
        FlowM3h = "flow_m3h",
        /// Suction pressure, gauge (negative below atmospheric).
        SuctionPressureKpa = "suction_pressure_kpa",
        /// Discharge pressure, gauge.
        DischargePressureKpa = "discharge_pressure_kpa",
        /// Differential head, derived from the two pressures.
        HeadM = "head_m",
        /// The drive's line current.
        MotorCurrentA = "motor_current_a",
        /// Shaft power, from the drive's torque estimate.
        ShaftPowerKw = "shaft_power_kw",
        /// Hydraulic power, derived from flow and head.
        HydraulicPowerKw = "hydraulic_power_kw",
        /// Pump efficiency, hydraulic over shaft power.
        EfficiencyPct = "efficiency_pct",
        /// Drive-end bearing temperature.
        BearingTempC = "bearing_temp_c",
        /// Motor winding temperature.
        MotorTempC = "motor_temp_c",
        /// Bearing housing vibration velocity, RMS.
        VibrationMmS = "vibration_mm_s",
    }
);

point_enum!(
    /// A setpoint: one holding register each.
    Setpoint, Table::HoldingRegister, MAX_READ_REGISTERS, {
        /// Speed setpoint; the drive ramps toward it while the run coil is on.
        SpeedRpm = "speed_setpoint_rpm",
        /// Acceleration and deceleration ramp of the drive.
        RampRpmPerS = "ramp_rpm_per_s",
    }
);

point_enum!(
    /// A command bit: one coil each.
    Coil, Table::Coil, MAX_READ_BITS, {
        /// Run command: on runs the pump toward the speed setpoint, off ramps it down to a stop.
        Run = "run",
        /// Bypass valve: on opens the recirculation line from discharge back to suction.
        BypassOpen = "bypass_open",
    }
);

point_enum!(
    /// A status or alarm bit: one discrete input each.
    Status, Table::DiscreteInput, MAX_READ_BITS, {
        /// The shaft turns (the drive's speed is above 30 rpm).
        Running = "running",
        /// The run coil is on and the drive's ramp has reached the speed setpoint.
        AtSpeed = "at_speed",
        /// Bearing temperature above its alarm limit.
        BearingTempHigh = "bearing_temp_high",
        /// Vibration above its alarm limit.
        VibrationHigh = "vibration_high",
        /// Motor temperature above its alarm limit.
        MotorTempHigh = "motor_temp_high",
    }
);

const fn spec(
    name: &'static str,
    address: u16,
    unit: &'static str,
    resolution: f64,
    signed: bool,
    min: f64,
    max: f64,
) -> RegisterSpec {
    RegisterSpec { name, address, unit, resolution, signed, min, max }
}

/// The input registers, in address order (`MEASUREMENT_SPECS[m as usize]` is `m`'s).
const MEASUREMENT_SPECS: [RegisterSpec; 12] = [
    spec("speed_rpm", 0, "rpm", 1.0, false, 0.0, 4000.0),
    spec("flow_m3h", 1, "m3/h", 0.1, false, 0.0, 500.0),
    spec("suction_pressure_kpa", 2, "kPa", 0.1, true, -100.0, 1000.0),
    spec("discharge_pressure_kpa", 3, "kPa", 0.1, false, 0.0, 2500.0),
    spec("head_m", 4, "m", 0.01, false, 0.0, 250.0),
    spec("motor_current_a", 5, "A", 0.01, false, 0.0, 200.0),
    spec("shaft_power_kw", 6, "kW", 0.01, false, 0.0, 100.0),
    spec("hydraulic_power_kw", 7, "kW", 0.01, false, 0.0, 100.0),
    spec("efficiency_pct", 8, "%", 0.1, false, 0.0, 100.0),
    spec("bearing_temp_c", 9, "°C", 0.1, true, -40.0, 250.0),
    spec("motor_temp_c", 10, "°C", 0.1, true, -40.0, 250.0),
    spec("vibration_mm_s", 11, "mm/s", 0.01, false, 0.0, 50.0),
];

/// The holding registers, in address order.
const SETPOINT_SPECS: [RegisterSpec; 2] = [
    spec("speed_setpoint_rpm", 0, "rpm", 1.0, false, 0.0, 3000.0),
    spec("ramp_rpm_per_s", 1, "rpm/s", 1.0, false, 10.0, 1000.0),
];

impl Measurement {
    /// How this measurement is encoded.
    pub fn spec(self) -> &'static RegisterSpec {
        &MEASUREMENT_SPECS[self as usize]
    }
}

impl Setpoint {
    /// How this setpoint is encoded, and its accepted range.
    pub fn spec(self) -> &'static RegisterSpec {
        &SETPOINT_SPECS[self as usize]
    }
}

/// One value of every measurement, in engineering units.
///
/// The field names are the [`Measurement`] names, so the JSON form is the same as the map's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// See [`Measurement::SpeedRpm`].
    pub speed_rpm: f64,
    /// See [`Measurement::FlowM3h`].
    pub flow_m3h: f64,
    /// See [`Measurement::SuctionPressureKpa`].
    pub suction_pressure_kpa: f64,
    /// See [`Measurement::DischargePressureKpa`].
    pub discharge_pressure_kpa: f64,
    /// See [`Measurement::HeadM`].
    pub head_m: f64,
    /// See [`Measurement::MotorCurrentA`].
    pub motor_current_a: f64,
    /// See [`Measurement::ShaftPowerKw`].
    pub shaft_power_kw: f64,
    /// See [`Measurement::HydraulicPowerKw`].
    pub hydraulic_power_kw: f64,
    /// See [`Measurement::EfficiencyPct`].
    pub efficiency_pct: f64,
    /// See [`Measurement::BearingTempC`].
    pub bearing_temp_c: f64,
    /// See [`Measurement::MotorTempC`].
    pub motor_temp_c: f64,
    /// See [`Measurement::VibrationMmS`].
    pub vibration_mm_s: f64,
}

impl Measurements {
    fn slot(&mut self, m: Measurement) -> &mut f64 {
        match m {
            Measurement::SpeedRpm => &mut self.speed_rpm,
            Measurement::FlowM3h => &mut self.flow_m3h,
            Measurement::SuctionPressureKpa => &mut self.suction_pressure_kpa,
            Measurement::DischargePressureKpa => &mut self.discharge_pressure_kpa,
            Measurement::HeadM => &mut self.head_m,
            Measurement::MotorCurrentA => &mut self.motor_current_a,
            Measurement::ShaftPowerKw => &mut self.shaft_power_kw,
            Measurement::HydraulicPowerKw => &mut self.hydraulic_power_kw,
            Measurement::EfficiencyPct => &mut self.efficiency_pct,
            Measurement::BearingTempC => &mut self.bearing_temp_c,
            Measurement::MotorTempC => &mut self.motor_temp_c,
            Measurement::VibrationMmS => &mut self.vibration_mm_s,
        }
    }

    /// The value of `m`.
    pub fn get(&self, m: Measurement) -> f64 {
        // `slot` needs `&mut`; the struct is 12 floats, so a copy is the simplest shared path.
        let mut copy = *self;
        *copy.slot(m)
    }

    /// Sets the value of `m`.
    pub fn set(&mut self, m: Measurement, value: f64) {
        *self.slot(m) = value;
    }

    /// The whole input register table, each value saturated at its range.
    pub fn to_registers(&self) -> Vec<u16> {
        Measurement::ALL.iter().map(|&m| m.spec().encode_saturating(self.get(m))).collect()
    }

    /// Decodes the whole input register table (a read of every register from address 0).
    pub fn from_registers(words: &[u16]) -> Result<Self, MapError> {
        if words.len() != Measurement::ALL.len() {
            return Err(MapError::BadQuantity { table: Table::InputRegister, count: words.len() });
        }
        let mut out = Measurements::default();
        for (&m, &w) in Measurement::ALL.iter().zip(words) {
            out.set(m, m.spec().decode(w));
        }
        Ok(out)
    }
}

/// One value of every setpoint, in engineering units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Setpoints {
    /// See [`Setpoint::SpeedRpm`].
    pub speed_setpoint_rpm: f64,
    /// See [`Setpoint::RampRpmPerS`].
    pub ramp_rpm_per_s: f64,
}

impl Setpoints {
    /// The value of `s`.
    pub fn get(&self, s: Setpoint) -> f64 {
        match s {
            Setpoint::SpeedRpm => self.speed_setpoint_rpm,
            Setpoint::RampRpmPerS => self.ramp_rpm_per_s,
        }
    }

    /// Sets `s` after checking its range; on error nothing changes.
    pub fn set(&mut self, s: Setpoint, value: f64) -> Result<(), MapError> {
        s.spec().encode(value)?;
        match s {
            Setpoint::SpeedRpm => self.speed_setpoint_rpm = value,
            Setpoint::RampRpmPerS => self.ramp_rpm_per_s = value,
        }
        Ok(())
    }

    /// The whole holding register table. Values out of range are clamped (they cannot be set
    /// through [`Setpoints::set`]).
    pub fn to_registers(&self) -> Vec<u16> {
        Setpoint::ALL.iter().map(|&s| s.spec().encode_saturating(self.get(s))).collect()
    }

    /// Decodes the whole holding register table, refusing out-of-range values.
    pub fn from_registers(words: &[u16]) -> Result<Self, MapError> {
        if words.len() != Setpoint::ALL.len() {
            return Err(MapError::BadQuantity { table: Table::HoldingRegister, count: words.len() });
        }
        Ok(Setpoints {
            speed_setpoint_rpm: Setpoint::SpeedRpm.spec().decode_checked(words[0])?,
            ramp_rpm_per_s: Setpoint::RampRpmPerS.spec().decode_checked(words[1])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_the_table_index_and_names_are_unique() {
        fn check<T: Copy + Eq + std::fmt::Debug>(
            all: &[T],
            address: impl Fn(T) -> u16,
            name: impl Fn(T) -> &'static str,
        ) {
            for (i, &p) in all.iter().enumerate() {
                assert_eq!(usize::from(address(p)), i, "{p:?}");
            }
            let mut names: Vec<_> = all.iter().map(|&p| name(p)).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), all.len());
        }
        check(Measurement::ALL, Measurement::address, Measurement::name);
        check(Setpoint::ALL, Setpoint::address, Setpoint::name);
        check(Coil::ALL, Coil::address, Coil::name);
        check(Status::ALL, Status::address, Status::name);
        for &m in Measurement::ALL {
            assert_eq!(m.spec().address, m.address());
            assert_eq!(m.spec().name, m.name());
            assert_eq!(Measurement::from_name(m.name()), Some(m));
        }
        for &s in Setpoint::ALL {
            assert_eq!(s.spec().address, s.address());
            assert_eq!(s.spec().name, s.name());
        }
    }

    #[test]
    fn every_range_fits_its_count_type() {
        for spec in MEASUREMENT_SPECS.iter().chain(&SETPOINT_SPECS) {
            let (lo, hi) = if spec.signed { (f64::from(i16::MIN), f64::from(i16::MAX)) } else { (0.0, 65535.0) };
            assert!(spec.min / spec.resolution >= lo && spec.max / spec.resolution <= hi, "{}", spec.name);
            assert!(spec.min < spec.max, "{}", spec.name);
        }
    }

    #[test]
    fn values_round_trip_within_half_a_count() {
        // (point, value): ends of ranges, negatives, fractions.
        let table: &[(Measurement, f64)] = &[
            (Measurement::SpeedRpm, 0.0),
            (Measurement::SpeedRpm, 2900.4),
            (Measurement::SpeedRpm, 4000.0),
            (Measurement::FlowM3h, 100.26),
            (Measurement::SuctionPressureKpa, -35.27),
            (Measurement::SuctionPressureKpa, -100.0),
            (Measurement::SuctionPressureKpa, 1000.0),
            (Measurement::DischargePressureKpa, 2500.0),
            (Measurement::HeadM, 50.123),
            (Measurement::MotorCurrentA, 33.337),
            (Measurement::EfficiencyPct, 74.96),
            (Measurement::BearingTempC, -12.34),
            (Measurement::MotorTempC, 249.95),
            (Measurement::VibrationMmS, 1.805),
        ];
        for &(m, v) in table {
            let spec = m.spec();
            let count = spec.encode(v).unwrap();
            assert_eq!(count, spec.encode_saturating(v), "{m}");
            let back = spec.decode(count);
            assert!((back - v).abs() <= spec.resolution / 2.0 + 1e-9, "{m}: {v} -> {count} -> {back}");
        }
    }

    #[test]
    fn signed_registers_use_twos_complement() {
        let spec = Measurement::SuctionPressureKpa.spec();
        assert_eq!(spec.encode(-0.1).unwrap(), 0xFFFF);
        assert_eq!(spec.decode(0xFFFF), -0.1);
        assert_eq!(spec.encode(-100.0).unwrap(), (-1000i16) as u16);
        // An unsigned register reads the same bits as a large positive value.
        assert_eq!(Measurement::FlowM3h.spec().decode(0xFFFF), 6553.5);
    }

    #[test]
    fn measurements_saturate_at_the_transmitter_range_and_nan_reads_as_the_bottom() {
        let table: &[(Measurement, f64, f64)] = &[
            (Measurement::FlowM3h, -3.0, 0.0),
            (Measurement::FlowM3h, 900.0, 500.0),
            (Measurement::SuctionPressureKpa, -250.0, -100.0),
            (Measurement::BearingTempC, 400.0, 250.0),
            (Measurement::VibrationMmS, f64::NAN, 0.0),
            (Measurement::BearingTempC, f64::NAN, -40.0),
            (Measurement::SpeedRpm, f64::INFINITY, 4000.0),
        ];
        for &(m, v, expect) in table {
            let spec = m.spec();
            assert_eq!(spec.decode(spec.encode_saturating(v)), expect, "{m} {v}");
            assert!(matches!(spec.encode(v), Err(MapError::OutOfRange { .. })), "{m} {v}");
        }
    }

    #[test]
    fn setpoints_outside_their_range_are_refused() {
        let table: &[(Setpoint, u16, Result<f64, ()>)] = &[
            (Setpoint::SpeedRpm, 0, Ok(0.0)),
            (Setpoint::SpeedRpm, 1450, Ok(1450.0)),
            (Setpoint::SpeedRpm, 3000, Ok(3000.0)),
            (Setpoint::SpeedRpm, 3001, Err(())),
            (Setpoint::SpeedRpm, 65535, Err(())),
            (Setpoint::RampRpmPerS, 9, Err(())),
            (Setpoint::RampRpmPerS, 10, Ok(10.0)),
            (Setpoint::RampRpmPerS, 1000, Ok(1000.0)),
            (Setpoint::RampRpmPerS, 1001, Err(())),
        ];
        for &(s, count, expect) in table {
            let got = s.spec().decode_checked(count);
            match expect {
                Ok(v) => assert_eq!(got, Ok(v), "{s} {count}"),
                Err(()) => {
                    let err = got.unwrap_err();
                    assert!(matches!(err, MapError::OutOfRange { name, .. } if name == s.name()), "{s} {count}");
                    assert!(err.to_string().contains(s.name()), "{err}");
                }
            }
        }
        let mut sp = Setpoints { speed_setpoint_rpm: 100.0, ramp_rpm_per_s: 200.0 };
        assert!(sp.set(Setpoint::SpeedRpm, 5000.0).is_err());
        assert!(sp.set(Setpoint::SpeedRpm, f64::NAN).is_err());
        assert_eq!(sp.speed_setpoint_rpm, 100.0, "a refused value changes nothing");
        sp.set(Setpoint::SpeedRpm, 2000.0).unwrap();
        assert_eq!(sp.get(Setpoint::SpeedRpm), 2000.0);
    }

    #[test]
    fn blocks_must_lie_inside_their_table() {
        let n = Measurement::ALL.len() as u16;
        // (start, count, expected first point or error kind)
        // Ok: (first point, length); Err: which error.
        type Expect = Result<(Measurement, usize), &'static str>;
        let table: &[(u16, u16, Expect)] = &[
            (0, n, Ok((Measurement::SpeedRpm, n as usize))),
            (9, 3, Ok((Measurement::BearingTempC, 3))),
            (11, 1, Ok((Measurement::VibrationMmS, 1))),
            (11, 2, Err("address")),
            (n, 1, Err("address")),
            (100, 1, Err("address")),
            (u16::MAX, 125, Err("address")),
            (0, 0, Err("quantity")),
            (0, 126, Err("quantity")),
        ];
        for &(start, count, expect) in table {
            let got = Measurement::block(start, count);
            match expect {
                Ok((first, len)) => {
                    let b = got.unwrap();
                    assert_eq!((b[0], b.len()), (first, len), "{start}+{count}");
                }
                Err("address") => assert!(
                    matches!(got, Err(MapError::UnknownAddress { table: Table::InputRegister, .. })),
                    "{start}+{count}: {got:?}"
                ),
                Err(_) => assert!(matches!(got, Err(MapError::BadQuantity { .. })), "{start}+{count}: {got:?}"),
            }
        }
        assert_eq!(Coil::from_address(1), Ok(Coil::BypassOpen));
        assert!(matches!(Coil::from_address(2), Err(MapError::UnknownAddress { table: Table::Coil, .. })));
        assert!(matches!(Setpoint::from_address(7), Err(MapError::UnknownAddress { .. })));
        assert_eq!(Status::block(0, 5).unwrap().len(), 5);
        assert!(Status::block(0, 6).is_err());
    }

    #[test]
    fn whole_tables_round_trip_and_wrong_lengths_are_refused() {
        let m = Measurements {
            speed_rpm: 2900.0,
            flow_m3h: 100.3,
            suction_pressure_kpa: -12.5,
            discharge_pressure_kpa: 510.2,
            head_m: 53.31,
            motor_current_a: 33.2,
            shaft_power_kw: 18.25,
            hydraulic_power_kw: 13.61,
            efficiency_pct: 74.6,
            bearing_temp_c: 50.2,
            motor_temp_c: 83.1,
            vibration_mm_s: 1.83,
        };
        let back = Measurements::from_registers(&m.to_registers()).unwrap();
        for &p in Measurement::ALL {
            assert!((back.get(p) - m.get(p)).abs() < 1e-9 + p.spec().resolution / 2.0, "{p}");
        }
        assert!(matches!(Measurements::from_registers(&[0; 3]), Err(MapError::BadQuantity { count: 3, .. })));

        let s = Setpoints { speed_setpoint_rpm: 1450.0, ramp_rpm_per_s: 200.0 };
        assert_eq!(Setpoints::from_registers(&s.to_registers()), Ok(s));
        assert!(matches!(Setpoints::from_registers(&[4000, 200]), Err(MapError::OutOfRange { .. })));
        assert!(Setpoints::from_registers(&[100]).is_err());
    }

    #[test]
    fn json_names_are_the_map_names() {
        let json = serde_json::to_value(Measurements::default()).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let names: Vec<&str> = Measurement::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(keys, names);
        let json = serde_json::to_value(Setpoints { speed_setpoint_rpm: 0.0, ramp_rpm_per_s: 10.0 }).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, Setpoint::ALL.iter().map(|s| s.name()).collect::<Vec<_>>());
        assert_eq!(serde_json::to_string(&Coil::BypassOpen).unwrap(), "\"bypass_open\"");
        for &m in Measurement::ALL {
            assert_eq!(serde_json::to_value(m).unwrap(), m.name());
        }
        assert_eq!(serde_json::to_value(Setpoint::SpeedRpm).unwrap(), "speed_setpoint_rpm");
        assert_eq!(serde_json::from_str::<Status>("\"at_speed\"").unwrap(), Status::AtSpeed);
        assert_eq!(Measurement::from_name("no_such_sensor"), None);
    }
}
