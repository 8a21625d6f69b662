//! The plant's control interface: a small HTTP/JSON API for the operator of the simulation (read
//! the whole state, inject and clear faults). It is not part of the plant's field interface, which
//! is Modbus only.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use pump_map::{Coil, Measurement, Measurements, Setpoints, Status};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::fault::{ActiveFault, Fault, FaultError, FaultKind};
use super::{SharedPlant, lock};

/// The body of `POST /faults`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    kind: String,
    severity: Option<f64>,
    sensor: Option<String>,
}

/// The answer of `GET /state`.
#[derive(Debug, Serialize)]
pub(super) struct StateView {
    time_s: f64,
    seed: u64,
    measurements: Measurements,
    setpoints: Setpoints,
    coils: Map<String, Value>,
    status: Map<String, Value>,
    faults: Vec<ActiveFault>,
}

/// A 400 with a JSON body `{"error": code, "message": text}`.
struct BadRequest {
    code: &'static str,
    message: String,
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(json!({"error": self.code, "message": self.message}))).into_response()
    }
}

impl From<FaultError> for BadRequest {
    fn from(err: FaultError) -> Self {
        let code = match err {
            FaultError::UnknownKind(_) => "unknown_kind",
            FaultError::SeverityOutOfRange(_) => "severity_out_of_range",
            FaultError::MissingSensor => "missing_sensor",
            FaultError::UnknownSensor(_) => "unknown_sensor",
            FaultError::SensorNotAllowed(_) => "sensor_not_allowed",
        };
        BadRequest { code, message: err.to_string() }
    }
}

/// The control router over `plant`.
pub(super) fn router(plant: SharedPlant) -> Router {
    Router::new()
        .route("/state", get(state))
        .route("/faults", delete(clear_all).post(inject))
        .route("/faults/{kind}", delete(clear))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "not_found", "message": "no such route"}))) })
        .with_state(plant)
}

/// The whole observable state of the plant.
pub(super) fn state_view(plant: &SharedPlant) -> StateView {
    let model = lock(plant);
    StateView {
        time_s: model.time_s(),
        seed: model.seed(),
        measurements: *model.measurements(),
        setpoints: model.setpoints(),
        coils: Coil::ALL.iter().map(|&c| (c.name().to_owned(), Value::Bool(model.coil(c)))).collect(),
        status: Status::ALL.iter().map(|&s| (s.name().to_owned(), Value::Bool(model.status(s)))).collect(),
        faults: model.faults(),
    }
}

async fn state(State(plant): State<SharedPlant>) -> Json<StateView> {
    Json(state_view(&plant))
}

fn parse_fault(body: &[u8]) -> Result<Fault, BadRequest> {
    let req: FaultRequest = serde_json::from_slice(body)
        .map_err(|e| BadRequest { code: "invalid_json", message: format!("invalid fault request: {e}") })?;
    let kind = FaultKind::from_name(&req.kind)?;
    let sensor = match req.sensor {
        None => None,
        Some(name) => Some(Measurement::from_name(&name).ok_or(FaultError::UnknownSensor(name))?),
    };
    let severity = match (req.severity, kind) {
        (Some(s), _) => s,
        // A stuck transmitter has no degree: severity is optional for it.
        (None, FaultKind::StuckSensor) => 1.0,
        (None, _) => {
            return Err(BadRequest {
                code: "missing_severity",
                message: format!("{kind} needs \"severity\": a number in 0.0..=1.0"),
            });
        }
    };
    Ok(Fault::new(kind, severity, sensor)?)
}

async fn inject(State(plant): State<SharedPlant>, body: Bytes) -> Result<Json<Value>, BadRequest> {
    let fault = parse_fault(&body)?;
    let mut model = lock(&plant);
    model.inject(fault);
    tracing::info!(kind = %fault.kind(), severity = fault.severity(), sensor = ?fault.sensor(), "fault injected");
    Ok(Json(json!({"faults": model.faults()})))
}

async fn clear(State(plant): State<SharedPlant>, Path(kind): Path<String>) -> Result<Json<Value>, BadRequest> {
    let kind = FaultKind::from_name(&kind)?;
    let mut model = lock(&plant);
    let cleared = model.clear(kind);
    tracing::info!(%kind, cleared, "fault cleared");
    Ok(Json(json!({"cleared": cleared, "faults": model.faults()})))
}

async fn clear_all(State(plant): State<SharedPlant>) -> Json<Value> {
    let mut model = lock(&plant);
    model.clear_all();
    tracing::info!("all faults cleared");
    Json(json!({"faults": model.faults()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fault_requests_get_a_named_error() {
        let table: &[(&str, &str)] = &[
            (r#"{"kind":"bearing_wear","severity":0.5"#, "invalid_json"),
            (r#"not json"#, "invalid_json"),
            (r#"{"severity":0.5}"#, "invalid_json"),
            (r#"{"kind":"bearing_wear","severity":"high"}"#, "invalid_json"),
            (r#"{"kind":"bearing_wear","severity":0.5,"extra":1}"#, "invalid_json"),
            (r#"{"kind":"meltdown","severity":0.5}"#, "unknown_kind"),
            (r#"{"kind":"cavitation","severity":1.5}"#, "severity_out_of_range"),
            (r#"{"kind":"cavitation","severity":-0.01}"#, "severity_out_of_range"),
            (r#"{"kind":"cavitation"}"#, "missing_severity"),
            (r#"{"kind":"stuck_sensor","severity":1}"#, "missing_sensor"),
            (r#"{"kind":"stuck_sensor","sensor":"pressure"}"#, "unknown_sensor"),
            (r#"{"kind":"overheating","severity":0.5,"sensor":"flow_m3h"}"#, "sensor_not_allowed"),
        ];
        for (body, code) in table {
            match parse_fault(body.as_bytes()) {
                Ok(f) => panic!("{body} accepted as {f:?}"),
                Err(e) => {
                    assert_eq!(e.code, *code, "{body}: {}", e.message);
                    assert!(!e.message.is_empty());
                }
            }
        }
    }

    #[test]
    fn good_fault_requests_parse() {
        let f = parse_fault(br#"{"kind":"stuck_sensor","sensor":"vibration_mm_s"}"#).ok().unwrap();
        assert_eq!((f.kind(), f.sensor()), (FaultKind::StuckSensor, Some(Measurement::VibrationMmS)));
        let f = parse_fault(br#"{"kind":"cavitation","severity":0.7}"#).ok().unwrap();
        assert_eq!((f.kind(), f.severity(), f.sensor()), (FaultKind::Cavitation, 0.7, None));
    }
}
