use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::time::ManualClock;

const ISSUER_BASE: &str = "http://127.0.0.1:4566";

struct Fixture {
    cognito: Cognito,
    store: Store,
    clock: Arc<ManualClock>,
    pool: String,
    client: String,
}

fn fixture(flows: &[&str]) -> Fixture {
    let store = Store::in_memory().unwrap();
    let clock = ManualClock::at(1_700_000_000_000);
    let cognito = Cognito::new(store.clone(), clock.clone(), "us-east-1", "000000000000", ISSUER_BASE);
    let pool = cognito.call(Operation::CreateUserPool, &json!({"PoolName": "auditors"})).unwrap();
    let pool = pool["UserPool"]["Id"].as_str().unwrap().to_owned();
    let client = cognito
        .call(
            Operation::CreateUserPoolClient,
            &json!({"UserPoolId": pool, "ClientName": "dashboard", "ExplicitAuthFlows": flows}),
        )
        .unwrap();
    let client = client["UserPoolClient"]["ClientId"].as_str().unwrap().to_owned();
    Fixture { cognito, store, clock, pool, client }
}

impl Fixture {
    fn user(&self, name: &str, password: &str, permanent: bool) {
        self.cognito
            .call(
                Operation::AdminCreateUser,
                &json!({"UserPoolId": self.pool, "Username": name, "MessageAction": "SUPPRESS",
                        "UserAttributes": [{"Name": "email", "Value": format!("{name}@example.com")}]}),
            )
            .unwrap();
        self.cognito
            .call(
                Operation::AdminSetUserPassword,
                &json!({"UserPoolId": self.pool, "Username": name, "Password": password, "Permanent": permanent}),
            )
            .unwrap();
    }

    fn sign_in(&self, name: &str, password: &str) -> Result<Value, CognitoError> {
        self.cognito.call(
            Operation::InitiateAuth,
            &json!({"AuthFlow": "USER_PASSWORD_AUTH", "ClientId": self.client,
                    "AuthParameters": {"USERNAME": name, "PASSWORD": password}}),
        )
    }
}

const FLOWS: &[&str] = &["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"];

#[test]
fn a_user_signs_in_with_a_password_and_gets_tokens_with_cognitos_claims() {
    let f = fixture(FLOWS);
    f.user("alice", "Correct-horse-1", true);
    let answer = f.sign_in("alice", "Correct-horse-1").unwrap();
    let result = &answer["AuthenticationResult"];
    assert_eq!((result["ExpiresIn"].as_u64(), result["TokenType"].as_str()), (Some(3600), Some("Bearer")));
    assert!(result["RefreshToken"].as_str().is_some_and(|t| !t.is_empty()));
    let key = f.cognito.key(&f.pool).unwrap();
    let id = key.verify(result["IdToken"].as_str().unwrap()).unwrap();
    let access = key.verify(result["AccessToken"].as_str().unwrap()).unwrap();
    let issuer = format!("{ISSUER_BASE}/{}", f.pool);
    assert_eq!((id["iss"].as_str(), id["aud"].as_str()), (Some(issuer.as_str()), Some(f.client.as_str())));
    assert_eq!((id["token_use"].as_str(), id["cognito:username"].as_str()), (Some("id"), Some("alice")));
    assert_eq!(id["email"], "alice@example.com");
    assert_eq!(id["exp"].as_u64().unwrap() - id["iat"].as_u64().unwrap(), 3600);
    assert_eq!((access["token_use"].as_str(), access["client_id"].as_str()), (Some("access"), Some(f.client.as_str())));
    assert_eq!((access["username"].as_str(), access["sub"].as_str()), (Some("alice"), id["sub"].as_str()));
    for claim in ["jti", "event_id", "auth_time"] {
        assert!(!id[claim].is_null() && !access[claim].is_null(), "{claim}");
    }
    let identity = f.cognito.verify_id_token(result["IdToken"].as_str().unwrap(), &f.pool, &f.client).unwrap();
    assert_eq!(identity.username, "alice");
}

#[test]
fn a_wrong_password_and_an_unknown_user_read_the_same() {
    let f = fixture(FLOWS);
    f.user("alice", "Correct-horse-1", true);
    let wrong = f.sign_in("alice", "Wrong-horse-1").unwrap_err();
    let unknown = f.sign_in("bob", "Correct-horse-1").unwrap_err();
    assert_eq!(wrong, unknown);
    assert_eq!((wrong.kind, wrong.message.as_str()), ("NotAuthorizedException", "Incorrect username or password."));
}

#[test]
fn a_client_without_the_password_flow_refuses_it() {
    let f = fixture(&["ALLOW_REFRESH_TOKEN_AUTH"]);
    f.user("alice", "Correct-horse-1", true);
    let e = f.sign_in("alice", "Correct-horse-1").unwrap_err();
    assert_eq!(e.kind, "InvalidParameterException");
    assert!(e.message.contains("USER_PASSWORD_AUTH flow not enabled"), "{e}");
}

#[test]
fn a_temporary_password_leads_to_the_new_password_challenge() {
    let f = fixture(FLOWS);
    f.user("alice", "Temporary-pw-1", false);
    let challenge = f.sign_in("alice", "Temporary-pw-1").unwrap();
    assert_eq!(challenge["ChallengeName"], "NEW_PASSWORD_REQUIRED");
    let session = challenge["Session"].as_str().unwrap();
    let respond = |password: &str, session: &str| {
        f.cognito.call(
            Operation::RespondToAuthChallenge,
            &json!({"ClientId": f.client, "ChallengeName": "NEW_PASSWORD_REQUIRED", "Session": session,
                    "ChallengeResponses": {"USERNAME": "alice", "NEW_PASSWORD": password}}),
        )
    };
    assert_eq!(respond("short", session).unwrap_err().kind, "InvalidPasswordException");
    assert_eq!(respond("Chosen-password-2", "forged").unwrap_err().kind, "CodeMismatchException");
    let done = respond("Chosen-password-2", session).unwrap();
    assert!(done["AuthenticationResult"]["IdToken"].is_string());
    assert!(f.sign_in("alice", "Chosen-password-2").unwrap()["AuthenticationResult"].is_object());
    assert_eq!(f.sign_in("alice", "Temporary-pw-1").unwrap_err().kind, "NotAuthorizedException");
}

#[test]
fn expired_foreign_and_access_tokens_are_refused_as_id_tokens() {
    let f = fixture(FLOWS);
    f.user("alice", "Correct-horse-1", true);
    let result = f.sign_in("alice", "Correct-horse-1").unwrap()["AuthenticationResult"].clone();
    let id = result["IdToken"].as_str().unwrap();
    assert!(f.cognito.verify_id_token(id, &f.pool, "another-client").unwrap_err().contains("another app client"));
    let access = result["AccessToken"].as_str().unwrap();
    assert!(f.cognito.verify_id_token(access, &f.pool, &f.client).is_err());
    f.clock.advance(std::time::Duration::from_secs(TOKEN_VALIDITY_SECS + 1));
    assert!(f.cognito.verify_id_token(id, &f.pool, &f.client).unwrap_err().contains("expired"));
}

#[test]
fn a_refresh_token_gives_new_tokens_and_an_unknown_one_is_refused() {
    let f = fixture(FLOWS);
    f.user("alice", "Correct-horse-1", true);
    let refresh = f.sign_in("alice", "Correct-horse-1").unwrap()["AuthenticationResult"]["RefreshToken"].clone();
    let call = |token: &Value| {
        f.cognito.call(
            Operation::InitiateAuth,
            &json!({"AuthFlow": "REFRESH_TOKEN_AUTH", "ClientId": f.client, "AuthParameters": {"REFRESH_TOKEN": token}}),
        )
    };
    let renewed = call(&refresh).unwrap();
    assert!(renewed["AuthenticationResult"]["IdToken"].is_string());
    assert!(renewed["AuthenticationResult"]["RefreshToken"].is_null(), "a refresh does not issue a new refresh token");
    assert_eq!(call(&json!("not-a-token")).unwrap_err().kind, "NotAuthorizedException");
}

#[test]
fn pools_clients_users_and_keys_survive_a_restart() {
    let f = fixture(FLOWS);
    f.user("alice", "Correct-horse-1", true);
    let id = f.sign_in("alice", "Correct-horse-1").unwrap()["AuthenticationResult"]["IdToken"].clone();
    let restarted = Cognito::new(f.store.clone(), f.clock.clone(), "us-east-1", "000000000000", ISSUER_BASE);
    assert_eq!(restarted.verify_id_token(id.as_str().unwrap(), &f.pool, &f.client).unwrap().username, "alice");
    assert_eq!(restarted.jwks(&f.pool).unwrap(), f.cognito.jwks(&f.pool).unwrap());
    assert_eq!(restarted.pool_id_by_name("auditors").unwrap(), Some(f.pool.clone()));
}

#[test]
fn the_pools_password_policy_is_enforced_when_a_password_is_set() {
    let f = fixture(FLOWS);
    f.user("alice", "Correct-horse-1", true);
    let e = f
        .cognito
        .call(
            Operation::AdminSetUserPassword,
            &json!({"UserPoolId": f.pool, "Username": "alice", "Password": "alllowercase1!", "Permanent": true}),
        )
        .unwrap_err();
    assert_eq!(e.kind, "InvalidPasswordException");
    assert!(e.message.contains("uppercase"), "{e}");
}

#[test]
fn missing_members_unknown_resources_and_secrets_are_clear_errors() {
    let f = fixture(FLOWS);
    let missing = f.cognito.call(Operation::AdminCreateUser, &json!({"UserPoolId": f.pool})).unwrap_err();
    assert_eq!(missing.kind, "InvalidParameterException");
    assert!(missing.message.contains("'username'"), "{missing}");
    let unknown = f.cognito.call(Operation::DescribeUserPool, &json!({"UserPoolId": "us-east-1_nope"})).unwrap_err();
    assert_eq!(unknown.kind, "ResourceNotFoundException");
    let secret = f
        .cognito
        .call(
            Operation::CreateUserPoolClient,
            &json!({"UserPoolId": f.pool, "ClientName": "c", "GenerateSecret": true}),
        )
        .unwrap_err();
    assert!(secret.message.contains("GenerateSecret"), "{secret}");
    f.user("alice", "Correct-horse-1", true);
    let again = f.cognito.call(Operation::AdminCreateUser, &json!({"UserPoolId": f.pool, "Username": "alice"}));
    assert_eq!(again.unwrap_err().kind, "UsernameExistsException");
    let listing = f.cognito.call(Operation::ListUserPools, &json!({})).unwrap_err();
    assert!(listing.message.contains("'maxResults'"), "{listing}");
}

#[test]
fn deleting_a_pool_removes_its_clients_and_users() {
    let f = fixture(FLOWS);
    f.user("alice", "Correct-horse-1", true);
    f.cognito.call(Operation::DeleteUserPool, &json!({"UserPoolId": f.pool})).unwrap();
    assert_eq!(f.sign_in("alice", "Correct-horse-1").unwrap_err().kind, "ResourceNotFoundException");
    assert!(f.store.all(USERS).unwrap().is_empty());
    assert_eq!(f.cognito.jwks(&f.pool).unwrap(), None);
}

#[test]
fn lists_page_in_order_without_repeating() {
    let f = fixture(FLOWS);
    for name in ["a", "b", "c"] {
        f.cognito.call(Operation::AdminCreateUser, &json!({"UserPoolId": f.pool, "Username": name})).unwrap();
    }
    let first = f.cognito.call(Operation::ListUsers, &json!({"UserPoolId": f.pool, "Limit": 2})).unwrap();
    let token = first["PaginationToken"].clone();
    let second = f
        .cognito
        .call(Operation::ListUsers, &json!({"UserPoolId": f.pool, "Limit": 2, "PaginationToken": token}))
        .unwrap();
    let names: Vec<&str> = [&first, &second]
        .iter()
        .flat_map(|p| p["Users"].as_array().unwrap().iter().map(|u| u["Username"].as_str().unwrap()))
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(second["PaginationToken"].is_null());
    assert_eq!(first["Users"][0]["UserStatus"], "FORCE_CHANGE_PASSWORD");
}
