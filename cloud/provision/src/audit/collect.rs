//! Reading the live deployment for the service-delivery audit, every list paginated, through the
//! same clients as `provision` (so the same command reads the local cloud or an AWS account).
//!
//! Operations: IoT ListThings, ListThingGroups, ListThingsInThingGroup, ListTopicRules,
//! GetTopicRule, ListJobs, GetJobDocument, ListJobExecutionsForJob, GetIndexingConfiguration,
//! ListProvisioningTemplates (plus the security audit's reads, [`super::read_account`]);
//! Greengrass V2 ListComponents (PRIVATE scope), ListComponentVersions, GetComponent, ListDeployments,
//! GetDeployment, ListCoreDevices, ListInstalledComponents; Lambda ListFunctions; DynamoDB
//! ListTables; S3 ListBuckets; IAM GetRole, ListRolePolicies, GetRolePolicy; CloudWatch
//! DescribeAlarms; CloudWatch Logs DescribeLogGroups.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use super::evidence::{
    Account, Alarm, Certificate, Component, CoreDevice, Deployment, Evidence, Function, Greengrass, Indexing, Iot, Job,
    Policy, ProvisioningTemplate, Role, RoleAlias, Rule, RuleAction, Thing, ThingGroup,
};
use crate::error::{ProvisionError, aws};

/// The clients the audit reads with.
#[derive(Debug, Clone)]
pub struct AuditClients {
    /// IoT control plane.
    pub iot: aws_sdk_iot::Client,
    /// Greengrass V2.
    pub greengrass: aws_sdk_greengrassv2::Client,
    /// Lambda.
    pub lambda: aws_sdk_lambda::Client,
    /// DynamoDB.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// IAM.
    pub iam: aws_sdk_iam::Client,
    /// CloudWatch.
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

impl AuditClients {
    /// Every client from one set of options.
    pub async fn new(options: &crate::ClientOptions) -> AuditClients {
        AuditClients {
            iot: crate::iot_client(options).await,
            greengrass: crate::greengrass_client(options).await,
            lambda: crate::lambda_client(options).await,
            dynamodb: crate::dynamodb_client(options).await,
            s3: crate::s3_client(options).await,
            iam: crate::iam_client(options).await,
            cloudwatch: crate::cloudwatch_client(options).await,
            logs: crate::cloudwatch_logs_client(options).await,
        }
    }
}

/// What to read besides the account.
#[derive(Debug, Clone, Default)]
pub struct CollectOptions {
    /// Only the things (and core devices) of this thing group; every thing when `None`.
    pub thing_group: Option<String>,
    /// Only the functions, tables, rules and alarms whose names start with this prefix (rules
    /// with `_` for `-`); every one when `None`.
    pub prefix: Option<String>,
    /// The demo's `report.json`.
    pub report: Option<PathBuf>,
    /// The model card.
    pub model_card: Option<PathBuf>,
    /// The price list.
    pub prices: Option<PathBuf>,
    /// Now, epoch seconds (the security audit's expiry threshold counts from it).
    pub now: i64,
}

impl CollectOptions {
    fn keeps(&self, name: &str) -> bool {
        self.prefix.as_deref().is_none_or(|p| name.starts_with(p) || name.starts_with(&p.replace('-', "_")))
    }
}

/// Reads a JSON file the audit cites; a clear error when it is unreadable or not JSON.
pub fn read_json(path: &std::path::Path, what: &str) -> Result<Value, ProvisionError> {
    let bytes =
        std::fs::read(path).map_err(|e| ProvisionError::InvalidInput(format!("{what} {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ProvisionError::InvalidInput(format!("{what} {} is not JSON: {e}", path.display())))
}

/// Reads the deployment and the run's files into [`Evidence`].
pub async fn collect(clients: &AuditClients, options: &CollectOptions) -> Result<Evidence, ProvisionError> {
    let read = |p: &Option<PathBuf>, what: &str| p.as_ref().map(|p| read_json(p, what)).transpose();
    let run = read(&options.report, "the run report")?;
    let model_card = read(&options.model_card, "the model card")?;
    let prices = read(&options.prices, "the price list")?;

    let snapshot = super::read_account(&clients.iot, &clients.iam).await?;
    let security = super::report_of(&snapshot, options.now, super::DEFAULT_EXPIRY_DAYS);
    let iot = read_iot(&clients.iot, options, &snapshot).await?;
    let things: BTreeSet<&str> = iot.things.iter().map(|t| t.name.as_str()).collect();
    let greengrass = read_greengrass(&clients.greengrass, &things, options.thing_group.is_some()).await?;

    let functions: Vec<Function> = pages!(clients.lambda.list_functions(), "ListFunctions", functions)
        .into_iter()
        .filter(|f| options.keeps(f.function_name().unwrap_or_default()))
        .map(|f| Function {
            name: f.function_name().unwrap_or_default().to_owned(),
            arn: f.function_arn().unwrap_or_default().to_owned(),
            runtime: f.runtime().map(|r| r.as_str().to_owned()).unwrap_or_default(),
            role: f.role().unwrap_or_default().to_owned(),
        })
        .collect();
    let mut tables: Vec<String> = pages!(clients.dynamodb.list_tables(), "ListTables", table_names);
    tables.retain(|t| options.keeps(t));
    let mut buckets = read_buckets(&clients.s3).await?;
    // With a prefix, the solution's buckets: those named with it and those its rules write to.
    let targets: BTreeSet<&str> =
        iot.rules.iter().flat_map(|r| r.actions.iter()).filter(|a| a.kind == "S3").map(|a| a.target.as_str()).collect();
    buckets.retain(|b| options.keeps(b) || targets.contains(b.as_str()));

    let mut role_arns: BTreeSet<String> = functions.iter().map(|f| f.role.clone()).collect();
    role_arns.extend(iot.rules.iter().flat_map(|r| r.actions.iter().filter_map(|a| a.role_arn.clone())));
    role_arns.extend(iot.role_aliases.iter().map(|a| a.role_arn.clone()));
    let mut roles = Vec::new();
    for arn in role_arns.iter().filter(|a| !a.is_empty()) {
        let name = arn.rsplit('/').next().unwrap_or_default();
        if let Some(role) = super::read_role(&clients.iam, name).await? {
            let inline_policies = role
                .inline_policies
                .into_iter()
                .map(|(n, d)| (n, serde_json::from_str(&d).unwrap_or(Value::String(d))))
                .collect();
            roles.push(Role { name: name.to_owned(), arn: arn.clone(), inline_policies });
        }
    }

    let alarms = read_alarms(&clients.cloudwatch, options).await?;
    let mut log_groups: Vec<String> = pages!(clients.logs.describe_log_groups(), "DescribeLogGroups", log_groups)
        .into_iter()
        .filter_map(|g| g.log_group_name().map(str::to_owned))
        .collect();
    log_groups.sort();

    let account = account_of(&iot, &functions, &greengrass);
    Ok(Evidence {
        account: Account { region: clients.iot.config().region().map(|r| r.to_string()), ..account },
        iot,
        greengrass,
        functions,
        tables,
        buckets,
        roles,
        alarms,
        log_groups,
        security: Some(security),
        run,
        model_card,
        prices,
    })
}

/// The account ID from the first resource ARN that names one (STS is not among the services the
/// local cloud serves, and every ARN of an account carries its ID).
fn account_of(iot: &Iot, functions: &[Function], greengrass: &Greengrass) -> Account {
    let arns = iot
        .thing_groups
        .iter()
        .map(|g| g.arn.as_str())
        .chain(functions.iter().map(|f| f.arn.as_str()))
        .chain(greengrass.deployments.iter().map(|d| d.target_arn.as_str()));
    for arn in arns {
        if let Some(scope) = crate::policy::AccountScope::from_arn(arn) {
            return Account { id: Some(scope.account_id), source: Some(arn.to_owned()), region: None };
        }
    }
    Account::default()
}

async fn read_iot(
    iot: &aws_sdk_iot::Client,
    options: &CollectOptions,
    snapshot: &super::Snapshot,
) -> Result<Iot, ProvisionError> {
    let mut thing_groups = Vec::new();
    for g in pages!(iot.list_thing_groups(), "ListThingGroups", thing_groups) {
        let name = g.group_name().unwrap_or_default().to_owned();
        let mut things: Vec<String> =
            pages!(iot.list_things_in_thing_group().thing_group_name(&name), "ListThingsInThingGroup", things);
        things.sort();
        thing_groups.push(ThingGroup { arn: g.group_arn().unwrap_or_default().to_owned(), name, things });
    }
    thing_groups.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<String> = match &options.thing_group {
        Some(group) => match thing_groups.iter().find(|g| &g.name == group) {
            Some(g) => g.things.clone(),
            None => return Err(ProvisionError::InvalidInput(format!("no thing group {group:?} in the account"))),
        },
        None => pages!(iot.list_things(), "ListThings", things)
            .into_iter()
            .filter_map(|t| t.thing_name().map(str::to_owned))
            .collect(),
    };
    let mut things: Vec<Thing> = names
        .into_iter()
        .map(|name| {
            let groups = thing_groups.iter().filter(|g| g.things.contains(&name)).map(|g| g.name.clone()).collect();
            Thing { name, groups }
        })
        .collect();
    things.sort_by(|a, b| a.name.cmp(&b.name));

    // With a thing group, the certificates of its things only (an account holds other devices').
    let in_scope = |c: &&super::CertificateSnapshot| {
        options.thing_group.is_none() || c.things.iter().any(|t| things.iter().any(|x| &x.name == t))
    };
    let certificates = snapshot
        .certificates
        .iter()
        .filter(in_scope)
        .map(|c| Certificate {
            id: c.id.clone(),
            status: c.status.clone(),
            not_after: super::checks::not_after(c).ok(),
            things: c.things.clone(),
        })
        .collect();
    let policies = snapshot
        .policies
        .iter()
        .map(|p| Policy {
            name: p.name.clone(),
            document: serde_json::from_str(&p.document).unwrap_or(Value::String(p.document.clone())),
        })
        .collect();

    let mut rules = Vec::new();
    for item in pages!(iot.list_topic_rules(), "ListTopicRules", rules) {
        let name = item.rule_name().unwrap_or_default();
        if !options.keeps(name) {
            continue;
        }
        let got = iot.get_topic_rule().rule_name(name).send().await.map_err(aws("GetTopicRule"))?;
        let Some(rule) = got.rule() else { continue };
        rules.push(Rule {
            name: name.to_owned(),
            sql: rule.sql().unwrap_or_default().to_owned(),
            disabled: rule.rule_disabled().unwrap_or(false),
            actions: rule.actions().iter().map(rule_action).collect(),
            error_action: rule.error_action().map(|a| rule_action(a).kind),
        });
    }
    rules.sort_by(|a, b| a.name.cmp(&b.name));

    let mut jobs = Vec::new();
    for summary in pages!(iot.list_jobs(), "ListJobs", jobs) {
        let id = summary.job_id().unwrap_or_default().to_owned();
        let document = iot.get_job_document().job_id(&id).send().await.map_err(aws("GetJobDocument"))?;
        let rotation = crate::rotate::is_rotation_document(document.document().unwrap_or_default());
        let mut executions: Vec<(String, String)> =
            pages!(iot.list_job_executions_for_job().job_id(&id), "ListJobExecutionsForJob", execution_summaries)
                .into_iter()
                .map(|e| {
                    let thing = e.thing_arn().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_owned();
                    let status = e
                        .job_execution_summary()
                        .and_then(|s| s.status())
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default();
                    (thing, status)
                })
                .collect();
        executions.sort();
        jobs.push(Job {
            status: summary.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            id,
            rotation,
            executions,
        });
    }
    jobs.sort_by(|a, b| a.id.cmp(&b.id));

    let indexing = iot.get_indexing_configuration().send().await.map_err(aws("GetIndexingConfiguration"))?;
    let indexing = indexing.thing_indexing_configuration().map_or_else(Indexing::default, |c| Indexing {
        thing_indexing_mode: c.thing_indexing_mode().as_str().to_owned(),
        thing_connectivity_indexing_mode: c
            .thing_connectivity_indexing_mode()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_else(|| "OFF".into()),
    });
    let mut provisioning_templates: Vec<ProvisioningTemplate> =
        pages!(iot.list_provisioning_templates(), "ListProvisioningTemplates", templates)
            .into_iter()
            .map(|t| ProvisioningTemplate {
                name: t.template_name().unwrap_or_default().to_owned(),
                enabled: t.enabled().unwrap_or(false),
            })
            .collect();
    provisioning_templates.sort_by(|a, b| a.name.cmp(&b.name));
    let role_aliases = snapshot
        .role_aliases
        .iter()
        .map(|a| RoleAlias { alias: a.alias.clone(), role_arn: a.role_arn.clone() })
        .collect();
    Ok(Iot {
        things,
        thing_groups,
        certificates,
        policies,
        rules,
        jobs,
        indexing,
        provisioning_templates,
        role_aliases,
    })
}

/// A rule action's kind, target and role.
fn rule_action(action: &aws_sdk_iot::types::Action) -> RuleAction {
    let kind = crate::monitoring::action_type(action).unwrap_or("other").to_owned();
    let (target, role_arn) = if let Some(a) = action.lambda() {
        (a.function_arn().to_owned(), None)
    } else if let Some(a) = action.s3() {
        (a.bucket_name().to_owned(), Some(a.role_arn().to_owned()))
    } else if let Some(a) = action.dynamo_dbv2() {
        (a.put_item().map(|p| p.table_name().to_owned()).unwrap_or_default(), Some(a.role_arn().to_owned()))
    } else if let Some(a) = action.dynamo_db() {
        (a.table_name().to_owned(), Some(a.role_arn().to_owned()))
    } else if let Some(a) = action.republish() {
        (a.topic().to_owned(), Some(a.role_arn().to_owned()))
    } else if let Some(a) = action.cloudwatch_metric() {
        (format!("{}/{}", a.metric_namespace(), a.metric_name()), Some(a.role_arn().to_owned()))
    } else {
        (String::new(), None)
    };
    RuleAction { kind, target, role_arn }
}

async fn read_greengrass(
    gg: &aws_sdk_greengrassv2::Client,
    things: &BTreeSet<&str>,
    scoped: bool,
) -> Result<Greengrass, ProvisionError> {
    use aws_sdk_greengrassv2::types::{ComponentVisibilityScope, RecipeOutputFormat};
    let mut components = Vec::new();
    let listed = pages!(gg.list_components().scope(ComponentVisibilityScope::Private), "ListComponents", components);
    for c in listed {
        let (Some(name), Some(arn)) = (c.component_name(), c.arn()) else { continue };
        let mut versions: Vec<(String, String)> =
            pages!(gg.list_component_versions().arn(arn), "ListComponentVersions", component_versions)
                .into_iter()
                .map(|v| (v.component_version().unwrap_or_default().to_owned(), v.arn().unwrap_or_default().to_owned()))
                .collect();
        versions.sort_by_key(|v| semver_key(&v.0));
        let access_control = match versions.last() {
            Some((_, version_arn)) => {
                let got = gg
                    .get_component()
                    .arn(version_arn)
                    .recipe_output_format(RecipeOutputFormat::Json)
                    .send()
                    .await
                    .map_err(aws("GetComponent"))?;
                declares_access_control(Some(got.recipe()))
            }
            None => false,
        };
        components.push(Component {
            name: name.to_owned(),
            versions: versions.into_iter().map(|(v, _)| v).collect(),
            access_control,
        });
    }
    components.sort_by(|a, b| a.name.cmp(&b.name));

    let mut deployments = Vec::new();
    for d in pages!(gg.list_deployments(), "ListDeployments", deployments) {
        let id = d.deployment_id().unwrap_or_default().to_owned();
        let got = gg.get_deployment().deployment_id(&id).send().await.map_err(aws("GetDeployment"))?;
        let mut components: Vec<(String, String)> = got
            .components()
            .map(|m| m.iter().map(|(n, s)| (n.clone(), s.component_version().to_owned())).collect())
            .unwrap_or_default();
        components.sort();
        deployments.push(Deployment {
            id,
            target_arn: d.target_arn().unwrap_or_default().to_owned(),
            status: d.deployment_status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            latest: d.is_latest_for_target(),
            created: d.creation_timestamp().map(|t| t.secs()),
            components,
        });
    }
    deployments.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));

    let mut core_devices = Vec::new();
    for c in pages!(gg.list_core_devices(), "ListCoreDevices", core_devices) {
        let thing = c.core_device_thing_name().unwrap_or_default().to_owned();
        if scoped && !things.contains(thing.as_str()) {
            continue;
        }
        let mut components: Vec<(String, String, String)> = pages!(
            gg.list_installed_components().core_device_thing_name(&thing),
            "ListInstalledComponents",
            installed_components
        )
        .into_iter()
        .map(|i| {
            (
                i.component_name().unwrap_or_default().to_owned(),
                i.component_version().unwrap_or_default().to_owned(),
                i.lifecycle_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            )
        })
        .collect();
        components.sort();
        core_devices.push(CoreDevice {
            thing,
            status: c.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            components,
        });
    }
    core_devices.sort_by(|a, b| a.thing.cmp(&b.thing));
    Ok(Greengrass { components, deployments, core_devices })
}

/// Whether a JSON recipe declares `accessControl` in its default configuration (keys compared
/// case-insensitively, as the nucleus reads recipes).
fn declares_access_control(recipe: Option<&aws_sdk_greengrassv2::primitives::Blob>) -> bool {
    let Some(recipe) = recipe.and_then(|b| serde_json::from_slice::<Value>(b.as_ref()).ok()) else { return false };
    let get = |v: &Value, key: &str| -> Option<Value> {
        v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone())
    };
    get(&recipe, "ComponentConfiguration")
        .and_then(|c| get(&c, "DefaultConfiguration"))
        .and_then(|c| get(&c, "accessControl"))
        .is_some_and(|a| a.as_object().is_some_and(|o| !o.is_empty()))
}

/// A version's order key: numeric major.minor.patch, then the text.
fn semver_key(version: &str) -> (Vec<u64>, String) {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    (core.split('.').map(|p| p.parse().unwrap_or(0)).collect(), version.to_owned())
}

async fn read_buckets(s3: &aws_sdk_s3::Client) -> Result<Vec<String>, ProvisionError> {
    let got = s3.list_buckets().send().await.map_err(aws("ListBuckets"))?;
    let mut names: Vec<String> = got.buckets().iter().filter_map(|b| b.name().map(str::to_owned)).collect();
    names.sort();
    Ok(names)
}

async fn read_alarms(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    options: &CollectOptions,
) -> Result<Vec<Alarm>, ProvisionError> {
    let mut alarms = Vec::new();
    let mut token = None;
    loop {
        let page = cloudwatch.describe_alarms().set_next_token(token).send().await.map_err(aws("DescribeAlarms"))?;
        for a in page.metric_alarms() {
            let name = a.alarm_name().unwrap_or_default();
            if !options.keeps(name) {
                continue;
            }
            let metric = match (a.namespace(), a.metric_name()) {
                (Some(ns), Some(m)) => format!("{ns}/{m}"),
                _ => "metrics".to_owned(),
            };
            alarms.push(Alarm {
                name: name.to_owned(),
                metric,
                state: a.state_value().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            });
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    alarms.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(alarms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically_not_as_text() {
        let mut v = vec!["1.10.0", "1.2.0", "1.9.1"];
        v.sort_by_key(|v| semver_key(v));
        assert_eq!(v, ["1.2.0", "1.9.1", "1.10.0"]);
    }

    #[test]
    fn access_control_is_found_whatever_the_keys_case() {
        let blob = |s: &str| aws_sdk_greengrassv2::primitives::Blob::new(s.as_bytes());
        let with =
            r#"{"componentConfiguration":{"defaultConfiguration":{"accessControl":{"aws.greengrass.ipc.pubsub":{}}}}}"#;
        assert!(declares_access_control(Some(&blob(with))));
        let without = r#"{"ComponentConfiguration":{"DefaultConfiguration":{"x":1}}}"#;
        assert!(!declares_access_control(Some(&blob(without))));
        assert!(!declares_access_control(Some(&blob("not json"))));
    }

    #[test]
    fn a_missing_or_malformed_input_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_json(&dir.path().join("absent.json"), "the run report").unwrap_err().to_string();
        assert!(err.contains("the run report") && err.contains("absent.json"), "{err}");
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        let err = read_json(&dir.path().join("bad.json"), "the model card").unwrap_err().to_string();
        assert!(err.contains("is not JSON"), "{err}");
    }
}
