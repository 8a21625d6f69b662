use pump_map::Measurement;

use super::*;

const DT: Duration = Duration::from_millis(100);

fn plant(seed: u64, edit: impl FnOnce(&mut PlantParams)) -> PlantModel {
    let mut params = PlantParams::default();
    edit(&mut params);
    PlantModel::new(params, seed)
}

/// Steps `model` for `secs` simulated seconds and returns the published readings of each step.
fn run(model: &mut PlantModel, secs: f64) -> Vec<Measurements> {
    let steps = (secs / DT.as_secs_f64()).round() as usize;
    (0..steps)
        .map(|_| {
            model.step(DT);
            *model.measurements()
        })
        .collect()
}

fn mean(samples: &[Measurements], m: Measurement) -> f64 {
    samples.iter().map(|s| s.get(m)).sum::<f64>() / samples.len() as f64
}

fn std_dev(samples: &[Measurements], m: Measurement) -> f64 {
    let mu = mean(samples, m);
    (samples.iter().map(|s| (s.get(m) - mu).powi(2)).sum::<f64>() / (samples.len() - 1) as f64).sqrt()
}

fn close(actual: f64, expected: f64, rel: f64) -> bool {
    (actual - expected).abs() <= rel * expected.abs()
}

#[test]
fn the_rated_operating_point_matches_the_documented_plant() {
    let model = plant(1, |_| ());
    let t = model.truth();
    // Pump H = 60 − 0.001 Q², system H = 20 + 0.003 Q²: they meet at Q = 100, H = 50.
    assert!(close(t.flow_m3h, 100.0, 1e-9) && close(t.head_m, 50.0, 1e-9), "{t:?}");
    // P = 8 + 0.102 × 100 = 18.2 kW; ρgQH = 13.60 kW; η = 74.7 %; I = 18.2/0.92/(√3·400·0.86) = 33.2 A.
    assert!(close(t.shaft_power_kw, 18.2, 1e-9), "{t:?}");
    assert!(close(t.hydraulic_power_kw, 13.60, 0.01), "{t:?}");
    assert!(close(t.efficiency_pct, 74.7, 0.01), "{t:?}");
    assert!(close(t.motor_current_a, 33.2, 0.01), "{t:?}");
    // Suction: 3 m of water minus 1 m of friction ≈ 19.6 kPa; discharge = suction + 50 m ≈ 509 kPa.
    assert!(close(t.suction_pressure_kpa, 19.58, 0.01) && close(t.discharge_pressure_kpa, 509.1, 0.01), "{t:?}");
    // Started at thermal equilibrium: 25 + 15 + 12·18.2/22 ≈ 49.9 °C bearing; 25 + 70·18.2/22 ≈ 82.9 °C motor.
    assert!(close(t.bearing_temp_c, 49.93, 0.01) && close(t.motor_temp_c, 82.9, 0.01), "{t:?}");
    assert!(t.vibration_mm_s > 1.0 && t.vibration_mm_s < 2.8, "ISO 10816 zone A for a healthy pump: {t:?}");
    assert!(model.status(Status::Running) && model.status(Status::AtSpeed));
}

#[test]
fn affinity_laws_hold_on_a_system_without_static_head() {
    let average = |rpm: f64| {
        let mut model = plant(7, |p| {
            p.static_head_m = 0.0;
            p.initial.speed_setpoint_rpm = rpm;
        });
        let samples = run(&mut model, 60.0);
        let m = |x| mean(&samples, x);
        (m(Measurement::FlowM3h), m(Measurement::HeadM), m(Measurement::ShaftPowerKw))
    };
    let (q1, h1, p1) = average(2900.0);
    for ratio in [0.5, 0.75] {
        let (q, h, p) = average(2900.0 * ratio);
        assert!(close(q / q1, ratio, 0.01), "flow ∝ speed: {ratio} {}", q / q1);
        assert!(close(h / h1, ratio.powi(2), 0.01), "head ∝ speed²: {ratio} {}", h / h1);
        assert!(close(p / p1, ratio.powi(3), 0.02), "power ∝ speed³: {ratio} {}", p / p1);
    }
}

#[test]
fn the_ramp_limits_how_fast_speed_changes() {
    let mut model = plant(2, |_| ());
    model.set_setpoint(Setpoint::SpeedRpm, 1450.0).unwrap();
    let mut last = model.truth().speed_rpm;
    for _ in 0..10 {
        model.step(DT);
        let now = model.truth().speed_rpm;
        assert!((last - now - 20.0).abs() < 1e-6, "200 rpm/s × 0.1 s per step: {last} → {now}");
        last = now;
    }
    assert!((model.truth().speed_rpm - 2700.0).abs() < 1e-6);
    assert!(!model.status(Status::AtSpeed));
    // 1450 rpm more to go at 200 rpm/s: 6.25 s, then it holds.
    run(&mut model, 6.3);
    assert_eq!(model.truth().speed_rpm, 1450.0);
    assert!(model.status(Status::AtSpeed));

    model.set_setpoint(Setpoint::RampRpmPerS, 1000.0).unwrap();
    model.set_setpoint(Setpoint::SpeedRpm, 2000.0).unwrap();
    model.step(Duration::from_millis(250));
    assert!((model.truth().speed_rpm - 1700.0).abs() < 1e-6, "a faster ramp: {}", model.truth().speed_rpm);
    assert!(model.set_setpoint(Setpoint::SpeedRpm, 3500.0).is_err());
    assert_eq!(model.setpoints().speed_setpoint_rpm, 2000.0, "a refused setpoint changes nothing");
}

#[test]
fn a_stopped_pump_has_no_flow_current_or_vibration() {
    let mut model = plant(3, |_| ());
    model.set_coil(Coil::Run, false);
    run(&mut model, 15.0); // 2900 rpm at 200 rpm/s: 14.5 s to stop
    let samples = run(&mut model, 30.0);
    let t = model.truth();
    assert_eq!(
        (t.speed_rpm, t.flow_m3h, t.motor_current_a, t.shaft_power_kw, t.vibration_mm_s),
        (0.0, 0.0, 0.0, 0.0, 0.0)
    );
    // The transmitters read zero plus clipped noise.
    assert!(mean(&samples, Measurement::FlowM3h) < 0.5);
    assert!(mean(&samples, Measurement::MotorCurrentA) < 0.1);
    assert_eq!(mean(&samples, Measurement::EfficiencyPct), 0.0);
    assert!(!model.status(Status::Running) && !model.status(Status::AtSpeed));
    // Restarting ramps back up.
    model.set_coil(Coil::Run, true);
    run(&mut model, 1.0);
    assert!((model.truth().speed_rpm - 200.0).abs() < 1e-6 && model.truth().flow_m3h == 0.0, "below the static head");
    run(&mut model, 14.0);
    assert!(model.truth().flow_m3h > 99.0);
}

#[test]
fn a_pump_too_slow_for_the_static_head_delivers_nothing() {
    // At 1500 rpm the shut-off head is 60 × (1500/2900)² ≈ 16 m, below the 20 m lift.
    let mut model = plant(4, |p| p.initial.speed_setpoint_rpm = 1500.0);
    run(&mut model, 1.0);
    let t = model.truth();
    assert_eq!(t.flow_m3h, 0.0);
    assert!(close(t.head_m, 60.0 * (1500.0f64 / 2900.0).powi(2), 1e-9), "{t:?}");
    assert!(t.shaft_power_kw > 0.0 && t.efficiency_pct == 0.0, "churning still costs power: {t:?}");
}

#[test]
fn opening_the_bypass_raises_flow_and_lowers_discharge_pressure() {
    let mut closed = plant(5, |_| ());
    let mut open = plant(5, |_| ());
    open.set_coil(Coil::BypassOpen, true);
    let closed = run(&mut closed, 30.0);
    let open = run(&mut open, 30.0);
    let m = |s: &[Measurements], x| mean(s, x);
    assert!(m(&open, Measurement::FlowM3h) > m(&closed, Measurement::FlowM3h) + 20.0);
    assert!(m(&open, Measurement::DischargePressureKpa) < m(&closed, Measurement::DischargePressureKpa) - 50.0);
    assert!(m(&open, Measurement::HeadM) < m(&closed, Measurement::HeadM) - 5.0);
}

/// Runs a healthy and a faulted plant from one seed: `before` seconds healthy, then `fault` on
/// the second for `after` seconds. Returns the readings of the last `window` seconds of each.
fn healthy_vs_faulted(
    fault: Fault,
    before: f64,
    after: f64,
    window: f64,
) -> (Vec<Measurements>, Vec<Measurements>, PlantModel) {
    let mut healthy = plant(11, |_| ());
    let mut faulted = plant(11, |_| ());
    run(&mut healthy, before);
    run(&mut faulted, before);
    faulted.inject(fault);
    let h = run(&mut healthy, after);
    let f = run(&mut faulted, after);
    let keep = (window / DT.as_secs_f64()) as usize;
    (h[h.len() - keep..].to_vec(), f[f.len() - keep..].to_vec(), faulted)
}

#[test]
fn bearing_wear_raises_vibration_at_once_and_bearing_temperature_with_lag() {
    let (h, f, _) = healthy_vs_faulted(Fault::bearing_wear(0.5).unwrap(), 5.0, 5.0, 5.0);
    let dv = mean(&f, Measurement::VibrationMmS) - mean(&h, Measurement::VibrationMmS);
    assert!(dv > 1.5, "vibration rises at once: +{dv}");
    let dt = mean(&f, Measurement::BearingTempC) - mean(&h, Measurement::BearingTempC);
    assert!(dt < 1.0, "temperature lags: +{dt}");

    let (h, f, model) = healthy_vs_faulted(Fault::bearing_wear(0.5).unwrap(), 5.0, 1200.0, 10.0);
    let dt = mean(&f, Measurement::BearingTempC) - mean(&h, Measurement::BearingTempC);
    assert!(dt > 12.0, "after 20 min (5 time constants) the bearing runs hotter: +{dt}");
    let flow = mean(&f, Measurement::FlowM3h) - mean(&h, Measurement::FlowM3h);
    assert!(flow.abs() < 0.2, "the hydraulics do not change: {flow}");
    let wear = model.faults()[0];
    // Damage doubles per running hour: after 20 min it is 0.5 × 2^(1/3).
    assert!(close(wear.effective_severity, 0.5 * 2f64.powf(1.0 / 3.0), 1e-3), "{wear:?}");
}

#[test]
fn bearing_wear_progresses_while_running() {
    let mut model = plant(12, |_| ());
    model.inject(Fault::bearing_wear(0.3).unwrap());
    let early = run(&mut model, 60.0);
    let late = run(&mut model, 3600.0);
    let late = &late[late.len() - 600..];
    assert!(mean(late, Measurement::VibrationMmS) > mean(&early, Measurement::VibrationMmS) + 1.0);
    assert!(model.faults()[0].effective_severity > 0.59);
    // A stopped pump does not wear.
    model.set_coil(Coil::Run, false);
    run(&mut model, 20.0);
    let stopped = model.faults()[0].effective_severity;
    run(&mut model, 3600.0);
    assert_eq!(model.faults()[0].effective_severity, stopped);
}

#[test]
fn cavitation_starves_suction_and_makes_discharge_pressure_fluctuate() {
    let (h, f, _) = healthy_vs_faulted(Fault::cavitation(1.0).unwrap(), 5.0, 30.0, 25.0);
    let d = |m| mean(&f, m) - mean(&h, m);
    assert!(d(Measurement::SuctionPressureKpa) < -30.0, "suction {}", d(Measurement::SuctionPressureKpa));
    assert!(d(Measurement::DischargePressureKpa) < -60.0, "discharge {}", d(Measurement::DischargePressureKpa));
    assert!(d(Measurement::FlowM3h) < -10.0, "flow {}", d(Measurement::FlowM3h));
    assert!(d(Measurement::VibrationMmS) > 2.0, "vibration {}", d(Measurement::VibrationMmS));
    let ratio = std_dev(&f, Measurement::DischargePressureKpa) / std_dev(&h, Measurement::DischargePressureKpa);
    assert!(ratio > 3.0, "discharge pressure fluctuates: σ × {ratio}");
    // A slow pump pulls less suction: the same fault does far less at half speed.
    let mut slow_healthy = plant(13, |p| p.initial.speed_setpoint_rpm = 1450.0);
    let mut slow = plant(13, |p| p.initial.speed_setpoint_rpm = 1450.0);
    slow.inject(Fault::cavitation(1.0).unwrap());
    let (sh, sf) = (run(&mut slow_healthy, 10.0), run(&mut slow, 10.0));
    let slow_drop = mean(&sh, Measurement::SuctionPressureKpa) - mean(&sf, Measurement::SuctionPressureKpa);
    assert!(slow_drop < 0.35 * -d(Measurement::SuctionPressureKpa), "{slow_drop}");
}

#[test]
fn overheating_makes_the_motor_and_bearing_climb() {
    let (h, f, _) = healthy_vs_faulted(Fault::overheating(1.0).unwrap(), 5.0, 600.0, 10.0);
    let d = |m| mean(&f, m) - mean(&h, m);
    assert!(d(Measurement::MotorTempC) > 60.0, "motor {}", d(Measurement::MotorTempC));
    assert!(d(Measurement::BearingTempC) > 5.0, "bearing {}", d(Measurement::BearingTempC));
    assert!(d(Measurement::FlowM3h).abs() < 0.2 && d(Measurement::VibrationMmS).abs() < 0.05);
    // Half the severity, a smaller climb.
    let (h2, f2, _) = healthy_vs_faulted(Fault::overheating(0.5).unwrap(), 5.0, 600.0, 10.0);
    let half = mean(&f2, Measurement::MotorTempC) - mean(&h2, Measurement::MotorTempC);
    assert!(half > 5.0 && half < d(Measurement::MotorTempC) / 2.0, "{half}");
}

#[test]
fn clearing_a_fault_returns_the_plant_toward_normal() {
    let mut healthy = plant(21, |_| ());
    let mut model = plant(21, |_| ());
    model.inject(Fault::overheating(1.0).unwrap());
    model.inject(Fault::cavitation(0.8).unwrap());
    run(&mut healthy, 600.0);
    run(&mut model, 600.0);
    let hot = model.truth().motor_temp_c - healthy.truth().motor_temp_c;
    assert!(model.clear(FaultKind::Cavitation));
    assert!(!model.clear(FaultKind::Cavitation), "already cleared");
    let h = run(&mut healthy, 1.0);
    let f = run(&mut model, 1.0);
    let suction = mean(&f, Measurement::SuctionPressureKpa) - mean(&h, Measurement::SuctionPressureKpa);
    assert!(suction.abs() < 1.0, "suction recovers at once: {suction}");
    model.clear_all();
    assert!(model.faults().is_empty());
    run(&mut healthy, 1800.0);
    run(&mut model, 1800.0);
    let left = model.truth().motor_temp_c - healthy.truth().motor_temp_c;
    assert!(left < 0.01 * hot && left >= 0.0, "cools with its time constant: {hot} → {left}");
}

#[test]
fn a_stuck_sensor_freezes_exactly_one_measurement() {
    let mut healthy = plant(31, |_| ());
    let mut model = plant(31, |_| ());
    run(&mut healthy, 2.0);
    run(&mut model, 2.0);
    let frozen = model.measurements().bearing_temp_c;
    model.inject(Fault::stuck_sensor(Measurement::BearingTempC));
    // Something real happens meanwhile: the pump slows down.
    for m in [&mut healthy, &mut model] {
        m.set_setpoint(Setpoint::SpeedRpm, 2000.0).unwrap();
    }
    let h = run(&mut healthy, 120.0);
    let f = run(&mut model, 120.0);
    for (h, f) in h.iter().zip(&f) {
        for &m in Measurement::ALL {
            if m == Measurement::BearingTempC {
                assert_eq!(f.get(m), frozen);
            } else {
                assert_eq!(f.get(m), h.get(m), "{m} is untouched");
            }
        }
    }
    assert!(h.last().unwrap().bearing_temp_c < frozen - 1.0, "the real bearing cooled");
    assert!(model.truth().bearing_temp_c < frozen - 1.0);
    assert_eq!(model.faults()[0].frozen_value, Some(frozen));

    // A stuck flow meter feeds its frozen value into the derived hydraulic power.
    let mut model = plant(32, |_| ());
    let frozen = model.measurements().flow_m3h;
    model.inject(Fault::stuck_sensor(Measurement::FlowM3h));
    model.set_coil(Coil::Run, false);
    run(&mut model, 20.0);
    let m = model.measurements();
    assert_eq!(m.flow_m3h, frozen);
    assert!(close(m.hydraulic_power_kw, 998.0 * G * frozen / 3600.0 * m.head_m / 1000.0, 1e-9));
    model.clear(FaultKind::StuckSensor);
    model.step(DT);
    assert!(model.measurements().flow_m3h < 2.0, "live again after clearing");
}

#[test]
fn a_seed_reproduces_a_run_exactly() {
    let script = |seed: u64| {
        let mut model = plant(seed, |_| ());
        let mut out = run(&mut model, 10.0);
        model.set_setpoint(Setpoint::SpeedRpm, 2400.0).unwrap();
        model.inject(Fault::cavitation(0.6).unwrap());
        out.extend(run(&mut model, 10.0));
        model.set_coil(Coil::BypassOpen, true);
        model.step(Duration::from_millis(1234));
        out.push(*model.measurements());
        out
    };
    let a = script(42);
    assert_eq!(a, script(42));
    let b = script(43);
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(a, b)| a.flow_m3h != b.flow_m3h), "another seed, other noise");
}

#[test]
fn noise_is_gaussian_with_the_documented_spread() {
    let mut model = plant(51, |_| ());
    let samples = run(&mut model, 500.0); // 5000 steady samples
    let truth = *model.truth();
    let n = Noise::default();
    let table = [
        (Measurement::SpeedRpm, n.speed_rpm),
        (Measurement::FlowM3h, n.flow_m3h),
        (Measurement::SuctionPressureKpa, n.suction_kpa),
        (Measurement::DischargePressureKpa, n.discharge_kpa),
        (Measurement::MotorCurrentA, n.current_a),
        (Measurement::ShaftPowerKw, n.shaft_power_kw),
        (Measurement::BearingTempC, n.bearing_temp_c),
        (Measurement::MotorTempC, n.motor_temp_c),
        (Measurement::VibrationMmS, n.vibration_mm_s),
    ];
    let count = samples.len() as f64;
    for (m, sigma) in table {
        let mu = mean(&samples, m);
        let sd = std_dev(&samples, m);
        assert!((mu - truth.get(m)).abs() < 4.0 * sigma / count.sqrt(), "{m}: mean {mu} vs {}", truth.get(m));
        assert!(close(sd, sigma, 0.05), "{m}: σ {sd} vs {sigma}");
        // About 68 % within one σ, 95 % within two.
        let within =
            |k: f64| samples.iter().filter(|s| (s.get(m) - truth.get(m)).abs() < k * sigma).count() as f64 / count;
        assert!(close(within(1.0), 0.683, 0.05) && close(within(2.0), 0.954, 0.02), "{m}");
    }
    // Successive samples are independent.
    let flows: Vec<f64> = samples.iter().map(|s| s.flow_m3h - truth.flow_m3h).collect();
    let lag1 = flows.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / (count - 1.0) / n.flow_m3h.powi(2);
    assert!(lag1.abs() < 0.05, "lag-1 autocorrelation {lag1}");
}

#[test]
fn alarm_bits_follow_the_transmitters() {
    let mut model = plant(61, |_| ());
    assert!(!model.status(Status::VibrationHigh) && !model.status(Status::BearingTempHigh));
    model.inject(Fault::bearing_wear(1.0).unwrap());
    model.step(DT);
    assert!(model.status(Status::VibrationHigh), "{}", model.measurements().vibration_mm_s);
    run(&mut model, 1800.0);
    assert!(model.status(Status::BearingTempHigh), "{}", model.measurements().bearing_temp_c);
    assert!(!model.status(Status::MotorTempHigh));
    model.inject(Fault::overheating(1.0).unwrap());
    run(&mut model, 1800.0);
    assert!(model.status(Status::MotorTempHigh), "{}", model.measurements().motor_temp_c);
}
