//! `provision::auditors` against the local cloud: the pool, client and user are made once and
//! found again on a second run; the password written to the file signs the auditor in, and the
//! id token it gets is one the local cloud's dashboard accepts.

use std::os::unix::fs::PermissionsExt;

use provision::ClientOptions;
use provision::auditors::{AuditorsSpec, ensure_auditors};

use crate::common::TestCloud;

#[tokio::test]
async fn auditors_are_set_up_once_and_sign_in_with_the_password_file() {
    let cloud = TestCloud::start().await;
    let options = ClientOptions::for_local_cloud(&cloud.cloud.endpoints).unwrap();
    let cognito = provision::cognito_client(&options).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = AuditorsSpec {
        pool_name: "auditors".into(),
        client_name: "dashboard".into(),
        username: "auditor".into(),
        email: Some("auditor@example.com".into()),
        password_file: dir.path().join("auditor.password"),
    };

    let first = ensure_auditors(&cognito, &spec).await.expect("first run");
    assert_eq!(first.changes.len(), 4, "{:?}", first.changes);
    assert_eq!(std::fs::metadata(&spec.password_file).unwrap().permissions().mode() & 0o777, 0o600);
    let again = ensure_auditors(&cognito, &spec).await.expect("second run");
    assert_eq!((&again.user_pool_id, &again.client_id), (&first.user_pool_id, &first.client_id));
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    let pools = cognito.list_user_pools().max_results(60).send().await.unwrap();
    assert_eq!(pools.user_pools().len(), 1);

    // The password in the file signs the auditor in, unsigned, through the app client.
    let password = std::fs::read_to_string(&spec.password_file).unwrap();
    let signed_in = cognito
        .initiate_auth()
        .auth_flow(aws_sdk_cognitoidentityprovider::types::AuthFlowType::UserPasswordAuth)
        .client_id(&first.client_id)
        .auth_parameters("USERNAME", "auditor")
        .auth_parameters("PASSWORD", password.trim_end())
        .send()
        .await
        .expect("InitiateAuth");
    let id_token = signed_in.authentication_result().and_then(|r| r.id_token()).expect("an id token");
    let identity = cloud.cloud.cognito.verify_id_token(id_token, &first.user_pool_id, &first.client_id).unwrap();
    assert_eq!(identity.username, "auditor");

    // A second pool of the same name makes the name ambiguous: refused, not guessed.
    cognito.create_user_pool().pool_name("auditors").send().await.unwrap();
    let e = ensure_auditors(&cognito, &spec).await.unwrap_err();
    assert!(e.to_string().contains("2 user pools are named"), "{e}");
}
