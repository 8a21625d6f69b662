//! The served plant on loopback: a tokio-modbus client reads and drives it, a raw HTTP client
//! injects faults, and the `device-sim plant` binary starts and answers.

use std::net::SocketAddr;
use std::time::Duration;

use device_sim::plant::{PlantConfig, PlantHandle, PlantParams, ServeError, serve};
use pump_map::{Coil, Measurement, Measurements, Setpoint, Status};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Context, Reader as _, Writer as _};

/// How long any awaited effect may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);
/// How often a waited-for register is polled.
const POLL: Duration = Duration::from_millis(20);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A plant on ephemeral ports, stepping every 20 ms, five simulated seconds per real second.
async fn start(seed: u64) -> PlantHandle {
    serve(PlantConfig {
        modbus: loopback(),
        control: loopback(),
        seed,
        tick: Duration::from_millis(20),
        time_scale: 5.0,
        params: PlantParams::default(),
    })
    .await
    .unwrap()
}

async fn client(plant: &PlantHandle) -> Context {
    tokio_modbus::client::tcp::connect(plant.modbus_addr()).await.unwrap()
}

async fn read_all(ctx: &mut Context) -> Measurements {
    let words = ctx.read_input_registers(0, Measurement::ALL.len() as u16).await.unwrap().unwrap();
    Measurements::from_registers(&words).unwrap()
}

/// Polls the input registers until `done` holds; fails the test after [`DEADLINE`].
async fn wait_for(ctx: &mut Context, what: &str, done: impl Fn(&Measurements) -> bool) -> Measurements {
    let start = Instant::now();
    loop {
        let m = read_all(ctx).await;
        if done(&m) {
            return m;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}; last reading {m:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Averages `n` successive readings (one per tick).
async fn average(ctx: &mut Context, m: Measurement, n: usize) -> f64 {
    let mut sum = 0.0;
    for _ in 0..n {
        sum += read_all(ctx).await.get(m);
        tokio::time::sleep(POLL).await;
    }
    sum / n as f64
}

/// One HTTP/1.1 exchange with `Connection: close`; returns the status and the JSON body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    timeout(DEADLINE, stream.read_to_end(&mut raw)).await.expect("HTTP answer in time").unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = if body.is_empty() { Value::Null } else { serde_json::from_str(body).expect(body) };
    (status, json)
}

#[tokio::test]
async fn registers_serve_the_plant_readings_setpoints_coils_and_status() {
    let plant = start(1).await;
    let mut ctx = client(&plant).await;
    let m = read_all(&mut ctx).await;
    assert!((m.speed_rpm - 2900.0).abs() < 10.0 && (m.flow_m3h - 100.0).abs() < 3.0, "{m:?}");
    assert!((m.head_m - 50.0).abs() < 1.0 && m.efficiency_pct > 70.0, "{m:?}");
    assert_eq!(ctx.read_holding_registers(0, 2).await.unwrap().unwrap(), [2900, 200]);
    assert_eq!(ctx.read_coils(0, 2).await.unwrap().unwrap(), [true, false]);
    let status = ctx.read_discrete_inputs(0, Status::ALL.len() as u16).await.unwrap().unwrap();
    assert_eq!(status, [true, true, false, false, false], "running, at speed, no alarms");
    // A partial read returns the same encoding as the whole table.
    let words = ctx.read_input_registers(Measurement::BearingTempC.address(), 3).await.unwrap().unwrap();
    let temp = Measurement::BearingTempC.spec().decode(words[0]);
    assert!((temp - 50.0).abs() < 2.0, "{temp}");
    plant.shutdown().await;
}

#[tokio::test]
async fn a_speed_setpoint_written_over_modbus_ramps_the_pump_toward_it() {
    let plant = start(2).await;
    let mut ctx = client(&plant).await;
    ctx.write_single_register(Setpoint::RampRpmPerS.address(), 500).await.unwrap().unwrap();
    let (_, before) = http(plant.control_addr(), "GET", "/state", None).await;
    ctx.write_single_register(Setpoint::SpeedRpm.address(), 2000).await.unwrap().unwrap();
    wait_for(&mut ctx, "speed 2000 rpm", |m| (m.speed_rpm - 2000.0).abs() < 8.0).await;
    let (_, after) = http(plant.control_addr(), "GET", "/state", None).await;
    // 900 rpm at 500 rpm/s takes 1.8 simulated seconds at least.
    let elapsed = after["time_s"].as_f64().unwrap() - before["time_s"].as_f64().unwrap();
    assert!(elapsed >= 1.7, "the ramp limits the change: reached in {elapsed} s");
    assert_eq!(ctx.read_holding_registers(0, 2).await.unwrap().unwrap(), [2000, 500]);
    let m = wait_for(&mut ctx, "flow at the new speed", |m| m.flow_m3h < 80.0).await;
    assert!(m.flow_m3h > 30.0, "{m:?}");
    plant.shutdown().await;
}

#[tokio::test]
async fn the_run_coil_stops_and_restarts_the_pump() {
    let plant = start(3).await;
    let mut ctx = client(&plant).await;
    ctx.write_single_register(Setpoint::RampRpmPerS.address(), 1000).await.unwrap().unwrap();
    ctx.write_single_coil(Coil::Run.address(), false).await.unwrap().unwrap();
    let m = wait_for(&mut ctx, "a stop", |m| m.speed_rpm < 8.0 && m.flow_m3h < 1.5).await;
    assert!(m.motor_current_a < 0.5 && m.shaft_power_kw < 0.3, "{m:?}");
    let running = ctx.read_discrete_inputs(Status::Running.address(), 1).await.unwrap().unwrap();
    assert_eq!(running, [false]);
    assert_eq!(ctx.read_coils(0, 1).await.unwrap().unwrap(), [false]);

    ctx.write_multiple_coils(Coil::Run.address(), &[true]).await.unwrap().unwrap();
    let m = wait_for(&mut ctx, "a restart", |m| m.speed_rpm > 2880.0).await;
    assert!(m.motor_current_a > 25.0, "{m:?}");
    plant.shutdown().await;
}

#[tokio::test]
async fn the_bypass_coil_raises_flow_and_lowers_discharge_pressure() {
    let plant = start(4).await;
    let mut ctx = client(&plant).await;
    let discharge = average(&mut ctx, Measurement::DischargePressureKpa, 10).await;
    let flow = average(&mut ctx, Measurement::FlowM3h, 10).await;
    ctx.write_single_coil(Coil::BypassOpen.address(), true).await.unwrap().unwrap();
    wait_for(&mut ctx, "bypass flow", |m| m.flow_m3h > flow + 20.0).await;
    let open = average(&mut ctx, Measurement::DischargePressureKpa, 10).await;
    assert!(open < discharge - 50.0, "{discharge} → {open}");
    assert_eq!(ctx.read_coils(0, 2).await.unwrap().unwrap(), [true, true]);
    plant.shutdown().await;
}

#[tokio::test]
async fn bad_addresses_and_values_get_exceptions_and_the_plant_keeps_running() {
    let plant = start(5).await;
    let mut ctx = client(&plant).await;
    let n = Measurement::ALL.len() as u16;
    assert_eq!(ctx.read_input_registers(n, 1).await.unwrap(), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(ctx.read_input_registers(n - 1, 2).await.unwrap(), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(ctx.read_holding_registers(2, 1).await.unwrap(), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(ctx.read_coils(2, 1).await.unwrap(), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(ctx.read_discrete_inputs(9, 1).await.unwrap(), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(ctx.write_single_coil(7, true).await.unwrap(), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(ctx.write_single_register(5, 1).await.unwrap(), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(ctx.write_single_register(0, 3001).await.unwrap(), Err(ExceptionCode::IllegalDataValue));
    assert_eq!(ctx.write_single_register(1, 0).await.unwrap(), Err(ExceptionCode::IllegalDataValue));
    // A multiple write with one bad value changes nothing.
    assert_eq!(ctx.write_multiple_registers(0, &[1000, 5000]).await.unwrap(), Err(ExceptionCode::IllegalDataValue));
    assert_eq!(ctx.read_holding_registers(0, 2).await.unwrap().unwrap(), [2900, 200]);
    // The same connection still works and the plant still steps.
    let (_, before) = http(plant.control_addr(), "GET", "/state", None).await;
    let t0 = before["time_s"].as_f64().unwrap();
    let start = Instant::now();
    loop {
        let (_, now) = http(plant.control_addr(), "GET", "/state", None).await;
        if now["time_s"].as_f64().unwrap() > t0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the plant stopped stepping");
        tokio::time::sleep(POLL).await;
    }
    assert!(read_all(&mut ctx).await.speed_rpm > 2800.0);
    plant.shutdown().await;
}

#[tokio::test]
async fn malformed_modbus_frames_are_refused_without_disturbing_other_clients() {
    let plant = start(10).await;
    let mut other = client(&plant).await;
    let mut raw = TcpStream::connect(plant.modbus_addr()).await.unwrap();
    // MBAP: transaction 7, protocol 0, length 2, unit 1; PDU: function 0x41 (not implemented).
    raw.write_all(&[0, 7, 0, 0, 0, 2, 1, 0x41]).await.unwrap();
    let mut reply = [0u8; 9];
    timeout(DEADLINE, raw.read_exact(&mut reply)).await.expect("an exception in time").unwrap();
    assert_eq!(reply, [0, 7, 0, 0, 0, 3, 1, 0x41 | 0x80, 0x01], "Illegal Function");
    // A frame with a foreign protocol identifier is not Modbus: the connection is closed.
    raw.write_all(&[0, 8, 0x12, 0x34, 0, 6, 1, 4, 0, 0, 0, 1]).await.unwrap();
    let mut rest = Vec::new();
    timeout(DEADLINE, raw.read_to_end(&mut rest)).await.expect("the connection is closed").unwrap();
    assert!(rest.is_empty(), "no answer to a malformed frame: {rest:?}");
    assert!(read_all(&mut other).await.speed_rpm > 2800.0, "the other client is still served");
    assert!(read_all(&mut client(&plant).await).await.speed_rpm > 2800.0, "new clients too");
    plant.shutdown().await;
}

#[tokio::test]
async fn several_clients_are_served_at_once() {
    let plant = start(6).await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(client(&plant).await);
    }
    let mut reads = tokio::task::JoinSet::new();
    for mut ctx in clients {
        reads.spawn(async move {
            for _ in 0..30 {
                let m = read_all(&mut ctx).await;
                assert!(m.speed_rpm > 2800.0, "{m:?}");
            }
        });
    }
    let done = timeout(DEADLINE, reads.join_all()).await.expect("every client served");
    assert_eq!(done.len(), 6);
    plant.shutdown().await;
}

#[tokio::test]
async fn faults_injected_over_http_change_the_modbus_readings() {
    let plant = start(7).await;
    let control = plant.control_addr();
    let mut ctx = client(&plant).await;
    let suction = average(&mut ctx, Measurement::SuctionPressureKpa, 10).await;

    let (status, body) = http(control, "POST", "/faults", Some(r#"{"kind":"cavitation","severity":1.0}"#)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["faults"][0]["kind"], "cavitation");
    wait_for(&mut ctx, "starved suction", |m| m.suction_pressure_kpa < suction - 30.0).await;
    let (_, state) = http(control, "GET", "/state", None).await;
    assert_eq!(state["faults"][0]["kind"], "cavitation");
    assert!(state["measurements"]["suction_pressure_kpa"].as_f64().unwrap() < suction - 20.0, "{state}");

    let (status, body) = http(control, "DELETE", "/faults/cavitation", None).await;
    assert_eq!((status, &body["cleared"], &body["faults"]), (200, &json!(true), &json!([])), "{body}");
    wait_for(&mut ctx, "suction recovered", |m| m.suction_pressure_kpa > suction - 3.0).await;
    let (_, body) = http(control, "DELETE", "/faults/cavitation", None).await;
    assert_eq!(body["cleared"], false, "clearing twice is harmless");

    // A stuck vibration transmitter: the register stops moving while the plant runs on.
    let (status, _) =
        http(control, "POST", "/faults", Some(r#"{"kind":"stuck_sensor","sensor":"vibration_mm_s"}"#)).await;
    assert_eq!(status, 200);
    let address = Measurement::VibrationMmS.address();
    let first = ctx.read_input_registers(address, 1).await.unwrap().unwrap();
    let mut flows = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(POLL).await;
        assert_eq!(ctx.read_input_registers(address, 1).await.unwrap().unwrap(), first);
        flows.push(read_all(&mut ctx).await.flow_m3h);
    }
    flows.dedup();
    assert!(flows.len() > 1, "the other transmitters still move: {flows:?}");

    let (status, body) = http(control, "DELETE", "/faults", None).await;
    assert_eq!((status, &body["faults"]), (200, &json!([])));
    plant.shutdown().await;
}

#[tokio::test]
async fn bad_control_requests_get_400_with_a_json_error_and_change_nothing() {
    let plant = start(8).await;
    let control = plant.control_addr();
    let table: &[(&str, &str, Option<&str>, &str)] = &[
        ("POST", "/faults", Some("{\"kind\":"), "invalid_json"),
        ("POST", "/faults", Some(""), "invalid_json"),
        ("POST", "/faults", Some(r#"{"kind":"meltdown","severity":0.5}"#), "unknown_kind"),
        ("POST", "/faults", Some(r#"{"kind":"overheating","severity":2}"#), "severity_out_of_range"),
        ("POST", "/faults", Some(r#"{"kind":"stuck_sensor"}"#), "missing_sensor"),
        ("POST", "/faults", Some(r#"{"kind":"stuck_sensor","sensor":"nope"}"#), "unknown_sensor"),
        ("DELETE", "/faults/meltdown", None, "unknown_kind"),
    ];
    for (method, path, body, code) in table {
        let (status, answer) = http(control, method, path, *body).await;
        assert_eq!(status, 400, "{method} {path} {body:?}: {answer}");
        assert_eq!(answer["error"], *code, "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }
    let (status, answer) = http(control, "GET", "/nowhere", None).await;
    assert_eq!((status, &answer["error"]), (404, &json!("not_found")));
    let (status, state) = http(control, "GET", "/state", None).await;
    assert_eq!((status, &state["faults"]), (200, &json!([])));
    assert_eq!(state["seed"], 8);
    assert_eq!(state["coils"], json!({"run": true, "bypass_open": false}));
    plant.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_both_listeners() {
    let plant = start(9).await;
    let (modbus, control) = (plant.modbus_addr(), plant.control_addr());
    let mut ctx = client(&plant).await;
    read_all(&mut ctx).await;
    plant.shutdown().await;
    assert!(TcpStream::connect(modbus).await.is_err());
    assert!(TcpStream::connect(control).await.is_err());
    let after = timeout(DEADLINE, ctx.read_input_registers(0, 1)).await.expect("the open connection is closed");
    assert!(after.is_err(), "{after:?}");
}

#[tokio::test]
async fn unusable_configurations_are_refused() {
    let base = PlantConfig { modbus: loopback(), control: loopback(), ..PlantConfig::default() };
    let table = [
        (PlantConfig { control: SocketAddr::from(([0, 0, 0, 0], 0)), ..base.clone() }, "loopback"),
        (PlantConfig { tick: Duration::ZERO, ..base.clone() }, "tick"),
        (PlantConfig { time_scale: 0.0, ..base.clone() }, "time scale"),
        (PlantConfig { time_scale: f64::NAN, ..base.clone() }, "time scale"),
    ];
    for (config, needle) in table {
        let err = serve(config).await.unwrap_err();
        assert!(matches!(err, ServeError::Config(_)) && err.is_configuration(), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    // A port in use is a bind error, not a configuration error.
    let plant = start(11).await;
    let err = serve(PlantConfig { modbus: plant.modbus_addr(), ..base }).await.unwrap_err();
    assert!(matches!(err, ServeError::Bind { what: "modbus", .. }) && !err.is_configuration(), "{err}");
    plant.shutdown().await;
}

/// Kills the child if the test fails before it stopped it.
struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

#[tokio::test]
async fn the_plant_subcommand_prints_its_addresses_and_serves_until_sigterm() {
    let mut child = Child(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_device-sim"))
            .args(["plant", "--modbus", "127.0.0.1:0", "--control", "127.0.0.1:0", "--seed", "42", "--tick-ms", "20"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let line = timeout(DEADLINE, lines.next_line()).await.expect("addresses in time").unwrap().expect("a line");
    let addrs: Value = serde_json::from_str(&line).unwrap();
    let modbus: SocketAddr = addrs["modbus"].as_str().unwrap().parse().unwrap();
    let control: SocketAddr = addrs["control"].as_str().unwrap().parse().unwrap();
    assert!(modbus.ip().is_loopback() && modbus.port() != 0 && control.port() != 0, "{line}");

    let mut ctx = tokio_modbus::client::tcp::connect(modbus).await.unwrap();
    assert!(read_all(&mut ctx).await.speed_rpm > 2800.0);
    let (status, state) = http(control, "GET", "/state", None).await;
    assert_eq!((status, &state["seed"]), (200, &json!(42)));

    let pid = rustix::process::Pid::from_raw(child.0.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let exit = timeout(DEADLINE, child.0.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(exit.success(), "{exit}");
}
