//! The auditors' sign-in for the dashboard: an Amazon Cognito user pool, a public app client
//! that allows `ALLOW_USER_PASSWORD_AUTH` and `ALLOW_REFRESH_TOKEN_AUTH`, and an auditor user
//! with a permanent password, made idempotently through `aws-sdk-cognitoidentityprovider` (the
//! same calls on AWS and on the local cloud).
//!
//! Pools and clients are found by name (Cognito lets several pools share a name: more than one
//! is refused, rather than picking one). The password lives in a file: read from it when it
//! exists, otherwise made at random and written there (mode 0600); each run sets it again, so
//! the user's password is the file's.

use std::path::{Path, PathBuf};

use aws_sdk_cognitoidentityprovider::Client;
use aws_sdk_cognitoidentityprovider::types::{AttributeType, ExplicitAuthFlowsType, MessageActionType};
use serde::Serialize;

use crate::error::{ProvisionError, aws};

/// The pool's name unless told otherwise (the local cloud's dashboard trusts it by default).
pub const DEFAULT_POOL_NAME: &str = "auditors";

/// The app client's name unless told otherwise (the local cloud's dashboard trusts it by default).
pub const DEFAULT_CLIENT_NAME: &str = "dashboard";

/// The auditor's user name unless told otherwise.
pub const DEFAULT_USERNAME: &str = "auditor";

/// The sign-in flows the dashboard needs from its app client.
pub const REQUIRED_FLOWS: [&str; 2] = ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"];

/// What to make.
#[derive(Debug, Clone)]
pub struct AuditorsSpec {
    /// The user pool's name.
    pub pool_name: String,
    /// The app client's name.
    pub client_name: String,
    /// The auditor's user name.
    pub username: String,
    /// The auditor's e-mail address, kept as the `email` attribute when given.
    pub email: Option<String>,
    /// The file holding the auditor's password (read, or written with a new one).
    pub password_file: PathBuf,
}

/// What exists after a run, printed as JSON by `provision auditors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Auditors {
    /// The user pool's id.
    pub user_pool_id: String,
    /// The app client's id.
    pub client_id: String,
    /// The auditor's user name.
    pub username: String,
    /// The file holding the auditor's password.
    pub password_file: PathBuf,
    /// What this run created or changed, in order.
    pub changes: Vec<String>,
}

/// Makes (or finds) the pool, the client and the user, and sets the user's password.
pub async fn ensure_auditors(cognito: &Client, spec: &AuditorsSpec) -> Result<Auditors, ProvisionError> {
    let mut changes = Vec::new();
    let password = password(&spec.password_file, &mut changes)?;
    let user_pool_id = match find_pool(cognito, &spec.pool_name).await? {
        Some(id) => id,
        None => {
            let created =
                cognito.create_user_pool().pool_name(&spec.pool_name).send().await.map_err(aws("CreateUserPool"))?;
            let id = created
                .user_pool()
                .and_then(|p| p.id())
                .ok_or_else(|| ProvisionError::unexpected("CreateUserPool", "no pool id in the answer"))?
                .to_owned();
            changes.push(format!("user pool {} created ({id})", spec.pool_name));
            id
        }
    };
    let client_id = ensure_client(cognito, &user_pool_id, &spec.client_name, &mut changes).await?;
    let existing = cognito.admin_get_user().user_pool_id(&user_pool_id).username(&spec.username).send().await;
    match existing {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_user_not_found_exception()) => {
            let mut create = cognito
                .admin_create_user()
                .user_pool_id(&user_pool_id)
                .username(&spec.username)
                .message_action(MessageActionType::Suppress);
            if let Some(email) = &spec.email {
                let attribute = AttributeType::builder()
                    .name("email")
                    .value(email)
                    .build()
                    .map_err(|e| ProvisionError::unexpected("AdminCreateUser", e.to_string()))?;
                create = create.user_attributes(attribute);
            }
            create.send().await.map_err(aws("AdminCreateUser"))?;
            changes.push(format!("user {} created", spec.username));
        }
        Err(e) => return Err(aws("AdminGetUser")(e)),
    }
    cognito
        .admin_set_user_password()
        .user_pool_id(&user_pool_id)
        .username(&spec.username)
        .password(&password)
        .permanent(true)
        .send()
        .await
        .map_err(aws("AdminSetUserPassword"))?;
    Ok(Auditors {
        user_pool_id,
        client_id,
        username: spec.username.clone(),
        password_file: spec.password_file.clone(),
        changes,
    })
}

/// The id of the only pool named `name`; several of that name is an error.
async fn find_pool(cognito: &Client, name: &str) -> Result<Option<String>, ProvisionError> {
    let mut found = Vec::new();
    let mut token = None;
    loop {
        let page = cognito
            .list_user_pools()
            .max_results(60)
            .set_next_token(token)
            .send()
            .await
            .map_err(aws("ListUserPools"))?;
        found.extend(
            page.user_pools().iter().filter(|p| p.name() == Some(name)).filter_map(|p| p.id().map(str::to_owned)),
        );
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        n => Err(ProvisionError::InvalidInput(format!(
            "{n} user pools are named {name:?} ({}): name one that is unique",
            found.join(", ")
        ))),
    }
}

async fn ensure_client(
    cognito: &Client,
    pool: &str,
    name: &str,
    changes: &mut Vec<String>,
) -> Result<String, ProvisionError> {
    let listed = cognito
        .list_user_pool_clients()
        .user_pool_id(pool)
        .max_results(60)
        .send()
        .await
        .map_err(aws("ListUserPoolClients"))?;
    if let Some(id) =
        listed.user_pool_clients().iter().find(|c| c.client_name() == Some(name)).and_then(|c| c.client_id())
    {
        let described = cognito
            .describe_user_pool_client()
            .user_pool_id(pool)
            .client_id(id)
            .send()
            .await
            .map_err(aws("DescribeUserPoolClient"))?;
        let flows: Vec<&str> = described
            .user_pool_client()
            .map(|c| c.explicit_auth_flows().iter().map(|f| f.as_str()).collect())
            .unwrap_or_default();
        let missing: Vec<&str> = REQUIRED_FLOWS.into_iter().filter(|f| !flows.contains(f)).collect();
        if !missing.is_empty() {
            return Err(ProvisionError::InvalidInput(format!(
                "app client {name} ({id}) exists without {}: allow them or choose another --client-name",
                missing.join(", ")
            )));
        }
        return Ok(id.to_owned());
    }
    let created = cognito
        .create_user_pool_client()
        .user_pool_id(pool)
        .client_name(name)
        .generate_secret(false)
        .set_explicit_auth_flows(Some(REQUIRED_FLOWS.into_iter().map(ExplicitAuthFlowsType::from).collect()))
        .send()
        .await
        .map_err(aws("CreateUserPoolClient"))?;
    let id = created
        .user_pool_client()
        .and_then(|c| c.client_id())
        .ok_or_else(|| ProvisionError::unexpected("CreateUserPoolClient", "no client id in the answer"))?
        .to_owned();
    changes.push(format!("app client {name} created ({id})"));
    Ok(id)
}

/// The password in `path`, or a new one written there (0600).
fn password(path: &Path, changes: &mut Vec<String>) -> Result<String, ProvisionError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let password = text.trim_end_matches(['\n', '\r']).to_owned();
            if password.is_empty() {
                return Err(ProvisionError::BadFile {
                    path: path.to_owned(),
                    reason: "the password file is empty".into(),
                });
            }
            Ok(password)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let password = generate_password();
            crate::output::write_atomic(path, format!("{password}\n").as_bytes(), 0o600)?;
            changes.push(format!("password written to {}", path.display()));
            Ok(password)
        }
        Err(e) => Err(ProvisionError::file(path)(e)),
    }
}

/// 24 random letters and digits, with one of each class Cognito's default policy asks for.
pub fn generate_password() -> String {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random source");
    let body: String = bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    format!("{body}-Aa7")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_have_every_class_and_differ() {
        let p = generate_password();
        assert!(p.len() >= 24);
        assert!(p.chars().any(|c| c.is_ascii_uppercase()) && p.chars().any(|c| c.is_ascii_lowercase()));
        assert!(p.chars().any(|c| c.is_ascii_digit()) && p.chars().any(|c| !c.is_ascii_alphanumeric()));
        assert_ne!(p, generate_password());
    }

    #[test]
    fn a_password_file_is_read_or_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auditor.password");
        let mut changes = Vec::new();
        let made = password(&path, &mut changes).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(changes.len(), 1);
        assert_eq!(password(&path, &mut changes).unwrap(), made, "read back, unchanged");
        assert_eq!(changes.len(), 1);
        std::fs::write(&path, "").unwrap();
        assert!(matches!(password(&path, &mut changes), Err(ProvisionError::BadFile { .. })));
    }
}
