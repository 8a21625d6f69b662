//! restJson1 request bodies of the local cloud's HTTP API, through its body parser.

use cloud_api::policy::PolicyDocument;
use local_cloud::http::wire::{
    AddThingToThingGroupRequest, AttributePayload, CreateCertificateFromCsrRequest, CreatePolicyRequest,
    CreateThingGroupRequest, CreateThingRequest, CreateThingTypeRequest, PolicyTargetRequest, UpdateThingRequest,
    arn_resource, check_name, parse_json,
};
use serde::de::DeserializeOwned;

use crate::Outcome;

/// Feeds `selector` `body` to [`parse_json`], the parser of every JSON request body of the HTTP
/// API (the `JsonBody` extractor calls it), as the request shape `selector % 8` picks:
/// CreateThing, UpdateThing, CreateThingType, CreateThingGroup, AddThingToThingGroup,
/// CreatePolicy, Attach/DetachPolicy, CreateCertificateFromCsr (ASCII `0`…`7` pick them in
/// that order). An accepted body then goes through what its handler parses in it: names,
/// ARNs, the policy document, the CSR.
///
/// Checks: a refused body is a 400 `InvalidRequestException`; an accepted body is blank or a
/// JSON object, as restJson1 sends a structure; an attribute payload round-trips through serde;
/// a name taken from an ARN is the ARN's last path segment.
pub fn http_body(data: &[u8]) -> Outcome {
    let Some((&selector, body)) = data.split_first() else { return Outcome::Rejected };
    let accepted = match selector % 8 {
        0 => parse::<CreateThingRequest>(body).map(|r| {
            r.thing_type_name.as_deref().map(|t| check_name("thing type name", t));
            r.attribute_payload.as_ref().map(attribute_payload);
        }),
        1 => parse::<UpdateThingRequest>(body).map(|r| {
            r.thing_type_name.as_deref().map(|t| check_name("thing type name", t));
            r.attribute_payload.as_ref().map(attribute_payload);
        }),
        2 => parse::<CreateThingTypeRequest>(body).map(drop),
        3 => parse::<CreateThingGroupRequest>(body).map(|r| {
            r.parent_group_name.as_deref().map(|p| check_name("parent group name", p));
            r.thing_group_properties.and_then(|p| p.attribute_payload).as_ref().map(attribute_payload);
        }),
        4 => parse::<AddThingToThingGroupRequest>(body).map(|r| {
            for (arn, kind) in [(r.thing_group_arn, "thinggroup"), (r.thing_arn, "thing")] {
                if let Some(name) = arn.as_deref().and_then(|a| arn_resource(a, kind)) {
                    let arn = arn.as_deref().unwrap_or_default();
                    assert!(!name.is_empty() && arn.ends_with(&format!("{kind}/{name}")), "{name:?} from {arn:?}");
                    let _ = check_name("name", name);
                }
            }
        }),
        5 => parse::<CreatePolicyRequest>(body).map(|r| {
            // The registry's CreatePolicy: at most 2048 characters, then the policy parser.
            if let Some(document) = r.policy_document.filter(|d| d.len() <= 2048) {
                let _ = PolicyDocument::parse(&document);
            }
        }),
        6 => parse::<PolicyTargetRequest>(body).map(drop),
        _ => parse::<CreateCertificateFromCsrRequest>(body).map(|r| {
            // The local CA's CreateCertificateFromCsr reads the CSR with rcgen.
            if let Some(csr) = r.certificate_signing_request.filter(|c| !c.is_empty()) {
                let _ = rcgen::CertificateSigningRequestParams::from_pem(&csr);
            }
        }),
    };
    Outcome::of(accepted.is_some())
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Option<T> {
    match parse_json::<T>(body) {
        Ok(request) => {
            let blank = body.iter().all(u8::is_ascii_whitespace);
            // Judged on the text: deserializing into `serde_json::Value` would read an object whose
            // only key is serde_json's private raw-value token as a string.
            let object = body.trim_ascii_start().starts_with(b"{")
                && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
            assert!(blank || object, "accepted a body that is not a JSON object: {:?}", String::from_utf8_lossy(body));
            Some(request)
        }
        Err(e) => {
            assert_eq!((e.status.as_u16(), e.error_type), (400, "InvalidRequestException"), "{e}");
            assert!(e.body()["message"].is_string());
            None
        }
    }
}

fn attribute_payload(payload: &AttributePayload) {
    let text = serde_json::to_vec(payload).expect("an attribute payload serializes");
    let again: AttributePayload = serde_json::from_slice(&text).expect("an attribute payload reads back");
    assert_eq!(&again, payload, "an attribute payload round-trips through serde");
}
