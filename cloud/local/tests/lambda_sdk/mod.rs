//! Lambda end to end with `aws-sdk-lambda`: a function on the `provided.al2023` runtime whose
//! `bootstrap` (a small Python runtime, `bootstrap.py`) polls the Lambda Runtime API. It answers
//! RequestResponse invocations with its environment, publishes through the local cloud's HTTP
//! Publish with its role's credentials (allowed on one topic, denied on another) when invoked
//! with Event or by a topic rule's `lambda` action (once AddPermission lets IoT Core invoke it),
//! reports errors, times out, crashes and comes back, and changes behaviour with
//! UpdateFunctionCode (a package in the local S3) and UpdateFunctionConfiguration; temporary
//! credentials may invoke it only once their role's policy allows `lambda:InvokeFunction`.

use std::io::Write as _;

use aws_sdk_iot::types::{Action, LambdaAction, TopicRulePayload};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Environment, FunctionCode, InvocationType, Runtime};
use serde_json::{Value, json};
use site_testkit::mqtt::Observer;

use crate::common::{Client, TestCloud, failed, shared_sdk_config};

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
  "Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const IOT_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
  "Principal":{"Service":"iot.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
/// The function may publish under `lambda/` only.
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish",
  "Resource":"arn:aws:iot:us-east-1:000000000000:topic/lambda/*"}]}"#;
const FUNCTION: &str = "pump-incidents";

/// A deployment package holding `files` as `(name, mode, contents)`.
fn package(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, mode, data) in files {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        writer.start_file(*name, options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// The Python runtime as `bootstrap`, with 768 KiB of incompressible data beside it: the request
/// carrying it inline is larger than the other APIs' 512 KiB body limit.
fn runtime_package(version: &str) -> Vec<u8> {
    let script = include_str!("bootstrap.py").replace("@VERSION@", version);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let data: Vec<u8> = (0..768 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    package(&[("bootstrap", 0o755, script.as_bytes()), ("data.bin", 0o644, &data)])
}

async fn invoke(lambda: &aws_sdk_lambda::Client, event: Value) -> (Option<String>, Value) {
    let out =
        lambda.invoke().function_name(FUNCTION).payload(Blob::new(event.to_string())).send().await.expect("Invoke");
    assert_eq!(out.status_code(), 200);
    assert_eq!(out.executed_version(), Some("$LATEST"));
    let body = out.payload().map(|p| p.as_ref().to_vec()).unwrap_or_default();
    let body = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    (out.function_error().map(str::to_owned), body)
}

#[tokio::test]
async fn functions_run_through_the_runtime_api_with_their_role_and_the_rules_engine_invokes_them() {
    let tc = TestCloud::start().await;
    let local = &tc.cloud;
    let role = local.iam.create_role("pump-incidents", None, TRUST, None, None).unwrap().arn;
    local.iam.put_role_policy("pump-incidents", "publish", POLICY).unwrap();
    let iot_only = local.iam.create_role("iot-only", None, IOT_TRUST, None, None).unwrap().arn;
    let sdk = shared_sdk_config(&local.endpoints);
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let create = |zip: Vec<u8>, role: &str, runtime: Runtime| {
        lambda
            .create_function()
            .function_name(FUNCTION)
            .runtime(runtime)
            .role(role)
            .handler("incidents.handler")
            .timeout(30)
            .environment(Environment::builder().variables("GREETING", "hello").build())
            .code(FunctionCode::builder().zip_file(Blob::new(zip)).build())
            .send()
    };

    // Refused: no bootstrap, a managed runtime, a role Lambda cannot assume.
    let (code, status) = failed(create(package(&[("main.py", 0o755, b"")]), &role, Runtime::Providedal2023).await);
    assert_eq!((code.as_str(), status), ("InvalidParameterValueException", 400));
    let (code, _) = failed(create(runtime_package("1"), &role, Runtime::Python312).await);
    assert_eq!(code, "InvalidParameterValueException");
    let refused = create(runtime_package("1"), &iot_only, Runtime::Providedal2023).await;
    let message =
        aws_sdk_lambda::error::ProvideErrorMetadata::message(refused.as_ref().unwrap_err()).unwrap().to_owned();
    assert!(message.contains("cannot be assumed by Lambda"), "{message}");

    let created = create(runtime_package("1"), &role, Runtime::Providedal2023).await.expect("CreateFunction");
    assert_eq!(created.timeout(), Some(30));
    assert_eq!(created.version(), Some("$LATEST"));
    let (code, status) = failed(create(runtime_package("1"), &role, Runtime::Providedal2023).await);
    assert_eq!((code.as_str(), status), ("ResourceConflictException", 409));
    let got = lambda.get_function().function_name(FUNCTION).send().await.expect("GetFunction");
    let config = got.configuration().unwrap();
    assert_eq!(config.runtime(), Some(&Runtime::Providedal2023));
    assert_eq!(config.environment().and_then(|e| e.variables()).unwrap()["GREETING"], "hello");
    let listed = lambda.list_functions().send().await.expect("ListFunctions");
    assert_eq!(listed.functions().iter().filter_map(|f| f.function_name()).collect::<Vec<_>>(), vec![FUNCTION]);

    // RequestResponse: the handler's output, with the environment Lambda gives a custom runtime
    // and role credentials that the local cloud honours under the role's policy.
    let (error, env) = invoke(&lambda, json!({"action": "env"})).await;
    assert_eq!(error, None, "{env}");
    assert_eq!(env["version"], "1");
    assert_eq!(env["context"]["arn"], config.function_arn().unwrap());
    assert_eq!(
        env["env"],
        json!({
            "GREETING": "hello",
            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "_HANDLER": "incidents.handler",
            "AWS_LAMBDA_LOG_GROUP_NAME": format!("/aws/lambda/{FUNCTION}"),
            "AWS_ENDPOINT_URL": local.endpoints.http,
        })
    );
    assert_eq!((env["cwd"].as_bool(), env["credentials"].as_bool()), (Some(true), Some(true)));
    assert_eq!((env["allowed"].as_u64(), env["denied"].as_u64()), (Some(200), Some(403)), "{env}");
    let first_pid = env["pid"].clone();

    // Event: 202 at once; the function's publish shows it ran.
    let mut app = Observer::connect(tc.options("app", &tc.allow_all_device("app")), &["lambda/out"]).await;
    let queued = lambda
        .invoke()
        .function_name(FUNCTION)
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(json!({"action": "publish", "topic": "lambda/out", "via": "event"}).to_string()))
        .send()
        .await
        .expect("Invoke Event");
    assert_eq!(queued.status_code(), 202);
    let published: Value = serde_json::from_slice(&app.next("the Event invocation's publish").await.payload).unwrap();
    assert_eq!(published["via"], "event");
    let dry = lambda.invoke().function_name(FUNCTION).invocation_type(InvocationType::DryRun).send().await.unwrap();
    assert_eq!(dry.status_code(), 204);

    // A function error, a timeout and a crash: 200 with X-Amz-Function-Error, and the process
    // that timed out or crashed is replaced for the next invocation.
    let (error, doc) = invoke(&lambda, json!({"action": "fail"})).await;
    assert_eq!((error.as_deref(), doc["errorType"].as_str()), (Some("Unhandled"), Some("Pump.Failure")));
    let (_, again) = invoke(&lambda, json!({"action": "echo"})).await;
    assert_eq!(again["pid"], first_pid, "a handled error keeps the process");
    // A one-second timeout for this invocation only (a loaded machine gets the default 30 s).
    let timeout = |seconds: i32| lambda.update_function_configuration().function_name(FUNCTION).timeout(seconds).send();
    timeout(1).await.expect("UpdateFunctionConfiguration");
    let (error, doc) = invoke(&lambda, json!({"action": "sleep", "seconds": 30})).await;
    timeout(30).await.expect("UpdateFunctionConfiguration");
    assert_eq!(error.as_deref(), Some("Unhandled"));
    assert!(doc["errorMessage"].as_str().unwrap().ends_with("Task timed out after 1.00 seconds"), "{doc}");
    let (_, after_timeout) = invoke(&lambda, json!({"action": "echo"})).await;
    assert_ne!(after_timeout["pid"], first_pid, "the timed-out process was replaced");
    let (error, doc) = invoke(&lambda, json!({"action": "crash"})).await;
    assert_eq!((error.as_deref(), doc["errorType"].as_str()), (Some("Unhandled"), Some("Runtime.ExitError")), "{doc}");
    let (error, after_crash) = invoke(&lambda, json!({"action": "echo", "n": 1})).await;
    assert_eq!((error, &after_crash["event"]["n"]), (None, &json!(1)));

    // New code (from the local S3) and configuration apply to the next invocation.
    let objects = local.s3.objects();
    objects.create_bucket("pump-code", None).unwrap();
    let v2 = bytes::Bytes::from(runtime_package("2"));
    objects.put_bytes("pump-code", "incidents/2.zip", v2, Default::default()).await.unwrap();
    let (code, _) = failed(
        lambda.update_function_code().function_name(FUNCTION).s3_bucket("pump-code").s3_key("nope.zip").send().await,
    );
    assert_eq!(code, "InvalidParameterValueException");
    let updated = lambda
        .update_function_code()
        .function_name(FUNCTION)
        .s3_bucket("pump-code")
        .s3_key("incidents/2.zip")
        .send()
        .await
        .expect("UpdateFunctionCode");
    assert_ne!(updated.code_sha256(), created.code_sha256());
    lambda
        .update_function_configuration()
        .function_name(FUNCTION)
        .environment(Environment::builder().variables("GREETING", "hi").build())
        .send()
        .await
        .expect("UpdateFunctionConfiguration");
    let (_, env) = invoke(&lambda, json!({"action": "env"})).await;
    assert_eq!((env["version"].as_str(), env["env"]["GREETING"].as_str()), (Some("2"), Some("hi")));
    let (code, _) = failed(
        lambda.update_function_code().function_name(FUNCTION).zip_file(Blob::new(b"junk".to_vec())).send().await,
    );
    assert_eq!(code, "InvalidParameterValueException");

    // A topic rule's lambda action: refused until the function's policy allows IoT Core
    // (AddPermission), then the function runs with the rule's output.
    let iot = aws_sdk_iot::Client::new(&sdk);
    let action = LambdaAction::builder().function_arn(config.function_arn().unwrap()).build().unwrap();
    let rule = TopicRulePayload::builder()
        .sql("SELECT *, topic(3) AS pump FROM 'dt/pump/+/incident'")
        .set_actions(Some(vec![Action::builder().lambda(action).build()]))
        .build()
        .unwrap();
    iot.create_topic_rule().rule_name("incidents").topic_rule_payload(rule).send().await.expect("CreateTopicRule");
    let (mut device, _) = Client::connect(tc.options("pump-1", &tc.allow_all_device("pump-1"))).await.unwrap();
    let incident = |via: &str| json!({"action": "publish", "topic": "lambda/out", "via": via}).to_string();
    let failures = || local.rule_stats.actions_failed.load(std::sync::atomic::Ordering::Relaxed);
    let before = failures();
    device.publish("dt/pump/pump-1/incident", rumqttc::QoS::AtLeastOnce, false, incident("refused")).await.unwrap();
    site_testkit::wait_until("the refused lambda action", async || failures(), |n| *n > before, |n| n.to_string())
        .await;
    lambda
        .add_permission()
        .function_name(FUNCTION)
        .statement_id("iot-rules")
        .action("lambda:InvokeFunction")
        .principal("iot.amazonaws.com")
        .send()
        .await
        .expect("AddPermission");
    let policy = lambda.get_policy().function_name(FUNCTION).send().await.expect("GetPolicy");
    assert!(policy.policy().unwrap().contains("iot.amazonaws.com"));
    device.publish("dt/pump/pump-1/incident", rumqttc::QoS::AtLeastOnce, false, incident("rule")).await.unwrap();
    let published: Value = serde_json::from_slice(&app.next("the rule's invocation's publish").await.payload).unwrap();
    assert_eq!((published["via"].as_str(), published["pump"].as_str()), (Some("rule"), Some("pump-1")));

    // Scoped credentials: Invoke needs lambda:InvokeFunction on the function's ARN.
    let role_record = local.iam.get_role("pump-incidents").unwrap();
    let session = local
        .iam
        .issue_service_session(&role_record, "lambda.amazonaws.com", "caller", std::time::Duration::from_secs(900))
        .unwrap();
    let scoped = aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(&sdk)
            .credentials_provider(aws_credential_types::Credentials::new(
                &session.access_key_id,
                &session.secret_access_key,
                Some(session.session_token.clone()),
                None,
                "scoped",
            ))
            .build(),
    );
    let echo = || scoped.invoke().function_name(FUNCTION).payload(Blob::new(r#"{"action": "echo"}"#)).send();
    let (code, status) = failed(echo().await);
    assert_eq!((code.as_str(), status), ("AccessDeniedException", 403));
    let invoke_policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"lambda:InvokeFunction","Resource":"{}"}}]}}"#,
        config.function_arn().unwrap()
    );
    local.iam.put_role_policy("pump-incidents", "invoke", &invoke_policy).unwrap();
    assert_eq!(echo().await.expect("Invoke with scoped credentials").status_code(), 200);
    let (code, _) = failed(scoped.list_functions().send().await);
    assert_eq!(code, "AccessDeniedException");

    lambda.delete_function().function_name(FUNCTION).send().await.expect("DeleteFunction");
    let (code, status) = failed(lambda.get_function().function_name(FUNCTION).send().await);
    assert_eq!((code.as_str(), status), ("ResourceNotFoundException", 404));
    tc.stop().await;
}

#[tokio::test]
async fn functions_and_their_code_survive_a_restart_and_shutdown_stops_their_processes() {
    use local_cloud::lambda::{CodeSource, InvocationType, NewFunction, runtime::Outcome};
    use local_cloud::server::{Config, LocalCloud};
    let dir = tempfile::tempdir().unwrap();
    let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.unwrap();
    let role = cloud.iam.create_role("keeper", None, TRUST, None, None).unwrap().arn;
    let new = NewFunction {
        name: "keeper".into(),
        runtime: Some("provided.al2".into()),
        role,
        code: Some(CodeSource::Zip(runtime_package("7"))),
        ..NewFunction::default()
    };
    cloud.lambda.create(new).expect("CreateFunction");
    cloud.shutdown().await;

    let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.unwrap();
    let function = cloud.lambda.get("keeper").expect("the function after a restart");
    let event = bytes::Bytes::from_static(br#"{"action": "echo"}"#);
    let outcome = cloud.lambda.invoke(function, InvocationType::RequestResponse, event).await.unwrap();
    let Some(Outcome::Response(body)) = outcome else { panic!("{outcome:?}") };
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["version"], "7");
    cloud.shutdown().await;
    let pid = body["pid"].as_u64().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "shutdown stops the function's process");
}
