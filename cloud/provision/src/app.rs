//! The cloud side of the pump station: the resources through which the cloud reacts to what the
//! pumps send, deployed with the AWS SDK for Rust (`aws-sdk-dynamodb`, `aws-sdk-iam`,
//! `aws-sdk-lambda`, `aws-sdk-iot`, `aws-sdk-s3`), the same code for AWS and the local cloud.
//!
//! | resource | name (prefix `pump`) | what it is for |
//! | --- | --- | --- |
//! | DynamoDB table | `pump-incidents` (`thing`, `at`) | one row per anomaly event |
//! | DynamoDB table | `pump-telemetry-hourly` (`thing`, `hour`) | hourly aggregates per pump |
//! | S3 bucket | given | the raw batches, `telemetry/date=YYYY-MM-DD/thing={thing}/…` |
//! | Lambda function | `pump-anomaly-handler` | incidents; maintenance after repeated faults |
//! | Lambda function | `pump-telemetry-aggregator` | hourly aggregates |
//! | topic rule | `pump_anomalies` on `dt/pump/+/anomalies` | invokes the anomaly handler |
//! | topic rule | `pump_telemetry` on `dt/pump/+/telemetry` | invokes the aggregator; puts the raw batch in S3 |
//! | IAM roles | one per function and per rule | each allows only what its owner does |
//!
//! A rule's failed action goes to its error action, a republish of IoT Core's error message to
//! `ops/rules/{rule}/errors`. Idempotent: a second run with the same packages changes nothing
//! (the packages are zipped reproducibly, so an unchanged binary has an unchanged `CodeSha256`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_iot::types::{Action, LambdaAction, RepublishAction, S3Action, TopicRulePayload};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Architecture, Environment, FunctionCode, LastUpdateStatus, Runtime, State};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::error::{ProvisionError, aws, is_code};
use crate::policy::AccountScope;
use crate::token_exchange::{ensure_role, ensure_role_policy};

/// The binary of the anomaly handler (`cargo build -p pump-functions`).
pub const ANOMALY_HANDLER_BIN: &str = "anomaly-handler";
/// The binary of the telemetry aggregator.
pub const TELEMETRY_AGGREGATOR_BIN: &str = "telemetry-aggregator";
/// The inline policy's name on each role.
pub const ROLE_POLICY_NAME: &str = "OnlyWhatItDoes";
/// The key template of the raw telemetry batches: partitioned by date and thing, as Athena and a
/// SageMaker processing job read them.
pub const RAW_TELEMETRY_KEY: &str =
    "telemetry/date=${parse_time(\"yyyy-MM-dd\", timestamp())}/thing=${topic(3)}/${timestamp()}-${newuuid()}.json";

/// What to deploy.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// Prefix of every resource name (letters, digits, `-`).
    pub prefix: String,
    /// Where the function binaries are.
    pub functions_dir: PathBuf,
    /// The landing bucket of raw telemetry (created when absent).
    pub bucket: String,
    /// Occurrences of one fault that call for maintenance.
    pub maintenance_repeats: u32,
    /// The window they must fall in, minutes.
    pub maintenance_window_minutes: u32,
    /// Each function's timeout, seconds.
    pub function_timeout_secs: i32,
    /// The IoT data endpoint the anomaly handler writes shadows through (`https://…`), when the
    /// SDK's own resolution would not find the account's (on AWS: DescribeEndpoint iot:Data-ATS).
    pub iot_data_endpoint: Option<String>,
}

impl AppSpec {
    /// The names of the resources, derived from the prefix.
    pub fn names(&self) -> AppNames {
        let p = &self.prefix;
        let [anomaly_rule, telemetry_rule] = app_rules(p);
        AppNames {
            incidents_table: format!("{p}-incidents"),
            aggregates_table: format!("{p}-telemetry-hourly"),
            anomaly_function: format!("{p}-anomaly-handler"),
            aggregator_function: format!("{p}-telemetry-aggregator"),
            anomaly_rule,
            telemetry_rule,
            anomaly_function_role: format!("{p}-anomaly-handler-role"),
            aggregator_function_role: format!("{p}-telemetry-aggregator-role"),
            anomaly_rule_role: format!("{p}-anomalies-rule-role"),
            telemetry_rule_role: format!("{p}-telemetry-rule-role"),
        }
    }

    fn validate(&self) -> Result<(), ProvisionError> {
        validate_prefix(&self.prefix)?;
        if self.maintenance_repeats == 0 || !(1..=1440).contains(&self.maintenance_window_minutes) {
            return Err(ProvisionError::InvalidInput(
                "maintenance needs at least 1 repeat within 1 to 1440 minutes".into(),
            ));
        }
        if !(1..=900).contains(&self.function_timeout_secs) {
            return Err(ProvisionError::InvalidInput("a Lambda timeout is 1 to 900 seconds".into()));
        }
        Ok(())
    }
}

/// A prefix of resource names: 1 to 40 letters, digits or `-`, starting with a letter (so that
/// every name made from it is valid for every service, rule names with `_` for `-`).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), ProvisionError> {
    let ok = (1..=40).contains(&prefix.len())
        && prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && prefix.starts_with(|c: char| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::InvalidInput(format!(
            "prefix {prefix:?}: 1 to 40 letters, digits or '-', starting with a letter"
        )))
    }
}

/// A topic rule's name from the prefix (rule names take `_`, not `-`).
pub fn rule_name(prefix: &str, suffix: &str) -> String {
    format!("{}_{suffix}", prefix.replace('-', "_"))
}

/// The application's two rules under `prefix`: anomalies, telemetry.
pub fn app_rules(prefix: &str) -> [String; 2] {
    [rule_name(prefix, "anomalies"), rule_name(prefix, "telemetry")]
}

/// The names of the deployed resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppNames {
    /// Incidents table.
    pub incidents_table: String,
    /// Hourly aggregates table.
    pub aggregates_table: String,
    /// Anomaly handler function.
    pub anomaly_function: String,
    /// Telemetry aggregator function.
    pub aggregator_function: String,
    /// Rule on the anomalies topic.
    pub anomaly_rule: String,
    /// Rule on the telemetry topic.
    pub telemetry_rule: String,
    /// The anomaly handler's execution role.
    pub anomaly_function_role: String,
    /// The aggregator's execution role.
    pub aggregator_function_role: String,
    /// The anomalies rule's role (its error action).
    pub anomaly_rule_role: String,
    /// The telemetry rule's role (its S3 action and error action).
    pub telemetry_rule_role: String,
}

/// The topic a rule's error action republishes to.
pub fn error_topic(rule: &str) -> String {
    format!("ops/rules/{rule}/errors")
}

/// What a deployment left.
#[derive(Debug, Clone)]
pub struct AppDeployment {
    /// The names.
    pub names: AppNames,
    /// The functions' ARNs (anomaly handler, aggregator).
    pub function_arns: Vec<String>,
    /// The rules' ARNs (anomalies, telemetry).
    pub rule_arns: Vec<String>,
    /// What this run changed, one line each; empty when everything was in place.
    pub changes: Vec<String>,
}

/// The clients a deployment uses.
#[derive(Debug, Clone)]
pub struct AppClients {
    /// IoT control plane (rules).
    pub iot: aws_sdk_iot::Client,
    /// IAM (roles).
    pub iam: aws_sdk_iam::Client,
    /// Lambda (functions).
    pub lambda: aws_sdk_lambda::Client,
    /// DynamoDB (tables).
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// S3 (the landing bucket).
    pub s3: aws_sdk_s3::Client,
}

/// Deploys (or brings up to date) the whole cloud side.
pub async fn deploy_app(clients: &AppClients, spec: &AppSpec) -> Result<AppDeployment, ProvisionError> {
    spec.validate()?;
    let names = spec.names();
    let packages = [
        package(&spec.functions_dir.join(ANOMALY_HANDLER_BIN))?,
        package(&spec.functions_dir.join(TELEMETRY_AGGREGATOR_BIN))?,
    ];
    let mut changes = Vec::new();

    let incidents_arn = ensure_table(&clients.dynamodb, &names.incidents_table, "at", &mut changes).await?;
    let aggregates_arn = ensure_table(&clients.dynamodb, &names.aggregates_table, "hour", &mut changes).await?;
    let scope = AccountScope::from_arn(&incidents_arn).ok_or_else(|| {
        ProvisionError::unexpected("DescribeTable", format!("table ARN {incidents_arn:?} is not an ARN"))
    })?;
    if crate::component::ensure_bucket(&clients.s3, &spec.bucket).await? {
        changes.push(format!("bucket {} created", spec.bucket));
    }

    let rule_arn =
        |rule: &str| format!("arn:{}:iot:{}:{}:rule/{rule}", scope.partition, scope.region, scope.account_id);
    let roles = [
        (
            &names.anomaly_function_role,
            LAMBDA,
            "Pump anomaly handler: incidents table, pump shadows",
            anomaly_function_policy(&scope, &incidents_arn, &names.anomaly_function),
        ),
        (
            &names.aggregator_function_role,
            LAMBDA,
            "Pump telemetry aggregator: hourly aggregates table",
            aggregator_function_policy(&scope, &aggregates_arn, &names.aggregator_function),
        ),
        (
            &names.anomaly_rule_role,
            IOT,
            "Pump anomalies rule: its error action",
            rule_policy(&scope, &names.anomaly_rule, None),
        ),
        (
            &names.telemetry_rule_role,
            IOT,
            "Pump telemetry rule: raw batches to S3, its error action",
            rule_policy(&scope, &names.telemetry_rule, Some(&spec.bucket)),
        ),
    ];
    let mut role_arns = Vec::new();
    for (role, principal, description, document) in roles {
        role_arns.push(ensure_role(&clients.iam, role, &trust(principal), description, &mut changes).await?);
        if ensure_role_policy(&clients.iam, role, ROLE_POLICY_NAME, &document).await? {
            changes.push(format!("role {role} allows only what its owner does"));
        }
    }

    let repeats = spec.maintenance_repeats.to_string();
    let window = spec.maintenance_window_minutes.to_string();
    let mut anomaly_env = vec![
        ("INCIDENTS_TABLE", names.incidents_table.clone()),
        ("MAINTENANCE_REPEATS", repeats),
        ("MAINTENANCE_WINDOW_MINUTES", window),
        ("SHADOW_NAME", "pump".to_owned()),
    ];
    if let Some(endpoint) = &spec.iot_data_endpoint {
        anomaly_env.push(("IOT_DATA_ENDPOINT", endpoint.clone()));
    }
    let functions = [
        (
            &names.anomaly_function,
            &role_arns[0],
            &packages[0],
            anomaly_env,
            "Pump anomalies: incidents and maintenance",
        ),
        (
            &names.aggregator_function,
            &role_arns[1],
            &packages[1],
            vec![("AGGREGATES_TABLE", names.aggregates_table.clone())],
            "Pump telemetry: hourly aggregates",
        ),
    ];
    let mut function_arns = Vec::new();
    for (name, role, code, env, description) in functions {
        let wanted = FunctionWanted { name, role, code, env: &env, description, timeout: spec.function_timeout_secs };
        function_arns.push(ensure_function(&clients.lambda, &wanted, &mut changes).await?);
    }

    let rules = [
        (
            &names.anomaly_rule,
            "SELECT *, topic(3) AS thing, timestamp() AS receivedAt FROM 'dt/pump/+/anomalies'",
            "Each anomaly event of a pump to the anomaly handler",
            vec![lambda_action(&function_arns[0])?],
            &role_arns[2],
            &function_arns[0],
        ),
        (
            &names.telemetry_rule,
            "SELECT *, topic(3) AS thing FROM 'dt/pump/+/telemetry'",
            "Each telemetry batch to the hourly aggregates and, raw, to S3 by date",
            vec![
                lambda_action(&function_arns[1])?,
                Action::builder()
                    .s3(S3Action::builder()
                        .role_arn(&role_arns[3])
                        .bucket_name(&spec.bucket)
                        .key(RAW_TELEMETRY_KEY)
                        .build()
                        .map_err(build_error)?)
                    .build(),
            ],
            &role_arns[3],
            &function_arns[1],
        ),
    ];
    let mut rule_arns = Vec::new();
    for (rule, sql, description, actions, role, function) in rules {
        let arn = rule_arn(rule);
        allow_rule(&clients.lambda, function, &arn, &scope.account_id, rule, &mut changes).await?;
        ensure_rule(&clients.iot, rule, rule_payload(sql, description, actions, role, rule)?, &mut changes).await?;
        rule_arns.push(arn);
    }

    Ok(AppDeployment { names, function_arns, rule_arns, changes })
}

pub(crate) fn build_error(e: impl std::fmt::Display) -> ProvisionError {
    ProvisionError::unexpected("building a request", e.to_string())
}

const LAMBDA: &str = "lambda.amazonaws.com";
pub(crate) const IOT: &str = "iot.amazonaws.com";

/// A role trust policy for one service principal.
pub fn trust(service: &str) -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"
    }]})
    .to_string()
}

fn logs_statement(scope: &AccountScope, function: &str) -> serde_json::Value {
    json!({
        "Sid": "OwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": format!(
            "arn:{}:logs:{}:{}:log-group:/aws/lambda/{function}:*",
            scope.partition, scope.region, scope.account_id
        )
    })
}

/// The anomaly handler's permissions: its table's rows, the pumps' shadows, its own logs.
pub fn anomaly_function_policy(scope: &AccountScope, table_arn: &str, function: &str) -> String {
    json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Incidents", "Effect": "Allow",
         "Action": ["dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"], "Resource": table_arn},
        {"Sid": "PumpShadows", "Effect": "Allow",
         "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow"],
         "Resource": format!("arn:{}:iot:{}:{}:thing/*", scope.partition, scope.region, scope.account_id)},
        logs_statement(scope, function),
    ]})
    .to_string()
}

/// The aggregator's permissions: its table's rows, its own logs.
pub fn aggregator_function_policy(scope: &AccountScope, table_arn: &str, function: &str) -> String {
    json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "HourlyAggregates", "Effect": "Allow",
         "Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Resource": table_arn},
        logs_statement(scope, function),
    ]})
    .to_string()
}

/// A rule's permissions: publishing its errors, and with `bucket` new objects under
/// `telemetry/` there.
pub fn rule_policy(scope: &AccountScope, rule: &str, bucket: Option<&str>) -> String {
    let mut statements = vec![json!({
        "Sid": "ErrorAction", "Effect": "Allow", "Action": "iot:Publish",
        "Resource": format!("arn:{}:iot:{}:{}:topic/{}", scope.partition, scope.region, scope.account_id, error_topic(rule))
    })];
    if let Some(bucket) = bucket {
        statements.push(json!({
            "Sid": "RawTelemetry", "Effect": "Allow", "Action": "s3:PutObject",
            "Resource": format!("arn:{}:s3:::{bucket}/telemetry/*", scope.partition)
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// A deployment package: the binary as `bootstrap` (mode 755) in a zip written reproducibly
/// (fixed timestamps), with its `CodeSha256` (base64 SHA-256 of the zip, as Lambda reports it).
#[derive(Debug, Clone)]
pub struct Package {
    /// The zip.
    pub zip: Vec<u8>,
    /// Base64 SHA-256 of `zip`.
    pub sha256: String,
}

/// Builds the package of the binary at `path`.
pub fn package(path: &Path) -> Result<Package, ProvisionError> {
    let binary = std::fs::read(path).map_err(|e| {
        ProvisionError::InvalidInput(format!(
            "function binary {}: {e} (build it first: cargo build --release -p pump-functions)",
            path.display()
        ))
    })?;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755)
        .last_modified_time(zip::DateTime::default());
    let written = zip
        .start_file("bootstrap", options)
        .and_then(|()| zip.write_all(&binary).map_err(zip::result::ZipError::from))
        .and_then(|()| zip.finish());
    let zip = written.map_err(|e| ProvisionError::unexpected("zip", e.to_string()))?.into_inner();
    let sha256 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&zip));
    Ok(Package { zip, sha256 })
}

/// A table keyed by `thing` and `sort` (both strings), on demand; its ARN.
async fn ensure_table(
    db: &aws_sdk_dynamodb::Client,
    name: &str,
    sort: &str,
    changes: &mut Vec<String>,
) -> Result<String, ProvisionError> {
    let described = db.describe_table().table_name(name).send().await.map_err(aws("DescribeTable"));
    let table = if is_code(&described, "ResourceNotFoundException") {
        let key = |attr: &str, kind: KeyType| KeySchemaElement::builder().attribute_name(attr).key_type(kind).build();
        let def = |attr: &str| {
            AttributeDefinition::builder().attribute_name(attr).attribute_type(ScalarAttributeType::S).build()
        };
        db.create_table()
            .table_name(name)
            .key_schema(key("thing", KeyType::Hash).map_err(build_error)?)
            .key_schema(key(sort, KeyType::Range).map_err(build_error)?)
            .attribute_definitions(def("thing").map_err(build_error)?)
            .attribute_definitions(def(sort).map_err(build_error)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(aws("CreateTable"))?;
        changes.push(format!("table {name} created (thing, {sort})"));
        wait_for_table(db, name).await?
    } else {
        let table = described?.table.ok_or_else(|| ProvisionError::unexpected("DescribeTable", "no table"))?;
        let keys: Vec<(&str, &KeyType)> =
            table.key_schema().iter().map(|k| (k.attribute_name(), k.key_type())).collect();
        if keys != [("thing", &KeyType::Hash), (sort, &KeyType::Range)] {
            return Err(ProvisionError::InvalidInput(format!(
                "table {name} exists with another key schema ({keys:?}); expected thing (HASH), {sort} (RANGE)"
            )));
        }
        if table.table_status() == Some(&TableStatus::Active) { table } else { wait_for_table(db, name).await? }
    };
    table.table_arn().map(str::to_owned).ok_or_else(|| ProvisionError::unexpected("DescribeTable", "no TableArn"))
}

async fn wait_for_table(
    db: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<aws_sdk_dynamodb::types::TableDescription, ProvisionError> {
    for _ in 0..120 {
        let out = db.describe_table().table_name(name).send().await.map_err(aws("DescribeTable"))?;
        if let Some(table) = out.table
            && table.table_status() == Some(&TableStatus::Active)
        {
            return Ok(table);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(ProvisionError::unexpected("DescribeTable", format!("table {name} not ACTIVE after 60 s")))
}

struct FunctionWanted<'a> {
    name: &'a str,
    role: &'a str,
    code: &'a Package,
    env: &'a [(&'static str, String)],
    description: &'a str,
    timeout: i32,
}

fn host_architecture() -> Architecture {
    if std::env::consts::ARCH == "aarch64" { Architecture::Arm64 } else { Architecture::X8664 }
}

/// The function, created or brought up to date; its ARN.
async fn ensure_function(
    lambda: &aws_sdk_lambda::Client,
    wanted: &FunctionWanted<'_>,
    changes: &mut Vec<String>,
) -> Result<String, ProvisionError> {
    let environment = Environment::builder()
        .set_variables(Some(wanted.env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()))
        .build();
    let got = lambda
        .get_function_configuration()
        .function_name(wanted.name)
        .send()
        .await
        .map_err(aws("GetFunctionConfiguration"));
    if is_code(&got, "ResourceNotFoundException") {
        // A role IAM has just created may not be assumable by Lambda for some seconds (IAM is
        // eventually consistent): CreateFunction says so, and is tried again.
        let mut attempt = 0;
        let created = loop {
            let result = lambda
                .create_function()
                .function_name(wanted.name)
                .runtime(Runtime::Providedal2023)
                .handler("bootstrap")
                .role(wanted.role)
                .code(FunctionCode::builder().zip_file(Blob::new(wanted.code.zip.clone())).build())
                .description(wanted.description)
                .timeout(wanted.timeout)
                .memory_size(128)
                .architectures(host_architecture())
                .environment(environment.clone())
                .send()
                .await
                .map_err(aws("CreateFunction"));
            match result {
                Err(ProvisionError::Aws { ref message, .. })
                    if attempt < 10
                        && is_code(&result, "InvalidParameterValueException")
                        && message.contains("cannot be assumed") =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                other => break other?,
            }
        };
        changes.push(format!("function {} created", wanted.name));
        wait_for_function(lambda, wanted.name).await?;
        return created.function_arn.ok_or_else(|| ProvisionError::unexpected("CreateFunction", "no FunctionArn"));
    }
    let current = got?;
    let current_env = current.environment().and_then(|e| e.variables()).cloned().unwrap_or_default();
    let same_config = current.role() == Some(wanted.role)
        && current.timeout() == Some(wanted.timeout)
        && current.description() == Some(wanted.description)
        && current_env == environment.variables().cloned().unwrap_or_default();
    if !same_config {
        lambda
            .update_function_configuration()
            .function_name(wanted.name)
            .role(wanted.role)
            .timeout(wanted.timeout)
            .description(wanted.description)
            .environment(environment)
            .send()
            .await
            .map_err(aws("UpdateFunctionConfiguration"))?;
        changes.push(format!("function {} configuration updated", wanted.name));
        wait_for_function(lambda, wanted.name).await?;
    }
    if current.code_sha256() != Some(wanted.code.sha256.as_str()) {
        lambda
            .update_function_code()
            .function_name(wanted.name)
            .zip_file(Blob::new(wanted.code.zip.clone()))
            .send()
            .await
            .map_err(aws("UpdateFunctionCode"))?;
        changes.push(format!("function {} code updated", wanted.name));
        wait_for_function(lambda, wanted.name).await?;
    }
    current.function_arn.ok_or_else(|| ProvisionError::unexpected("GetFunctionConfiguration", "no FunctionArn"))
}

/// Waits until the function is Active and its last update is done (AWS refuses a second update
/// while one is in progress).
async fn wait_for_function(lambda: &aws_sdk_lambda::Client, name: &str) -> Result<(), ProvisionError> {
    for _ in 0..120 {
        let c = lambda
            .get_function_configuration()
            .function_name(name)
            .send()
            .await
            .map_err(aws("GetFunctionConfiguration"))?;
        let active = matches!(c.state(), None | Some(State::Active));
        let updated = !matches!(c.last_update_status(), Some(LastUpdateStatus::InProgress));
        if matches!(c.state(), Some(State::Failed)) {
            return Err(ProvisionError::unexpected(
                "GetFunctionConfiguration",
                format!("function {name} failed: {}", c.state_reason().unwrap_or("no reason given")),
            ));
        }
        if active && updated {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(ProvisionError::unexpected("GetFunctionConfiguration", format!("function {name} not Active after 60 s")))
}

/// Lets IoT Core's rule `rule_arn` invoke the function (its resource-based policy).
async fn allow_rule(
    lambda: &aws_sdk_lambda::Client,
    function_arn: &str,
    rule_arn: &str,
    account: &str,
    rule: &str,
    changes: &mut Vec<String>,
) -> Result<(), ProvisionError> {
    let added = lambda
        .add_permission()
        .function_name(function_arn)
        .statement_id(format!("iot-rule-{rule}"))
        .action("lambda:InvokeFunction")
        .principal(IOT)
        .source_arn(rule_arn)
        .source_account(account)
        .send()
        .await
        .map_err(aws("AddPermission"));
    if is_code(&added, "ResourceConflictException") {
        return Ok(());
    }
    added?;
    changes.push(format!("rule {rule} may invoke {function_arn}"));
    Ok(())
}

fn lambda_action(function_arn: &str) -> Result<Action, ProvisionError> {
    Ok(Action::builder()
        .lambda(LambdaAction::builder().function_arn(function_arn).build().map_err(build_error)?)
        .build())
}

/// An enabled rule's payload (SQL version 2016-03-23) whose error action republishes IoT Core's
/// error message to [`error_topic`] under `role`.
pub(crate) fn rule_payload(
    sql: &str,
    description: &str,
    actions: Vec<Action>,
    role: &str,
    rule: &str,
) -> Result<TopicRulePayload, ProvisionError> {
    let error_action = Action::builder()
        .republish(
            RepublishAction::builder().role_arn(role).topic(error_topic(rule)).qos(1).build().map_err(build_error)?,
        )
        .build();
    TopicRulePayload::builder()
        .sql(sql)
        .description(description)
        .aws_iot_sql_version("2016-03-23")
        .rule_disabled(false)
        .set_actions(Some(actions))
        .error_action(error_action)
        .build()
        .map_err(build_error)
}

/// The rule, created, replaced when it differs, enabled.
pub(crate) async fn ensure_rule(
    iot: &aws_sdk_iot::Client,
    name: &str,
    payload: TopicRulePayload,
    changes: &mut Vec<String>,
) -> Result<(), ProvisionError> {
    // IoT Core answers GetTopicRule for a missing rule with UnauthorizedException.
    let got = iot.get_topic_rule().rule_name(name).send().await.map_err(aws("GetTopicRule"));
    if is_code(&got, "UnauthorizedException") {
        iot.create_topic_rule()
            .rule_name(name)
            .topic_rule_payload(payload)
            .send()
            .await
            .map_err(aws("CreateTopicRule"))?;
        changes.push(format!("rule {name} created"));
        return Ok(());
    }
    let rule = got?.rule.ok_or_else(|| ProvisionError::unexpected("GetTopicRule", "no rule"))?;
    let same = rule.sql() == Some(payload.sql())
        && rule.description() == payload.description()
        && rule.aws_iot_sql_version() == payload.aws_iot_sql_version()
        && rule.actions() == payload.actions()
        && rule.error_action() == payload.error_action()
        && rule.rule_disabled() == Some(false);
    if !same {
        iot.replace_topic_rule()
            .rule_name(name)
            .topic_rule_payload(payload)
            .send()
            .await
            .map_err(aws("ReplaceTopicRule"))?;
        changes.push(format!("rule {name} replaced"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> AccountScope {
        AccountScope { partition: "aws".into(), region: "eu-west-1".into(), account_id: "111122223333".into() }
    }

    fn spec(prefix: &str) -> AppSpec {
        AppSpec {
            prefix: prefix.into(),
            functions_dir: PathBuf::from("target/release"),
            bucket: "pump-landing".into(),
            maintenance_repeats: 3,
            maintenance_window_minutes: 10,
            function_timeout_secs: 10,
            iot_data_endpoint: None,
        }
    }

    #[test]
    fn names_follow_the_prefix_and_rule_names_use_underscores() {
        let names = spec("site-a").names();
        assert_eq!(names.incidents_table, "site-a-incidents");
        assert_eq!(names.anomaly_rule, "site_a_anomalies");
        assert_eq!(error_topic(&names.telemetry_rule), "ops/rules/site_a_telemetry/errors");
    }

    #[test]
    fn bad_specs_are_refused_before_anything_is_created() {
        for bad in ["", "9lives", "a b", &"x".repeat(41)] {
            assert!(matches!(spec(bad).validate(), Err(ProvisionError::InvalidInput(_))), "{bad:?}");
        }
        let mut s = spec("pump");
        s.maintenance_repeats = 0;
        assert!(s.validate().is_err());
        let mut s = spec("pump");
        s.function_timeout_secs = 901;
        assert!(s.validate().is_err());
        assert!(spec("pump").validate().is_ok());
    }

    #[test]
    fn each_role_allows_only_what_its_owner_does() {
        let table = "arn:aws:dynamodb:eu-west-1:111122223333:table/pump-incidents";
        let handler: serde_json::Value = serde_json::from_str(&anomaly_function_policy(&scope(), table, "f")).unwrap();
        let actions: Vec<&serde_json::Value> =
            handler["Statement"].as_array().unwrap().iter().map(|s| &s["Action"]).collect();
        assert_eq!(actions[0], &json!(["dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]));
        assert_eq!(handler["Statement"][0]["Resource"], table);
        assert_eq!(handler["Statement"][1]["Resource"], "arn:aws:iot:eu-west-1:111122223333:thing/*");
        let rule: serde_json::Value =
            serde_json::from_str(&rule_policy(&scope(), "pump_telemetry", Some("b"))).unwrap();
        assert_eq!(
            rule["Statement"][0]["Resource"],
            "arn:aws:iot:eu-west-1:111122223333:topic/ops/rules/pump_telemetry/errors"
        );
        assert_eq!(rule["Statement"][1]["Resource"], "arn:aws:s3:::b/telemetry/*");
        for text in [rule_policy(&scope(), "r", None), aggregator_function_policy(&scope(), table, "f")] {
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            for statement in doc["Statement"].as_array().unwrap() {
                let actions = statement["Action"].to_string();
                assert!(!actions.contains('*'), "no wildcard actions: {actions}");
            }
        }
    }

    #[test]
    fn packages_are_reproducible_and_hold_an_executable_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("f");
        std::fs::write(&bin, b"#!/bin/sh\necho hi\n").unwrap();
        let a = package(&bin).unwrap();
        let b = package(&bin).unwrap();
        assert_eq!(a.sha256, b.sha256);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(a.zip)).unwrap();
        let entry = archive.by_name("bootstrap").unwrap();
        assert_eq!(entry.unix_mode().map(|m| m & 0o777), Some(0o755));
        match package(&dir.path().join("missing")) {
            Err(ProvisionError::InvalidInput(m)) => assert!(m.contains("cargo build"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
