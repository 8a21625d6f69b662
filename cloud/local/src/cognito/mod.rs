//! Amazon Cognito user pools, the subset a web page needs to sign people in and an operator
//! needs to set that up: pools, app clients, users made by an administrator, and sign-in with a
//! user name and password that returns signed JSON Web Tokens.
//!
//! The wire protocol is AWS JSON 1.1 (the `cognito-idp` service model, API version 2016-04-18,
//! `aws-models/cognito-identity-provider.json` in awslabs/aws-sdk-rust): `POST /` with
//! `X-Amz-Target: AWSCognitoIdentityProviderService.{Operation}` and a JSON body, answered with
//! `application/x-amz-json-1.1`; an error is HTTP 400 with `{"__type": "{Shape}", "message": …}`.
//! The administrative operations are SigV4-signed for `cognito-idp` and authorized as
//! `cognito-idp:{Operation}` on `arn:aws:cognito-idp:{region}:{account}:userpool/{id}` (`*` for
//! CreateUserPool and ListUserPools), as the Service Authorization Reference lists them.
//! InitiateAuth and RespondToAuthChallenge are unsigned, as on AWS: the app client id and the
//! user's password are the credentials.
//!
//! Served: CreateUserPool, DescribeUserPool, ListUserPools, DeleteUserPool, CreateUserPoolClient,
//! DescribeUserPoolClient, ListUserPoolClients, AdminCreateUser, AdminSetUserPassword,
//! AdminGetUser, AdminDeleteUser, ListUsers, InitiateAuth (`USER_PASSWORD_AUTH`,
//! `REFRESH_TOKEN_AUTH`) and RespondToAuthChallenge (`NEW_PASSWORD_REQUIRED`). Tokens follow the
//! Amazon Cognito Developer Guide ("Understanding user pool JSON web tokens"): see [`tokens`];
//! the issuer is the local cloud's own HTTP URL followed by the pool id, so a verifier finds the
//! keys where it finds Cognito's, at `{iss}/.well-known/jwks.json`.
//!
//! # Layout
//! - this file: the records, the operations and their rules;
//! - [`password`]: password policies and hashes;
//! - [`tokens`]: signing keys, JWTs, the JWKS;
//! - [`http`]: the layer on the HTTP endpoint.

pub mod http;
pub mod password;
pub mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::Store;
use crate::time::SharedClock;
use password::{PasswordHash, PasswordPolicy, PolicyInput};
use tokens::SigningKey;

/// What every `X-Amz-Target` of this API starts with.
pub const TARGET_PREFIX: &str = "AWSCognitoIdentityProviderService.";

/// The content type of requests and answers.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Largest request body read.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// How long an id or access token is valid, in seconds (Cognito's default, `ExpiresIn`).
pub const TOKEN_VALIDITY_SECS: u64 = 3600;

/// How long a refresh token is valid, in seconds (Cognito's default: 30 days).
pub const REFRESH_VALIDITY_SECS: u64 = 30 * 24 * 3600;

/// How long a `NEW_PASSWORD_REQUIRED` session may be answered, in seconds (Cognito: 3 minutes).
pub const SESSION_VALIDITY_SECS: u64 = 180;

/// Most items one List answer holds (the model's limit for every List operation served).
pub const MAX_LIST: usize = 60;

const POOLS: &str = "cognito-pool";
const CLIENTS: &str = "cognito-client";
const USERS: &str = "cognito-user";
const REFRESH_TOKENS: &str = "cognito-refresh";

/// The operations served, by their `X-Amz-Target` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CreateUserPool.
    CreateUserPool,
    /// DescribeUserPool.
    DescribeUserPool,
    /// ListUserPools.
    ListUserPools,
    /// DeleteUserPool.
    DeleteUserPool,
    /// CreateUserPoolClient.
    CreateUserPoolClient,
    /// DescribeUserPoolClient.
    DescribeUserPoolClient,
    /// ListUserPoolClients.
    ListUserPoolClients,
    /// AdminCreateUser.
    AdminCreateUser,
    /// AdminSetUserPassword.
    AdminSetUserPassword,
    /// AdminGetUser.
    AdminGetUser,
    /// AdminDeleteUser.
    AdminDeleteUser,
    /// ListUsers.
    ListUsers,
    /// InitiateAuth (unsigned).
    InitiateAuth,
    /// RespondToAuthChallenge (unsigned).
    RespondToAuthChallenge,
}

impl Operation {
    const ALL: [Operation; 14] = [
        Operation::CreateUserPool,
        Operation::DescribeUserPool,
        Operation::ListUserPools,
        Operation::DeleteUserPool,
        Operation::CreateUserPoolClient,
        Operation::DescribeUserPoolClient,
        Operation::ListUserPoolClients,
        Operation::AdminCreateUser,
        Operation::AdminSetUserPassword,
        Operation::AdminGetUser,
        Operation::AdminDeleteUser,
        Operation::ListUsers,
        Operation::InitiateAuth,
        Operation::RespondToAuthChallenge,
    ];

    /// The operation's name, as in `X-Amz-Target` and the IAM action.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateUserPool => "CreateUserPool",
            Operation::DescribeUserPool => "DescribeUserPool",
            Operation::ListUserPools => "ListUserPools",
            Operation::DeleteUserPool => "DeleteUserPool",
            Operation::CreateUserPoolClient => "CreateUserPoolClient",
            Operation::DescribeUserPoolClient => "DescribeUserPoolClient",
            Operation::ListUserPoolClients => "ListUserPoolClients",
            Operation::AdminCreateUser => "AdminCreateUser",
            Operation::AdminSetUserPassword => "AdminSetUserPassword",
            Operation::AdminGetUser => "AdminGetUser",
            Operation::AdminDeleteUser => "AdminDeleteUser",
            Operation::ListUsers => "ListUsers",
            Operation::InitiateAuth => "InitiateAuth",
            Operation::RespondToAuthChallenge => "RespondToAuthChallenge",
        }
    }

    /// The operation an `X-Amz-Target` names (`AWSCognitoIdentityProviderService.InitiateAuth`).
    pub fn from_target(target: &str) -> Option<Self> {
        let name = target.strip_prefix(TARGET_PREFIX)?;
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Whether the caller must sign the request (every operation but the sign-in ones).
    pub fn signed(self) -> bool {
        !matches!(self, Operation::InitiateAuth | Operation::RespondToAuthChallenge)
    }
}

/// A Cognito error, ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CognitoError {
    /// HTTP status: 400, or 500 for the service's own failures.
    pub status: u16,
    /// The shape name (`NotAuthorizedException`), sent as `__type`.
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
}

impl CognitoError {
    /// An error of shape `kind` with HTTP 400.
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        CognitoError { status: 400, kind, message: message.into() }
    }

    /// `InvalidParameterException`: the request breaks a rule of the operation.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", message)
    }

    /// `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", message)
    }

    /// `NotAuthorizedException`: wrong credentials or a refused flow.
    pub fn not_authorized(message: impl Into<String>) -> Self {
        Self::new("NotAuthorizedException", message)
    }

    /// `InternalErrorException` with HTTP 500: the local cloud failed.
    pub fn internal(message: impl Into<String>) -> Self {
        CognitoError { status: 500, kind: "InternalErrorException", message: message.into() }
    }

    /// The JSON body: `{"__type": kind, "message": message}`.
    pub fn body(&self) -> String {
        json!({"__type": self.kind, "message": self.message}).to_string()
    }
}

impl From<crate::store::StoreError> for CognitoError {
    fn from(e: crate::store::StoreError) -> Self {
        CognitoError::internal(format!("the state database failed: {e}"))
    }
}

/// `NotAuthorizedException` for a wrong password or an unknown user: the same words for both,
/// so a caller cannot tell which user names exist.
fn incorrect_credentials() -> CognitoError {
    CognitoError::not_authorized("Incorrect username or password.")
}

/// A user pool as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pool {
    id: String,
    name: String,
    created: f64,
    modified: f64,
    policy: PasswordPolicy,
    kid: String,
    /// The signing key, PKCS#8 DER in base64.
    key: String,
}

/// An app client as stored (keyed by its id, which is unique across pools).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Client {
    id: String,
    pool: String,
    name: String,
    flows: Vec<String>,
    created: f64,
    modified: f64,
}

/// The status of a user's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum UserStatus {
    /// Signed in with a temporary password; must choose a new one.
    #[serde(rename = "FORCE_CHANGE_PASSWORD")]
    ForceChangePassword,
    /// A permanent password.
    #[serde(rename = "CONFIRMED")]
    Confirmed,
}

impl UserStatus {
    fn as_str(self) -> &'static str {
        match self {
            UserStatus::ForceChangePassword => "FORCE_CHANGE_PASSWORD",
            UserStatus::Confirmed => "CONFIRMED",
        }
    }
}

/// A user as stored (keyed `{pool}/{username}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    username: String,
    sub: String,
    attributes: Vec<(String, String)>,
    status: UserStatus,
    enabled: bool,
    password: PasswordHash,
    created: f64,
    modified: f64,
}

impl User {
    fn attributes_json(&self) -> Value {
        let mut list = vec![json!({"Name": "sub", "Value": self.sub})];
        list.extend(self.attributes.iter().map(|(n, v)| json!({"Name": n, "Value": v})));
        Value::Array(list)
    }

    /// The `UserType` shape (AdminCreateUser, ListUsers).
    fn user_type(&self) -> Value {
        json!({
            "Username": self.username,
            "Attributes": self.attributes_json(),
            "UserCreateDate": self.created,
            "UserLastModifiedDate": self.modified,
            "Enabled": self.enabled,
            "UserStatus": self.status.as_str(),
        })
    }
}

/// A refresh token's grant, kept under the SHA-256 of the token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshGrant {
    pool: String,
    client: String,
    username: String,
    expires: u64,
}

/// A pending `NEW_PASSWORD_REQUIRED` challenge.
#[derive(Debug, Clone)]
struct Challenge {
    client: String,
    username: String,
    expires: u64,
}

/// What a verified id token says about who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `cognito:username`.
    pub username: String,
    /// `sub`.
    pub sub: String,
}

/// The user pools: records in `state.sqlite`, signing keys cached once loaded.
#[derive(Clone)]
pub struct Cognito {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: SharedClock,
    region: String,
    account: String,
    issuer_base: String,
    /// One writer at a time: every change reads, checks, then writes.
    write: Mutex<()>,
    keys: Mutex<HashMap<String, Arc<SigningKey>>>,
    challenges: Mutex<HashMap<String, Challenge>>,
}

impl std::fmt::Debug for Cognito {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cognito").field("issuer_base", &self.inner.issuer_base).finish_non_exhaustive()
    }
}

fn required<T>(value: Option<T>, member: &str) -> Result<T, CognitoError> {
    value.ok_or_else(|| {
        CognitoError::invalid(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

fn random_string(alphabet: &[u8], length: usize) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; length];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|b| alphabet[usize::from(*b) % alphabet.len()] as char).collect()
}

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn page_size(requested: Option<i64>, member: &str, required_member: bool) -> Result<usize, CognitoError> {
    match requested {
        None if required_member => required(None, member),
        None => Ok(MAX_LIST),
        Some(n) if (1..=MAX_LIST as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(CognitoError::invalid(format!(
            "1 validation error detected: Value '{n}' at '{member}' failed to satisfy constraint: Member must have value between 1 and {MAX_LIST}"
        ))),
    }
}

/// The answer of a List operation: a page of `items` (sorted by key) after `token` under
/// `member`, and under `token_member` the token of the next page when more remain.
fn page<T: Serialize>(
    items: Vec<(String, T)>,
    token: Option<&str>,
    size: usize,
    member: &str,
    token_member: &str,
) -> Value {
    let rest: Vec<(String, T)> = items.into_iter().filter(|(k, _)| token.is_none_or(|t| k.as_str() > t)).collect();
    let more = rest.len() > size;
    let taken: Vec<(String, T)> = rest.into_iter().take(size).collect();
    let mut answer = serde_json::Map::new();
    if more && let Some((last, _)) = taken.last() {
        answer.insert(token_member.to_owned(), Value::String(last.clone()));
    }
    answer.insert(member.to_owned(), json!(taken.iter().map(|(_, v)| v).collect::<Vec<_>>()));
    Value::Object(answer)
}

fn parse<T: DeserializeOwned>(request: &Value) -> Result<T, CognitoError> {
    serde_json::from_value(request.clone()).map_err(|e| {
        CognitoError::new("SerializationException", format!("the request does not fit the operation: {e}"))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Policies {
    password_policy: Option<PolicyInput>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreatePoolRequest {
    pool_name: Option<String>,
    policies: Option<Policies>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolRequest {
    user_pool_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListRequest {
    user_pool_id: Option<String>,
    max_results: Option<i64>,
    limit: Option<i64>,
    next_token: Option<String>,
    pagination_token: Option<String>,
    filter: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateClientRequest {
    user_pool_id: Option<String>,
    client_name: Option<String>,
    generate_secret: Option<bool>,
    explicit_auth_flows: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ClientRequest {
    user_pool_id: Option<String>,
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Attribute {
    name: String,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateUserRequest {
    user_pool_id: Option<String>,
    username: Option<String>,
    user_attributes: Option<Vec<Attribute>>,
    temporary_password: Option<String>,
    message_action: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UserRequest {
    user_pool_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    permanent: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AuthRequest {
    auth_flow: Option<String>,
    client_id: Option<String>,
    auth_parameters: Option<HashMap<String, String>>,
    challenge_name: Option<String>,
    session: Option<String>,
    challenge_responses: Option<HashMap<String, String>>,
}

/// The flows an app client may name in `ExplicitAuthFlows`; the legacy names map to the `ALLOW_` ones.
fn normalize_flow(flow: &str) -> Option<&'static str> {
    Some(match flow {
        "ALLOW_USER_PASSWORD_AUTH" | "USER_PASSWORD_AUTH" => "ALLOW_USER_PASSWORD_AUTH",
        "ALLOW_REFRESH_TOKEN_AUTH" => "ALLOW_REFRESH_TOKEN_AUTH",
        "ALLOW_USER_SRP_AUTH" => "ALLOW_USER_SRP_AUTH",
        "ALLOW_CUSTOM_AUTH" | "CUSTOM_AUTH_FLOW_ONLY" => "ALLOW_CUSTOM_AUTH",
        "ALLOW_ADMIN_USER_PASSWORD_AUTH" | "ADMIN_NO_SRP_AUTH" => "ALLOW_ADMIN_USER_PASSWORD_AUTH",
        "ALLOW_USER_AUTH" => "ALLOW_USER_AUTH",
        _ => return None,
    })
}

impl Cognito {
    /// The service over `store`; tokens name `{issuer_base}/{poolId}` as their issuer (the local
    /// cloud's public HTTP URL, where the JWKS is served).
    pub fn new(store: Store, clock: SharedClock, region: &str, account: &str, issuer_base: &str) -> Self {
        Cognito {
            inner: Arc::new(Inner {
                store,
                clock,
                region: region.to_owned(),
                account: account.to_owned(),
                issuer_base: issuer_base.trim_end_matches('/').to_owned(),
                write: Mutex::new(()),
                keys: Mutex::new(HashMap::new()),
                challenges: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The region in ARNs.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The account in ARNs.
    pub fn account(&self) -> &str {
        &self.inner.account
    }

    /// The issuer (`iss`) of the tokens of pool `pool_id`.
    pub fn issuer(&self, pool_id: &str) -> String {
        format!("{}/{pool_id}", self.inner.issuer_base)
    }

    /// The IAM resource an operation acts on: the pool's ARN, or `*` without a pool.
    pub fn resource(&self, op: Operation, request: &Value) -> String {
        match (op, request["UserPoolId"].as_str()) {
            (Operation::CreateUserPool | Operation::ListUserPools, _) | (_, None) => "*".into(),
            (_, Some(pool)) => {
                format!("arn:aws:cognito-idp:{}:{}:userpool/{pool}", self.inner.region, self.inner.account)
            }
        }
    }

    fn now_secs(&self) -> u64 {
        self.inner.clock.now_secs()
    }

    fn now_epoch(&self) -> f64 {
        self.inner.clock.now_millis() as f64 / 1000.0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Result<Option<T>, CognitoError> {
        match self.inner.store.get(kind, key)? {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| CognitoError::internal(format!("a stored {kind} record is unreadable: {e}"))),
        }
    }

    fn put<T: Serialize>(&self, kind: &str, key: &str, value: &T) -> Result<(), CognitoError> {
        let json = serde_json::to_string(value).map_err(|e| CognitoError::internal(e.to_string()))?;
        Ok(self.inner.store.put(kind, key, &json)?)
    }

    /// Every record of `kind` (or those whose key starts with `prefix`), parsed, by key.
    fn records<T: DeserializeOwned>(&self, kind: &str, prefix: &str) -> Result<Vec<(String, T)>, CognitoError> {
        self.inner
            .store
            .with_prefix(kind, prefix)?
            .into_iter()
            .map(|(key, json)| {
                serde_json::from_str(&json)
                    .map(|value| (key, value))
                    .map_err(|e| CognitoError::internal(format!("a stored {kind} record is unreadable: {e}")))
            })
            .collect()
    }

    fn pool(&self, id: &str) -> Result<Pool, CognitoError> {
        self.get(POOLS, id)?.ok_or_else(|| CognitoError::not_found(format!("User pool {id} does not exist.")))
    }

    fn user(&self, pool: &str, username: &str) -> Result<User, CognitoError> {
        self.get(USERS, &format!("{pool}/{username}"))?
            .ok_or_else(|| CognitoError::new("UserNotFoundException", "User does not exist."))
    }

    fn client(&self, id: &str) -> Result<Client, CognitoError> {
        self.get(CLIENTS, id)?.ok_or_else(|| CognitoError::not_found(format!("User pool client {id} does not exist.")))
    }

    /// The signing key of pool `pool_id` (loaded once, then cached).
    fn key(&self, pool_id: &str) -> Result<Arc<SigningKey>, CognitoError> {
        if let Some(key) = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner()).get(pool_id) {
            return Ok(key.clone());
        }
        let pool = self.pool(pool_id)?;
        let der = STANDARD.decode(&pool.key).map_err(|e| CognitoError::internal(e.to_string()))?;
        let key = Arc::new(SigningKey::from_pkcs8(&pool.kid, &der).map_err(CognitoError::internal)?);
        self.inner.keys.lock().unwrap_or_else(|e| e.into_inner()).insert(pool_id.to_owned(), key.clone());
        Ok(key)
    }

    /// The JSON Web Key Set of pool `pool_id` (`{"keys": [...]}`), or `None` for an unknown pool.
    pub fn jwks(&self, pool_id: &str) -> Result<Option<Value>, CognitoError> {
        if self.inner.store.get(POOLS, pool_id)?.is_none() {
            return Ok(None);
        }
        Ok(Some(json!({"keys": [self.key(pool_id)?.jwk()]})))
    }

    /// Checks an id token as a web application must (the Cognito Developer Guide's "Verifying a
    /// JSON web token"): signed by pool `pool_id`'s key, `iss` the pool, `aud` = `client_id`,
    /// `token_use` = `id`, not expired. Returns who it names, or why it is refused.
    pub fn verify_id_token(&self, token: &str, pool_id: &str, client_id: &str) -> Result<Identity, String> {
        let key = self.key(pool_id).map_err(|e| e.message)?;
        let claims = key.verify(token)?;
        if claims["iss"] != self.issuer(pool_id).as_str() {
            return Err("the token was issued by another user pool".into());
        }
        if claims["aud"] != client_id {
            return Err("the token was issued to another app client".into());
        }
        if claims["token_use"] != "id" {
            return Err("the token is not an id token".into());
        }
        match claims["exp"].as_u64() {
            Some(exp) if exp > self.now_secs() => {}
            _ => return Err("the token has expired".into()),
        }
        Ok(Identity {
            username: claims["cognito:username"].as_str().unwrap_or_default().to_owned(),
            sub: claims["sub"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// The id of the user pool named `name`, if exactly one has that name.
    pub fn pool_id_by_name(&self, name: &str) -> Result<Option<String>, CognitoError> {
        let mut found: Vec<String> =
            self.records::<Pool>(POOLS, "")?.into_iter().filter(|(_, p)| p.name == name).map(|(id, _)| id).collect();
        Ok(if found.len() == 1 { found.pop() } else { None })
    }

    /// The id of the app client of pool `pool_id` named `name`, if exactly one has that name.
    pub fn client_id_by_name(&self, pool_id: &str, name: &str) -> Result<Option<String>, CognitoError> {
        let mut found: Vec<String> =
            self.clients_of(pool_id)?.into_iter().filter(|(_, c)| c.name == name).map(|(id, _)| id).collect();
        Ok(if found.len() == 1 { found.pop() } else { None })
    }

    /// Runs one operation; `request` is the parsed JSON body (an object).
    pub fn call(&self, op: Operation, request: &Value) -> Result<Value, CognitoError> {
        match op {
            Operation::CreateUserPool => self.create_user_pool(parse(request)?),
            Operation::DescribeUserPool => {
                let r: PoolRequest = parse(request)?;
                let pool = self.pool(&required(r.user_pool_id, "userPoolId")?)?;
                Ok(json!({"UserPool": self.pool_json(&pool)}))
            }
            Operation::ListUserPools => self.list_user_pools(parse(request)?),
            Operation::DeleteUserPool => self.delete_user_pool(parse(request)?),
            Operation::CreateUserPoolClient => self.create_client(parse(request)?),
            Operation::DescribeUserPoolClient => {
                let r: ClientRequest = parse(request)?;
                let pool = required(r.user_pool_id, "userPoolId")?;
                let id = required(r.client_id, "clientId")?;
                let client = self.client(&id)?;
                if client.pool != pool {
                    return Err(CognitoError::not_found(format!("User pool client {id} does not exist.")));
                }
                Ok(json!({"UserPoolClient": client_json(&client)}))
            }
            Operation::ListUserPoolClients => self.list_clients(parse(request)?),
            Operation::AdminCreateUser => self.admin_create_user(parse(request)?),
            Operation::AdminSetUserPassword => self.admin_set_password(parse(request)?),
            Operation::AdminGetUser => {
                let r: UserRequest = parse(request)?;
                let pool = self.pool(&required(r.user_pool_id, "userPoolId")?)?;
                let user = self.user(&pool.id, &required(r.username, "username")?)?;
                let mut answer = user.user_type();
                answer["UserAttributes"] = answer["Attributes"].take();
                answer.as_object_mut().map(|o| o.remove("Attributes"));
                Ok(answer)
            }
            Operation::AdminDeleteUser => {
                let r: UserRequest = parse(request)?;
                let pool = self.pool(&required(r.user_pool_id, "userPoolId")?)?;
                let username = required(r.username, "username")?;
                let _guard = self.lock();
                self.user(&pool.id, &username)?;
                self.inner.store.delete(USERS, &format!("{}/{username}", pool.id))?;
                Ok(json!({}))
            }
            Operation::ListUsers => self.list_users(parse(request)?),
            Operation::InitiateAuth => self.initiate_auth(parse(request)?),
            Operation::RespondToAuthChallenge => self.respond_to_challenge(parse(request)?),
        }
    }

    fn pool_json(&self, pool: &Pool) -> Value {
        json!({
            "Id": pool.id,
            "Name": pool.name,
            "Arn": format!("arn:aws:cognito-idp:{}:{}:userpool/{}", self.inner.region, self.inner.account, pool.id),
            "Policies": {"PasswordPolicy": pool.policy},
            "CreationDate": pool.created,
            "LastModifiedDate": pool.modified,
            "EstimatedNumberOfUsers": self.inner.store.with_prefix(USERS, &format!("{}/", pool.id)).map(|u| u.len()).unwrap_or(0),
            "MfaConfiguration": "OFF",
            "DeletionProtection": "INACTIVE",
        })
    }

    fn create_user_pool(&self, r: CreatePoolRequest) -> Result<Value, CognitoError> {
        let name = required(r.pool_name, "poolName")?;
        if name.is_empty() || name.chars().count() > 128 {
            return Err(CognitoError::invalid("PoolName must be 1 to 128 characters long"));
        }
        let policy = match r.policies.and_then(|p| p.password_policy) {
            Some(input) => input.into_policy().map_err(CognitoError::invalid)?,
            None => PasswordPolicy::default(),
        };
        let der = tokens::generate_pkcs8().map_err(CognitoError::internal)?;
        let now = self.now_epoch();
        let pool = Pool {
            id: format!("{}_{}", self.inner.region, random_string(ALNUM, 9)),
            name,
            created: now,
            modified: now,
            policy,
            kid: STANDARD.encode(random_string(ALNUM, 32)),
            key: STANDARD.encode(der),
        };
        let _guard = self.lock();
        self.put(POOLS, &pool.id, &pool)?;
        Ok(json!({"UserPool": self.pool_json(&pool)}))
    }

    fn list_user_pools(&self, r: ListRequest) -> Result<Value, CognitoError> {
        let size = page_size(r.max_results, "maxResults", true)?;
        let pools = self
            .records::<Pool>(POOLS, "")?
            .into_iter()
            .map(|(id, p)| {
                (id, json!({"Id": p.id, "Name": p.name, "CreationDate": p.created, "LastModifiedDate": p.modified}))
            })
            .collect();
        Ok(page(pools, r.next_token.as_deref(), size, "UserPools", "NextToken"))
    }

    fn delete_user_pool(&self, r: PoolRequest) -> Result<Value, CognitoError> {
        let id = required(r.user_pool_id, "userPoolId")?;
        let _guard = self.lock();
        self.pool(&id)?;
        let prefix = format!("{id}/");
        for (key, _) in self.inner.store.with_prefix(USERS, &prefix)? {
            self.inner.store.delete(USERS, &key)?;
        }
        for (key, client) in self.clients_of(&id)? {
            debug_assert_eq!(client.pool, id);
            self.inner.store.delete(CLIENTS, &key)?;
        }
        for (key, json) in self.inner.store.all(REFRESH_TOKENS)? {
            if serde_json::from_str::<RefreshGrant>(&json).is_ok_and(|g| g.pool == id) {
                self.inner.store.delete(REFRESH_TOKENS, &key)?;
            }
        }
        self.inner.store.delete(POOLS, &id)?;
        self.inner.keys.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        Ok(json!({}))
    }

    fn clients_of(&self, pool: &str) -> Result<Vec<(String, Client)>, CognitoError> {
        Ok(self.records::<Client>(CLIENTS, "")?.into_iter().filter(|(_, c)| c.pool == pool).collect())
    }

    fn create_client(&self, r: CreateClientRequest) -> Result<Value, CognitoError> {
        let pool = self.pool(&required(r.user_pool_id, "userPoolId")?)?;
        let name = required(r.client_name, "clientName")?;
        if name.is_empty() || name.chars().count() > 128 {
            return Err(CognitoError::invalid("ClientName must be 1 to 128 characters long"));
        }
        if r.generate_secret == Some(true) {
            return Err(CognitoError::invalid(
                "the local cloud's Cognito makes public app clients only: GenerateSecret must be false (no SECRET_HASH support)",
            ));
        }
        let flows = match r.explicit_auth_flows {
            // Cognito's default for a client created without flows.
            None => vec!["ALLOW_CUSTOM_AUTH".into(), "ALLOW_REFRESH_TOKEN_AUTH".into(), "ALLOW_USER_SRP_AUTH".into()],
            Some(given) => {
                let mut flows = Vec::new();
                for flow in &given {
                    let normalized = normalize_flow(flow).ok_or_else(|| {
                        CognitoError::invalid(format!("{flow} is not a valid ExplicitAuthFlows value"))
                    })?;
                    if !flows.iter().any(|f: &String| f == normalized) {
                        flows.push(normalized.to_owned());
                    }
                }
                flows
            }
        };
        let now = self.now_epoch();
        let client =
            Client { id: random_string(LOWER_ALNUM, 26), pool: pool.id, name, flows, created: now, modified: now };
        let _guard = self.lock();
        self.put(CLIENTS, &client.id, &client)?;
        Ok(json!({"UserPoolClient": client_json(&client)}))
    }

    fn list_clients(&self, r: ListRequest) -> Result<Value, CognitoError> {
        let pool = self.pool(&required(r.user_pool_id, "userPoolId")?)?;
        let size = page_size(r.max_results, "maxResults", false)?;
        let clients = self
            .clients_of(&pool.id)?
            .into_iter()
            .map(|(id, c)| (id, json!({"ClientId": c.id, "UserPoolId": c.pool, "ClientName": c.name})))
            .collect();
        Ok(page(clients, r.next_token.as_deref(), size, "UserPoolClients", "NextToken"))
    }

    fn admin_create_user(&self, r: CreateUserRequest) -> Result<Value, CognitoError> {
        let pool = self.pool(&required(r.user_pool_id, "userPoolId")?)?;
        let username = required(r.username, "username")?;
        if username.is_empty() || username.chars().count() > 128 || username.chars().any(char::is_whitespace) {
            return Err(CognitoError::invalid("Username must be 1 to 128 characters long, without spaces"));
        }
        if let Some(action) = r.message_action.as_deref().filter(|a| !matches!(*a, "SUPPRESS" | "RESEND")) {
            return Err(CognitoError::invalid(format!("{action} is not a valid MessageAction (RESEND, SUPPRESS)")));
        }
        let temporary = match r.temporary_password {
            Some(p) => {
                pool.policy.check(&p).map_err(|m| CognitoError::new("InvalidPasswordException", m))?;
                p
            }
            None => pool.policy.generate(),
        };
        let mut attributes = Vec::new();
        for a in r.user_attributes.unwrap_or_default() {
            if a.name == "sub" {
                return Err(CognitoError::invalid("sub is made by the user pool and cannot be set"));
            }
            attributes.push((a.name, a.value.unwrap_or_default()));
        }
        let now = self.now_epoch();
        let user = User {
            username: username.clone(),
            sub: uuid::Uuid::new_v4().to_string(),
            attributes,
            status: UserStatus::ForceChangePassword,
            enabled: true,
            password: PasswordHash::new(&temporary),
            created: now,
            modified: now,
        };
        let key = format!("{}/{username}", pool.id);
        let _guard = self.lock();
        if self.inner.store.get(USERS, &key)?.is_some() {
            return Err(CognitoError::new("UsernameExistsException", "User account already exists"));
        }
        self.put(USERS, &key, &user)?;
        Ok(json!({"User": user.user_type()}))
    }

    fn admin_set_password(&self, r: UserRequest) -> Result<Value, CognitoError> {
        let pool = self.pool(&required(r.user_pool_id, "userPoolId")?)?;
        let username = required(r.username, "username")?;
        let password = required(r.password, "password")?;
        pool.policy.check(&password).map_err(|m| CognitoError::new("InvalidPasswordException", m))?;
        let hash = PasswordHash::new(&password);
        let _guard = self.lock();
        let mut user = self.user(&pool.id, &username)?;
        user.password = hash;
        user.status = if r.permanent == Some(true) { UserStatus::Confirmed } else { UserStatus::ForceChangePassword };
        user.modified = self.now_epoch();
        self.put(USERS, &format!("{}/{username}", pool.id), &user)?;
        Ok(json!({}))
    }

    fn list_users(&self, r: ListRequest) -> Result<Value, CognitoError> {
        let pool = self.pool(&required(r.user_pool_id, "userPoolId")?)?;
        if r.filter.as_deref().is_some_and(|f| !f.is_empty()) {
            return Err(CognitoError::invalid("the local cloud's ListUsers does not support Filter"));
        }
        let size = page_size(r.limit, "limit", false)?;
        let users = self
            .records::<User>(USERS, &format!("{}/", pool.id))?
            .into_iter()
            .map(|(key, user)| (key, user.user_type()))
            .collect();
        Ok(page(users, r.pagination_token.as_deref(), size, "Users", "PaginationToken"))
    }

    fn initiate_auth(&self, r: AuthRequest) -> Result<Value, CognitoError> {
        let flow = required(r.auth_flow, "authFlow")?;
        let client = self.client(&required(r.client_id, "clientId")?)?;
        let params = r.auth_parameters.unwrap_or_default();
        let param = |name: &str| {
            params.get(name).cloned().ok_or_else(|| CognitoError::invalid(format!("Missing required parameter {name}")))
        };
        match flow.as_str() {
            "USER_PASSWORD_AUTH" => {
                if !client.flows.iter().any(|f| f == "ALLOW_USER_PASSWORD_AUTH") {
                    return Err(CognitoError::invalid("USER_PASSWORD_AUTH flow not enabled for this client"));
                }
                let (username, password) = (param("USERNAME")?, param("PASSWORD")?);
                let user = self.user(&client.pool, &username).map_err(|_| incorrect_credentials())?;
                if !user.password.matches(&password) {
                    return Err(incorrect_credentials());
                }
                if !user.enabled {
                    return Err(CognitoError::not_authorized("User is disabled."));
                }
                match user.status {
                    UserStatus::Confirmed => self.authenticated(&client, &user, true),
                    UserStatus::ForceChangePassword => Ok(self.new_password_challenge(&client, &user)),
                }
            }
            "REFRESH_TOKEN_AUTH" | "REFRESH_TOKEN" => {
                if !client.flows.iter().any(|f| f == "ALLOW_REFRESH_TOKEN_AUTH") {
                    return Err(CognitoError::invalid("REFRESH_TOKEN_AUTH flow not enabled for this client"));
                }
                let token = param("REFRESH_TOKEN")?;
                let grant: Option<RefreshGrant> = self.get(REFRESH_TOKENS, &refresh_key(&token))?;
                let grant = grant
                    .filter(|g| g.client == client.id && g.expires > self.now_secs())
                    .ok_or_else(|| CognitoError::not_authorized("Invalid Refresh Token"))?;
                let user = self
                    .user(&grant.pool, &grant.username)
                    .map_err(|_| CognitoError::not_authorized("Invalid Refresh Token"))?;
                self.authenticated(&client, &user, false)
            }
            "USER_SRP_AUTH" | "CUSTOM_AUTH" | "ADMIN_USER_PASSWORD_AUTH" | "ADMIN_NO_SRP_AUTH" | "USER_AUTH" => {
                Err(CognitoError::invalid(format!("the local cloud's Cognito does not serve the {flow} flow")))
            }
            _ => Err(CognitoError::invalid(format!(
                "1 validation error detected: Value '{flow}' at 'authFlow' failed to satisfy constraint: Member must satisfy enum value set"
            ))),
        }
    }

    fn new_password_challenge(&self, client: &Client, user: &User) -> Value {
        let session = random_string(ALNUM, 64);
        let challenge = Challenge {
            client: client.id.clone(),
            username: user.username.clone(),
            expires: self.now_secs() + SESSION_VALIDITY_SECS,
        };
        let mut challenges = self.inner.challenges.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now_secs();
        challenges.retain(|_, c| c.expires > now);
        challenges.insert(session.clone(), challenge);
        json!({
            "ChallengeName": "NEW_PASSWORD_REQUIRED",
            "Session": session,
            "ChallengeParameters": {
                "USER_ID_FOR_SRP": user.username,
                "requiredAttributes": "[]",
                "userAttributes": Value::Object(user.attributes.iter().map(|(n, v)| (n.clone(), Value::String(v.clone()))).collect()).to_string(),
            },
        })
    }

    fn respond_to_challenge(&self, r: AuthRequest) -> Result<Value, CognitoError> {
        let name = required(r.challenge_name, "challengeName")?;
        let client = self.client(&required(r.client_id, "clientId")?)?;
        if name != "NEW_PASSWORD_REQUIRED" {
            return Err(CognitoError::invalid(format!(
                "the local cloud's Cognito does not serve the {name} challenge"
            )));
        }
        let session = required(r.session, "session")?;
        let responses = r.challenge_responses.unwrap_or_default();
        let new_password = responses
            .get("NEW_PASSWORD")
            .ok_or_else(|| CognitoError::invalid("Missing required parameter NEW_PASSWORD"))?;
        let challenge = {
            let challenges = self.inner.challenges.lock().unwrap_or_else(|e| e.into_inner());
            challenges.get(&session).cloned()
        };
        let challenge =
            challenge.filter(|c| c.client == client.id && c.expires > self.now_secs()).ok_or_else(|| {
                CognitoError::new("CodeMismatchException", "Invalid session for the user, session is expired.")
            })?;
        if responses.get("USERNAME").is_some_and(|u| *u != challenge.username) {
            return Err(CognitoError::not_authorized("Incorrect username or password."));
        }
        let pool = self.pool(&client.pool)?;
        pool.policy.check(new_password).map_err(|m| CognitoError::new("InvalidPasswordException", m))?;
        let user = {
            let _guard = self.lock();
            let mut user = self.user(&pool.id, &challenge.username)?;
            user.password = PasswordHash::new(new_password);
            user.status = UserStatus::Confirmed;
            user.modified = self.now_epoch();
            self.put(USERS, &format!("{}/{}", pool.id, user.username), &user)?;
            user
        };
        self.inner.challenges.lock().unwrap_or_else(|e| e.into_inner()).remove(&session);
        self.authenticated(&client, &user, true)
    }

    /// The tokens for `user` signed in through `client` (a refresh token only on a sign-in, not
    /// on a refresh, as Cognito does).
    fn authenticated(&self, client: &Client, user: &User, with_refresh: bool) -> Result<Value, CognitoError> {
        let key = self.key(&client.pool)?;
        let now = self.now_secs();
        let event_id = uuid::Uuid::new_v4().to_string();
        let origin_jti = uuid::Uuid::new_v4().to_string();
        let iss = self.issuer(&client.pool);
        let mut id_claims = json!({
            "sub": user.sub,
            "aud": client.id,
            "event_id": event_id,
            "token_use": "id",
            "auth_time": now,
            "iss": iss,
            "cognito:username": user.username,
            "exp": now + TOKEN_VALIDITY_SECS,
            "iat": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "origin_jti": origin_jti,
        });
        for (name, value) in &user.attributes {
            id_claims[name.as_str()] = Value::String(value.clone());
        }
        let access_claims = json!({
            "sub": user.sub,
            "event_id": event_id,
            "token_use": "access",
            "scope": "aws.cognito.signin.user.admin",
            "auth_time": now,
            "iss": iss,
            "exp": now + TOKEN_VALIDITY_SECS,
            "iat": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "origin_jti": origin_jti,
            "client_id": client.id,
            "username": user.username,
        });
        let mut result = json!({
            "AccessToken": key.sign(&access_claims).map_err(CognitoError::internal)?,
            "IdToken": key.sign(&id_claims).map_err(CognitoError::internal)?,
            "ExpiresIn": TOKEN_VALIDITY_SECS,
            "TokenType": "Bearer",
        });
        if with_refresh {
            let token = random_string(ALNUM, 96);
            let grant = RefreshGrant {
                pool: client.pool.clone(),
                client: client.id.clone(),
                username: user.username.clone(),
                expires: now + REFRESH_VALIDITY_SECS,
            };
            self.put(REFRESH_TOKENS, &refresh_key(&token), &grant)?;
            result["RefreshToken"] = Value::String(token);
        }
        Ok(json!({"AuthenticationResult": result, "ChallengeParameters": {}}))
    }
}

/// Refresh tokens are kept by their SHA-256, so the database does not hold usable tokens.
fn refresh_key(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn client_json(client: &Client) -> Value {
    json!({
        "UserPoolId": client.pool,
        "ClientName": client.name,
        "ClientId": client.id,
        "ExplicitAuthFlows": client.flows,
        "CreationDate": client.created,
        "LastModifiedDate": client.modified,
        "TokenValidityUnits": {"IdToken": "hours", "AccessToken": "hours", "RefreshToken": "days"},
        "IdTokenValidity": 1,
        "AccessTokenValidity": 1,
        "RefreshTokenValidity": 30,
    })
}

#[cfg(test)]
mod tests;
