//! The device side of fleet provisioning: the broker hands every publish on
//! `$aws/certificates/create/{json|cbor}`, `$aws/certificates/create-from-csr/{json|cbor}` and
//! `$aws/provisioning-templates/{name}/provision/{json|cbor}` to [`ProvisioningMqtt`], which
//! queues it to one worker thread; the worker answers on the request topic plus `/accepted` or
//! `/rejected`, to the requesting client only, in the request's format. Rejections carry
//! `{statusCode, errorCode, errorMessage}` ("Device provisioning MQTT API").

use std::sync::mpsc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::ProvisioningService;
use crate::bus::{Publisher, ServiceHandler};

/// Payload format, from the topic's last level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `json`.
    Json,
    /// `cbor`.
    Cbor,
}

/// Which API a request topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    /// `$aws/certificates/create/{fmt}`.
    CreateKeysAndCertificate,
    /// `$aws/certificates/create-from-csr/{fmt}`.
    CreateCertificateFromCsr,
    /// `$aws/provisioning-templates/{name}/provision/{fmt}`.
    RegisterThing(String),
}

/// A parsed request topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTopic {
    /// The API.
    pub api: Api,
    /// The payload format.
    pub format: Format,
}

impl RequestTopic {
    /// Parses a request topic; answer topics (`…/accepted`, `…/rejected`) and anything else are `None`.
    pub fn parse(topic: &str) -> Option<RequestTopic> {
        let levels: Vec<&str> = topic.split('/').collect();
        let format = |f: &str| match f {
            "json" => Some(Format::Json),
            "cbor" => Some(Format::Cbor),
            _ => None,
        };
        match levels.as_slice() {
            ["$aws", "certificates", "create", f] => {
                Some(RequestTopic { api: Api::CreateKeysAndCertificate, format: format(f)? })
            }
            ["$aws", "certificates", "create-from-csr", f] => {
                Some(RequestTopic { api: Api::CreateCertificateFromCsr, format: format(f)? })
            }
            ["$aws", "provisioning-templates", name, "provision", f] if !name.is_empty() => {
                Some(RequestTopic { api: Api::RegisterThing(name.to_string()), format: format(f)? })
            }
            _ => None,
        }
    }
}

/// A rejected request, as the `/rejected` payload carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP-like status.
    pub status: u16,
    /// Error code.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl Rejection {
    /// A rejection.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Rejection { status, code, message: message.into() }
    }

    /// 400 `InvalidPayload`: the request could not be read.
    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidPayload", message)
    }

    /// 500 `InternalError`: nothing was changed; retry.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(500, "InternalError", e.to_string())
    }

    /// The payload.
    pub fn to_json(&self) -> Value {
        json!({"statusCode": self.status, "errorCode": self.code, "errorMessage": self.message})
    }
}

/// Decodes a request payload; an empty payload is an empty object.
pub fn decode(format: Format, payload: &[u8]) -> Result<Value, Rejection> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let value: Value = match format {
        Format::Json => serde_json::from_slice(payload)
            .map_err(|e| Rejection::invalid_payload(format!("the payload is not valid JSON: {e}")))?,
        Format::Cbor => ciborium::de::from_reader(payload)
            .map_err(|e| Rejection::invalid_payload(format!("the payload is not valid CBOR: {e}")))?,
    };
    if value.is_object() { Ok(value) } else { Err(Rejection::invalid_payload("the payload must be an object")) }
}

/// Encodes a reply payload.
pub fn encode(format: Format, value: &Value) -> Vec<u8> {
    match format {
        Format::Json => value.to_string().into_bytes(),
        Format::Cbor => {
            let mut out = Vec::new();
            // Writing into a Vec cannot fail, and a JSON value always has a CBOR form.
            let _ = ciborium::ser::into_writer(value, &mut out);
            out
        }
    }
}

/// The broker's handler for the provisioning topics.
#[derive(Debug)]
pub struct ProvisioningMqtt {
    queue: mpsc::Sender<(String, String, Bytes)>,
}

impl ProvisioningMqtt {
    /// A handler whose worker thread answers through `service`.
    pub fn new(service: ProvisioningService) -> Self {
        let (queue, rx) = mpsc::channel::<(String, String, Bytes)>();
        std::thread::Builder::new()
            .name("provisioning-mqtt".into())
            .spawn(move || {
                while let Ok((client_id, topic, payload)) = rx.recv() {
                    // A panic in one answer must not stop the service: it becomes no answer.
                    let svc = service.clone();
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        svc.answer(&client_id, &topic, &payload)
                    }))
                    .is_err()
                    {
                        tracing::error!(%topic, "provisioning: answering a request failed");
                    }
                }
            })
            .ok();
        ProvisioningMqtt { queue }
    }
}

impl ServiceHandler for ProvisioningMqtt {
    fn wants(&self, topic: &str) -> bool {
        RequestTopic::parse(topic).is_some()
    }

    fn handle(&self, from: &Publisher, topic: &str, payload: Bytes) {
        let _ = self.queue.send((from.client_id.clone(), topic.to_owned(), payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_topics_parse_and_answer_topics_do_not() {
        let t = |s: &str| RequestTopic::parse(s);
        assert_eq!(t("$aws/certificates/create/json").unwrap().api, Api::CreateKeysAndCertificate);
        assert_eq!(t("$aws/certificates/create/cbor").unwrap().format, Format::Cbor);
        assert_eq!(t("$aws/certificates/create-from-csr/json").unwrap().api, Api::CreateCertificateFromCsr);
        assert_eq!(
            t("$aws/provisioning-templates/Tpl_1/provision/json").unwrap().api,
            Api::RegisterThing("Tpl_1".into())
        );
        for not in [
            "$aws/certificates/create/json/accepted",
            "$aws/certificates/create/xml",
            "$aws/provisioning-templates//provision/json",
            "$aws/provisioning-templates/t/provision/json/rejected",
            "a/b",
        ] {
            assert!(t(not).is_none(), "{not}");
        }
    }

    #[test]
    fn payloads_decode_from_json_and_cbor_and_bad_ones_are_rejected() {
        let v = json!({"certificateOwnershipToken": "t", "parameters": {"a": "b"}});
        assert_eq!(decode(Format::Cbor, &encode(Format::Cbor, &v)).unwrap(), v);
        assert_eq!(decode(Format::Json, &encode(Format::Json, &v)).unwrap(), v);
        assert_eq!(decode(Format::Json, b"").unwrap(), json!({}));
        assert_eq!(decode(Format::Json, b"{nope").unwrap_err().code, "InvalidPayload");
        assert_eq!(decode(Format::Cbor, &[0xff, 0x00]).unwrap_err().code, "InvalidPayload");
        assert_eq!(decode(Format::Json, b"[1]").unwrap_err().status, 400);
    }
}
