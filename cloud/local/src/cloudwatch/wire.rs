//! CloudWatch's two wire encodings over one set of handlers.
//!
//! Requests arrive in CBOR (Smithy RPC v2 CBOR, what boto3 and the current SDKs pick) or in JSON
//! (AWS JSON 1.0); both become a [`serde_json::Value`] that the handlers read with serde. A CBOR
//! timestamp (tag 1, epoch seconds) becomes a number of seconds, which is also how AWS JSON 1.0
//! sends one; a CBOR byte string becomes base64 text, as AWS JSON 1.0 sends a blob.
//!
//! Answers are built as an [`Out`] tree, which keeps timestamps apart from plain numbers: CBOR
//! writes them as tag 1 around epoch seconds, JSON as epoch seconds.

use base64::Engine as _;
use ciborium::Value as Cbor;
use serde_json::Value as Json;

/// An answer's value, before it is written in CBOR or JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// Text.
    Str(String),
    /// A timestamp, in seconds since the Unix epoch.
    Time(f64),
    /// A list.
    List(Vec<Out>),
    /// A structure or map, members in order.
    Map(Vec<(String, Out)>),
}

impl Out {
    /// A structure from `(name, value)` pairs, leaving out the absent ones.
    pub fn object<const N: usize>(members: [(&str, Option<Out>); N]) -> Out {
        Out::Map(members.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v))).collect())
    }

    /// Text.
    pub fn str(s: impl Into<String>) -> Out {
        Out::Str(s.into())
    }

    /// A timestamp from milliseconds since the epoch.
    pub fn millis(ms: i64) -> Out {
        Out::Time(ms as f64 / 1000.0)
    }

    /// The CBOR form: timestamps as tag 1 around epoch seconds.
    pub fn to_cbor(&self) -> Cbor {
        match self {
            Out::Bool(b) => Cbor::Bool(*b),
            Out::Int(i) => Cbor::Integer((*i).into()),
            Out::Float(f) => Cbor::Float(*f),
            Out::Str(s) => Cbor::Text(s.clone()),
            Out::Time(t) => Cbor::Tag(1, Box::new(Cbor::Float(*t))),
            Out::List(items) => Cbor::Array(items.iter().map(Out::to_cbor).collect()),
            Out::Map(members) => Cbor::Map(members.iter().map(|(k, v)| (Cbor::Text(k.clone()), v.to_cbor())).collect()),
        }
    }

    /// The JSON form: timestamps as epoch seconds.
    pub fn to_json(&self) -> Json {
        match self {
            Out::Bool(b) => Json::Bool(*b),
            Out::Int(i) => Json::from(*i),
            Out::Float(f) | Out::Time(f) => serde_json::Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
            Out::Str(s) => Json::String(s.clone()),
            Out::List(items) => Json::Array(items.iter().map(Out::to_json).collect()),
            Out::Map(members) => Json::Object(members.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    /// The CBOR encoding.
    pub fn to_cbor_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = ciborium::into_writer(&self.to_cbor(), &mut bytes);
        bytes
    }
}

/// Why a CBOR body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes a CBOR request body (empty: no members) into the JSON the handlers read.
pub fn decode_cbor(body: &[u8]) -> Result<Json, DecodeError> {
    if body.is_empty() {
        return Ok(Json::Object(Default::default()));
    }
    let value: Cbor = ciborium::from_reader(body).map_err(|e| DecodeError(format!("the body is not CBOR: {e}")))?;
    cbor_to_json(value, 0)
}

/// How deep a request's structures may nest (CloudWatch's shapes need a handful of levels).
const MAX_DEPTH: usize = 32;

fn cbor_to_json(value: Cbor, depth: usize) -> Result<Json, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError(format!("the body nests deeper than {MAX_DEPTH} levels")));
    }
    Ok(match value {
        Cbor::Null => Json::Null,
        Cbor::Bool(b) => Json::Bool(b),
        Cbor::Integer(i) => {
            let i = i128::from(i);
            if let Ok(i) = i64::try_from(i) {
                Json::from(i)
            } else if let Ok(u) = u64::try_from(i) {
                Json::from(u)
            } else {
                return Err(DecodeError(format!("the integer {i} is out of range")));
            }
        }
        Cbor::Float(f) => match serde_json::Number::from_f64(f) {
            Some(n) => Json::Number(n),
            None => return Err(DecodeError(format!("the number {f} is not finite"))),
        },
        Cbor::Text(s) => Json::String(s),
        Cbor::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        // Tag 1: a timestamp in epoch seconds; other tags are read through.
        Cbor::Tag(_, inner) => cbor_to_json(*inner, depth + 1)?,
        Cbor::Array(items) => {
            Json::Array(items.into_iter().map(|v| cbor_to_json(v, depth + 1)).collect::<Result<_, _>>()?)
        }
        Cbor::Map(members) => {
            let mut object = serde_json::Map::new();
            for (k, v) in members {
                let Cbor::Text(k) = k else { return Err(DecodeError("a map key is not text".into())) };
                object.insert(k, cbor_to_json(v, depth + 1)?);
            }
            Json::Object(object)
        }
        _ => return Err(DecodeError("an unsupported CBOR value".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encode(value: &Cbor) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(value, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn cbor_requests_read_as_the_json_form_with_timestamps_in_seconds() {
        let request = Cbor::Map(vec![
            (Cbor::Text("Namespace".into()), Cbor::Text("Pump".into())),
            (
                Cbor::Text("MetricData".into()),
                Cbor::Array(vec![Cbor::Map(vec![
                    (Cbor::Text("MetricName".into()), Cbor::Text("rpm".into())),
                    (Cbor::Text("Timestamp".into()), Cbor::Tag(1, Box::new(Cbor::Float(1_700_000_000.5)))),
                    (Cbor::Text("Value".into()), Cbor::Integer(3.into())),
                    (Cbor::Text("Blob".into()), Cbor::Bytes(b"hi".to_vec())),
                ])]),
            ),
        ]);
        let json = decode_cbor(&encode(&request)).unwrap();
        assert_eq!(
            json,
            json!({"Namespace": "Pump", "MetricData": [{"MetricName": "rpm", "Timestamp": 1_700_000_000.5,
                "Value": 3, "Blob": "aGk="}]})
        );
        assert_eq!(decode_cbor(b"").unwrap(), json!({}));
    }

    #[test]
    fn answers_round_trip_through_cbor_with_tagged_timestamps() {
        let out = Out::object([
            ("Label", Some(Out::str("rpm"))),
            ("Missing", None),
            ("Timestamps", Some(Out::List(vec![Out::millis(1_700_000_060_000)]))),
            ("Values", Some(Out::List(vec![Out::Float(2.5)]))),
            ("Count", Some(Out::Int(-4))),
            ("Ok", Some(Out::Bool(true))),
        ]);
        let cbor: Cbor = ciborium::from_reader(&out.to_cbor_bytes()[..]).unwrap();
        let Cbor::Map(members) = &cbor else { panic!("{cbor:?}") };
        let timestamps = &members.iter().find(|(k, _)| k == &Cbor::Text("Timestamps".into())).unwrap().1;
        assert_eq!(timestamps, &Cbor::Array(vec![Cbor::Tag(1, Box::new(Cbor::Float(1_700_000_060.0)))]));
        assert_eq!(
            decode_cbor(&out.to_cbor_bytes()).unwrap(),
            json!({"Label": "rpm", "Timestamps": [1_700_000_060.0], "Values": [2.5], "Count": -4, "Ok": true})
        );
        assert_eq!(out.to_json()["Timestamps"], json!([1_700_000_060.0]));
    }

    #[test]
    fn malformed_cbor_is_refused() {
        assert!(decode_cbor(&[0xff, 0x00]).is_err());
        assert!(decode_cbor(&encode(&Cbor::Float(f64::NAN))).is_err());
        let mut deep = Cbor::Null;
        for _ in 0..100 {
            deep = Cbor::Array(vec![deep]);
        }
        assert!(decode_cbor(&encode(&deep)).unwrap_err().0.contains("nests"));
        let map = Cbor::Map(vec![(Cbor::Integer(1.into()), Cbor::Null)]);
        assert!(decode_cbor(&encode(&map)).is_err());
    }
}
