//! The IAM API on the wire: the awsQuery protocol (API version 2010-05-08), as `aws-sdk-iam`,
//! boto3 and the AWS CLI speak it: `POST /` with a form-encoded body holding `Action`,
//! `Version` and the operation's members; answers are XML in the
//! `https://iam.amazonaws.com/doc/2010-05-08/` namespace, errors an `ErrorResponse` whose
//! `Code` the clients raise. Policy documents travel URL-encoded in answers, as IAM sends them.
//!
//! Operations: CreateRole, GetRole, ListRoles, DeleteRole, PutRolePolicy, GetRolePolicy,
//! ListRolePolicies, DeleteRolePolicy, and ListAttachedRolePolicies (always empty: there are no
//! managed policies here).

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::roles::{Iam, IamError, Role};
use super::{Principal, actions};

const NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// An IAM error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// HTTP status.
    pub status: StatusCode,
    /// The error code clients raise (`NoSuchEntity`, `AccessDenied`, …).
    pub code: &'static str,
    /// The message.
    pub message: String,
}

impl QueryError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        QueryError { status, code, message: message.into() }
    }
}

impl From<IamError> for QueryError {
    fn from(e: IamError) -> Self {
        let (status, code) = match &e {
            IamError::NoSuchEntity(_) => (StatusCode::NOT_FOUND, "NoSuchEntity"),
            IamError::AlreadyExists(_) => (StatusCode::CONFLICT, "EntityAlreadyExists"),
            IamError::MalformedPolicy(_) => (StatusCode::BAD_REQUEST, "MalformedPolicyDocument"),
            IamError::Validation(_) => (StatusCode::BAD_REQUEST, "ValidationError"),
            IamError::DeleteConflict(_) => (StatusCode::CONFLICT, "DeleteConflict"),
            IamError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "ServiceFailure"),
        };
        QueryError::new(status, code, e.to_string())
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() { "Receiver" } else { "Sender" };
        let body = format!(
            "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            self.code,
            escape(&self.message),
            uuid::Uuid::new_v4()
        );
        (self.status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
    }
}

/// Answers one IAM request from `principal` with its form-encoded `body`.
pub fn handle(iam: &Iam, principal: &Principal, body: &[u8]) -> Response {
    match dispatch(iam, principal, body) {
        Ok(xml) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], xml).into_response(),
        Err(e) => e.into_response(),
    }
}

fn dispatch(iam: &Iam, principal: &Principal, body: &[u8]) -> Result<String, QueryError> {
    let params: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let get = |name: &str| params.get(name).map(String::as_str);
    let required = |name: &'static str| {
        get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            QueryError::new(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                format!("1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null", lower_first(name)),
            )
        })
    };
    let action = get("Action").ok_or_else(|| {
        QueryError::new(StatusCode::BAD_REQUEST, "MissingAction", "Could not find operation to invoke (no Action)")
    })?;
    if let Some(version) = get("Version")
        && version != "2010-05-08"
    {
        return Err(QueryError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
            format!("Unsupported API version {version:?} (expected 2010-05-08)"),
        ));
    }
    let role_arn = |name: &str| format!("arn:aws:iam::{}:role/{name}", iam.account());
    let resource = get("RoleName").map(role_arn).unwrap_or_else(|| "*".into());
    actions::authorize_named(principal, &format!("iam:{action}"), &resource)
        .map_err(|message| QueryError::new(StatusCode::FORBIDDEN, "AccessDenied", message))?;
    let result = match action {
        "CreateRole" => {
            let max = match get("MaxSessionDuration") {
                Some(v) => Some(v.parse().map_err(|_| {
                    QueryError::new(
                        StatusCode::BAD_REQUEST,
                        "ValidationError",
                        format!("MaxSessionDuration {v:?} is not a number"),
                    )
                })?),
                None => None,
            };
            let role = iam.create_role(
                required("RoleName")?,
                get("Path"),
                required("AssumeRolePolicyDocument")?,
                get("Description"),
                max,
            )?;
            format!("<Role>{}</Role>", role_xml(&role))
        }
        "GetRole" => format!("<Role>{}</Role>", role_xml(&iam.get_role(required("RoleName")?)?)),
        "ListRoles" => {
            let mut xml = String::from("<Roles>");
            for role in iam.list_roles(get("PathPrefix"))? {
                let _ = write!(xml, "<member>{}</member>", role_xml(&role));
            }
            xml.push_str("</Roles><IsTruncated>false</IsTruncated>");
            xml
        }
        "DeleteRole" => {
            iam.delete_role(required("RoleName")?)?;
            String::new()
        }
        "PutRolePolicy" => {
            iam.put_role_policy(required("RoleName")?, required("PolicyName")?, required("PolicyDocument")?)?;
            String::new()
        }
        "GetRolePolicy" => {
            let name = required("PolicyName")?;
            let (role, doc) = iam.get_role_policy(required("RoleName")?, name)?;
            format!(
                "<RoleName>{}</RoleName><PolicyName>{}</PolicyName><PolicyDocument>{}</PolicyDocument>",
                escape(&role.name),
                escape(name),
                url_encode(&doc)
            )
        }
        "ListRolePolicies" => {
            let role = iam.get_role(required("RoleName")?)?;
            let mut xml = String::from("<PolicyNames>");
            for name in role.policies.keys() {
                let _ = write!(xml, "<member>{}</member>", escape(name));
            }
            xml.push_str("</PolicyNames><IsTruncated>false</IsTruncated>");
            xml
        }
        "ListAttachedRolePolicies" => {
            iam.get_role(required("RoleName")?)?;
            String::from("<AttachedPolicies></AttachedPolicies><IsTruncated>false</IsTruncated>")
        }
        "DeleteRolePolicy" => {
            iam.delete_role_policy(required("RoleName")?, required("PolicyName")?)?;
            String::new()
        }
        other => {
            return Err(QueryError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!(
                    "The action {other} is not valid for this web service (the local cloud's IAM serves roles and their inline policies)."
                ),
            ));
        }
    };
    Ok(format!(
        "<{action}Response xmlns=\"{NAMESPACE}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        uuid::Uuid::new_v4()
    ))
}

fn role_xml(role: &Role) -> String {
    let created = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(role.created_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let mut xml = format!(
        "<Path>{}</Path><RoleName>{}</RoleName><RoleId>{}</RoleId><Arn>{}</Arn><CreateDate>{created}</CreateDate>\
         <AssumeRolePolicyDocument>{}</AssumeRolePolicyDocument><MaxSessionDuration>{}</MaxSessionDuration>",
        escape(&role.path),
        escape(&role.name),
        role.id,
        escape(&role.arn),
        url_encode(&role.assume_role_policy),
        role.max_session_duration
    );
    if let Some(d) = &role.description {
        let _ = write!(xml, "<Description>{}</Description>", escape(d));
    }
    xml
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_ascii_lowercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// URL-encodes a policy document as IAM returns it (the clients decode it).
fn url_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Escapes text for an XML element.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::AccessKeyPair;
    use crate::store::Store;

    fn iam() -> Iam {
        let admin = AccessKeyPair { access_key_id: "AKIAADMIN".into(), secret_access_key: "s".into() };
        Iam::new(Store::in_memory().unwrap(), crate::time::system(), admin, "us-east-1", "000000000000")
    }

    async fn call(iam: &Iam, body: &str) -> (StatusCode, String) {
        let response = handle(iam, &Principal::Admin, body.as_bytes());
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn operations_answer_in_iam_xml_and_errors_carry_iam_codes() {
        let iam = iam();
        let trust = url_encode(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"credentials.iot.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        );
        let (status, xml) =
            call(&iam, &format!("Action=CreateRole&Version=2010-05-08&RoleName=r&AssumeRolePolicyDocument={trust}"))
                .await;
        assert_eq!(status, StatusCode::OK, "{xml}");
        assert!(
            xml.starts_with(
                "<CreateRoleResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><CreateRoleResult><Role>"
            ),
            "{xml}"
        );
        assert!(xml.contains("<Arn>arn:aws:iam::000000000000:role/r</Arn>"), "{xml}");
        let (status, xml) = call(&iam, "Action=ListAttachedRolePolicies&RoleName=r").await;
        assert_eq!(status, StatusCode::OK, "{xml}");
        assert!(xml.contains("<AttachedPolicies></AttachedPolicies><IsTruncated>false</IsTruncated>"), "{xml}");
        let (status, xml) = call(&iam, "Action=GetRole&RoleName=nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(xml.contains("<Code>NoSuchEntity</Code>"), "{xml}");
        let (status, xml) = call(&iam, "Action=PutRolePolicy&RoleName=r&PolicyName=p&PolicyDocument=%7B").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(xml.contains("<Code>MalformedPolicyDocument</Code>"), "{xml}");
        let (status, xml) = call(&iam, "Action=CreateUser&UserName=u").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(xml.contains("<Code>InvalidAction</Code>"), "{xml}");
        let (status, xml) = call(&iam, "Action=GetRole").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(xml.contains("roleName"), "{xml}");
        let (status, _) = call(&iam, "RoleName=r").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
    }
}
