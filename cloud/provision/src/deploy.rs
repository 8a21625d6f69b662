//! Deploying component versions to a thing group and following the deployment to the end.
//!
//! CreateDeployment (aws-sdk-greengrassv2) with the rollout, abort and update policies; the
//! service turns a thing-group deployment into a continuous IoT job in the `aws-gg-deployment`
//! namespace. The outcome is read the way the Greengrass console reads it: ListCoreDevices for the
//! group, then ListEffectiveDeployments per core, until every core reports a terminal status for
//! this deployment or the deadline passes. Follows the Greengrass V2 API Reference.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_greengrassv2::operation::get_deployment::GetDeploymentOutput;
use aws_sdk_greengrassv2::types::{
    ComponentConfigurationUpdate, ComponentDeploymentSpecification, DeploymentComponentUpdatePolicy,
    DeploymentComponentUpdatePolicyAction, DeploymentFailureHandlingPolicy, DeploymentIoTJobConfiguration,
    DeploymentPolicies, EffectiveDeploymentExecutionStatus, IoTJobAbortAction, IoTJobAbortConfig, IoTJobAbortCriteria,
    IoTJobExecutionFailureType, IoTJobExecutionsRolloutConfig,
};
use aws_sdk_greengrassv2::types::{DeploymentHistoryFilter, DeploymentStatus};
use serde_json::Value;

use crate::component::component_version_arn;
use crate::error::{ProvisionError, aws, is_code};

/// What to deploy, where, and how.
#[derive(Debug, Clone, Default)]
pub struct DeploySpec {
    /// The target thing group's name.
    pub thing_group: String,
    /// Create the thing group when it does not exist.
    pub create_group: bool,
    /// `(name, version)` of each component.
    pub components: Vec<(String, String)>,
    /// Configuration merges: component name → a JSON object (as text).
    pub merges: Vec<(String, String)>,
    /// The deployment's name (default: the group's).
    pub deployment_name: Option<String>,
    /// IoT job rollout: at most this many cores start per minute.
    pub rollout_max_per_minute: Option<i32>,
    /// IoT job abort: cancel when this percentage of cores failed (after at least one finished).
    pub abort_failure_percent: Option<f64>,
    /// How long components may take to agree to the update (`componentUpdatePolicy.timeoutInSeconds`).
    pub update_timeout_secs: Option<i32>,
    /// `failureHandlingPolicy`: `true` for ROLLBACK (the service's default), `false` for DO_NOTHING.
    pub rollback: Option<bool>,
    /// `componentUpdatePolicy.action`: `true` NOTIFY_COMPONENTS, `false` SKIP_NOTIFY_COMPONENTS.
    pub notify: Option<bool>,
}

/// Parses `NAME=VERSION`.
pub fn parse_component(arg: &str) -> Result<(String, String), ProvisionError> {
    match arg.split_once('=') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => Ok((name.into(), version.into())),
        _ => Err(ProvisionError::InvalidInput(format!("--component {arg:?}: expected NAME=VERSION"))),
    }
}

/// Parses `NAME=JSON`, where the JSON must be an object (the merge Greengrass applies).
pub fn parse_merge(arg: &str) -> Result<(String, String), ProvisionError> {
    let Some((name, json)) = arg.split_once('=').filter(|(n, _)| !n.is_empty()) else {
        return Err(ProvisionError::InvalidInput(format!("--merge {arg:?}: expected NAME=JSON")));
    };
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(_)) => Ok((name.into(), json.into())),
        Ok(_) => Err(ProvisionError::InvalidInput(format!("--merge for {name}: the merge must be a JSON object"))),
        Err(e) => Err(ProvisionError::InvalidInput(format!("--merge for {name}: malformed JSON: {e}"))),
    }
}

/// A created deployment.
#[derive(Debug, Clone)]
pub struct CreatedDeployment {
    /// Its id.
    pub deployment_id: String,
    /// The IoT job that carries it to the cores.
    pub iot_job_id: Option<String>,
    /// The thing group's ARN.
    pub target_arn: String,
}

/// Checks the input, makes sure the group (and every component version) exists, and creates the
/// deployment. Nothing is created when the input is wrong.
pub async fn create_group_deployment(
    iot: &aws_sdk_iot::Client,
    gg: &aws_sdk_greengrassv2::Client,
    spec: &DeploySpec,
) -> Result<CreatedDeployment, ProvisionError> {
    if spec.components.is_empty() {
        return Err(ProvisionError::InvalidInput("no --component NAME=VERSION given".into()));
    }
    let mut components: BTreeMap<&str, ComponentDeploymentSpecification> = BTreeMap::new();
    for (name, version) in &spec.components {
        let merge = spec.merges.iter().find(|(n, _)| n == name).map(|(_, json)| json.as_str());
        if let Some(json) = merge {
            parse_merge(&format!("{name}={json}"))?;
        }
        let mut builder = ComponentDeploymentSpecification::builder().component_version(version);
        if let Some(json) = merge {
            builder = builder.configuration_update(ComponentConfigurationUpdate::builder().merge(json).build());
        }
        let specification =
            builder.build().map_err(|e| ProvisionError::InvalidInput(format!("component {name}: {e}")))?;
        components.insert(name, specification);
    }
    if let Some((name, _)) = spec.merges.iter().find(|(n, _)| !components.contains_key(n.as_str())) {
        return Err(ProvisionError::InvalidInput(format!("--merge for {name}, which is not a --component")));
    }
    for (name, version) in &spec.components {
        component_version_arn(gg, name, version).await?;
    }
    let target_arn = thing_group_arn(iot, &spec.thing_group, spec.create_group).await?;

    let mut policies = DeploymentPolicies::builder();
    if let Some(rollback) = spec.rollback {
        policies = policies.failure_handling_policy(if rollback {
            DeploymentFailureHandlingPolicy::Rollback
        } else {
            DeploymentFailureHandlingPolicy::DoNothing
        });
    }
    if spec.notify.is_some() || spec.update_timeout_secs.is_some() {
        let mut update = DeploymentComponentUpdatePolicy::builder();
        if let Some(notify) = spec.notify {
            update = update.action(if notify {
                DeploymentComponentUpdatePolicyAction::NotifyComponents
            } else {
                DeploymentComponentUpdatePolicyAction::SkipNotifyComponents
            });
        }
        if let Some(secs) = spec.update_timeout_secs {
            update = update.timeout_in_seconds(secs);
        }
        policies = policies.component_update_policy(update.build());
    }
    let mut job = DeploymentIoTJobConfiguration::builder();
    if let Some(per_minute) = spec.rollout_max_per_minute {
        job = job.job_executions_rollout_config(
            IoTJobExecutionsRolloutConfig::builder().maximum_per_minute(per_minute).build(),
        );
    }
    if let Some(percent) = spec.abort_failure_percent {
        let criteria = IoTJobAbortCriteria::builder()
            .failure_type(IoTJobExecutionFailureType::All)
            .action(IoTJobAbortAction::Cancel)
            .threshold_percentage(percent)
            .min_number_of_executed_things(1)
            .build()
            .map_err(|e| ProvisionError::InvalidInput(format!("--abort-failure-percent: {e}")))?;
        let abort = IoTJobAbortConfig::builder()
            .criteria_list(criteria)
            .build()
            .map_err(|e| ProvisionError::InvalidInput(format!("--abort-failure-percent: {e}")))?;
        job = job.abort_config(abort);
    }
    let mut request = gg
        .create_deployment()
        .target_arn(&target_arn)
        .deployment_name(spec.deployment_name.clone().unwrap_or_else(|| spec.thing_group.clone()))
        .deployment_policies(policies.build())
        .iot_job_configuration(job.build());
    for (name, specification) in components {
        request = request.components(name, specification);
    }
    let created = request.send().await.map_err(aws("CreateDeployment"))?;
    let deployment_id = created
        .deployment_id()
        .map(str::to_owned)
        .ok_or_else(|| ProvisionError::unexpected("CreateDeployment", "no deploymentId"))?;
    Ok(CreatedDeployment { deployment_id, iot_job_id: created.iot_job_id().map(str::to_owned), target_arn })
}

/// A new revision of the latest active Greengrass deployment of every thing group `thing`
/// belongs to, with the same components, configuration and policies: how a replacement device
/// under a reused thing gets its groups' deployments (the executions of the earlier revisions'
/// jobs already ended for that thing, so they will not run again); the groups' other cores get
/// what they have and finish at once. Returns the new deployments.
pub async fn revise_group_deployments(
    iot: &aws_sdk_iot::Client,
    gg: &aws_sdk_greengrassv2::Client,
    thing: &str,
) -> Result<Vec<CreatedDeployment>, ProvisionError> {
    let mut groups = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = iot
            .list_thing_groups_for_thing()
            .thing_name(thing)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(aws("ListThingGroupsForThing"))?;
        groups.extend(page.thing_groups().iter().filter_map(|g| g.group_arn().map(str::to_owned)));
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    let mut created = Vec::new();
    for target_arn in groups {
        if let Some(latest) = latest_active_deployment(gg, &target_arn).await? {
            created.push(create_revision(gg, &target_arn, latest).await?);
        }
    }
    Ok(created)
}

/// The group's latest deployment (ListDeployments `LATEST_ONLY`, then GetDeployment), when it is
/// still ACTIVE: the one its cores run.
pub async fn latest_active_deployment(
    gg: &aws_sdk_greengrassv2::Client,
    target_arn: &str,
) -> Result<Option<GetDeploymentOutput>, ProvisionError> {
    let listed = gg
        .list_deployments()
        .target_arn(target_arn)
        .history_filter(DeploymentHistoryFilter::LatestOnly)
        .send()
        .await
        .map_err(aws("ListDeployments"))?;
    let Some(latest) = listed.deployments().iter().find(|d| d.deployment_status() == Some(&DeploymentStatus::Active))
    else {
        return Ok(None);
    };
    let id = latest.deployment_id().unwrap_or_default();
    Ok(Some(gg.get_deployment().deployment_id(id).send().await.map_err(aws("GetDeployment"))?))
}

/// CreateDeployment of `revision` (a GetDeployment answer, changed or not) to `target_arn`: the
/// same name, components, policies and job configuration.
pub async fn create_revision(
    gg: &aws_sdk_greengrassv2::Client,
    target_arn: &str,
    revision: GetDeploymentOutput,
) -> Result<CreatedDeployment, ProvisionError> {
    let revised = gg
        .create_deployment()
        .target_arn(target_arn)
        .set_deployment_name(revision.deployment_name)
        .set_components(revision.components)
        .set_deployment_policies(revision.deployment_policies)
        .set_iot_job_configuration(revision.iot_job_configuration)
        .send()
        .await
        .map_err(aws("CreateDeployment"))?;
    let deployment_id = revised
        .deployment_id()
        .map(str::to_owned)
        .ok_or_else(|| ProvisionError::unexpected("CreateDeployment", "no deploymentId"))?;
    Ok(CreatedDeployment {
        deployment_id,
        iot_job_id: revised.iot_job_id().map(str::to_owned),
        target_arn: target_arn.to_owned(),
    })
}

/// The thing group's ARN; created first when asked to and absent.
pub async fn thing_group_arn(iot: &aws_sdk_iot::Client, group: &str, create: bool) -> Result<String, ProvisionError> {
    let described = iot.describe_thing_group().thing_group_name(group).send().await.map_err(aws("DescribeThingGroup"));
    if !is_code(&described, "ResourceNotFoundException") {
        return described?
            .thing_group_arn()
            .map(str::to_owned)
            .ok_or_else(|| ProvisionError::unexpected("DescribeThingGroup", "no thingGroupArn"));
    }
    if !create {
        return Err(ProvisionError::InvalidInput(format!(
            "thing group {group} does not exist (add --create-group to create it)"
        )));
    }
    let created = iot.create_thing_group().thing_group_name(group).send().await.map_err(aws("CreateThingGroup"))?;
    created
        .thing_group_arn()
        .map(str::to_owned)
        .ok_or_else(|| ProvisionError::unexpected("CreateThingGroup", "no thingGroupArn"))
}

/// One core's view of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreStatus {
    /// The core's thing name.
    pub thing: String,
    /// `None` until the core reports on this deployment.
    pub status: Option<EffectiveDeploymentExecutionStatus>,
    /// The core's reason (its `deployment-failure-cause`), when it gave one.
    pub reason: Option<String>,
}

impl CoreStatus {
    /// Whether the core is done with the deployment, well or not.
    pub fn is_terminal(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            !matches!(s, EffectiveDeploymentExecutionStatus::InProgress | EffectiveDeploymentExecutionStatus::Queued)
        })
    }

    /// Whether the core ended without the deployment in place.
    pub fn is_failure(&self) -> bool {
        self.is_terminal()
            && !matches!(
                self.status,
                Some(EffectiveDeploymentExecutionStatus::Succeeded | EffectiveDeploymentExecutionStatus::Completed)
            )
    }

    /// The status as the service spells it, or `WAITING` before the core reported.
    pub fn status_text(&self) -> &str {
        self.status.as_ref().map_or("WAITING", |s| s.as_str())
    }
}

/// How long and how often to follow.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// Ask the service this often.
    pub poll: Duration,
}

/// How a followed deployment ended.
#[derive(Debug, Clone)]
pub struct DeploymentOutcome {
    /// The deployment.
    pub deployment_id: String,
    /// Every core of the group, by thing name, last status seen.
    pub cores: Vec<CoreStatus>,
    /// The deadline passed before every core finished (or before any core appeared).
    pub timed_out: bool,
}

impl DeploymentOutcome {
    /// Every core succeeded, in time, and there was at least one.
    pub fn succeeded(&self) -> bool {
        !self.timed_out && !self.cores.is_empty() && self.cores.iter().all(|c| c.is_terminal() && !c.is_failure())
    }
}

/// Follows `deployment_id` on the cores of `group_arn` until each reports a terminal status or
/// `options.timeout` passes; `on_change` sees each core's status whenever it changes.
pub async fn follow_deployment(
    gg: &aws_sdk_greengrassv2::Client,
    group_arn: &str,
    deployment_id: &str,
    options: FollowOptions,
    on_change: &mut dyn FnMut(&CoreStatus),
) -> Result<DeploymentOutcome, ProvisionError> {
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut cores: BTreeMap<String, CoreStatus> = BTreeMap::new();
    loop {
        let mut listed = gg.list_core_devices().thing_group_arn(group_arn).into_paginator().send();
        while let Some(page) = listed.next().await {
            let page = page.map_err(aws("ListCoreDevices"))?;
            for core in page.core_devices() {
                let Some(thing) = core.core_device_thing_name() else { continue };
                if !cores.contains_key(thing) {
                    let status = CoreStatus { thing: thing.to_owned(), status: None, reason: None };
                    on_change(&status);
                    cores.insert(thing.to_owned(), status);
                }
            }
        }
        for core in cores.values_mut().filter(|c| !c.is_terminal()) {
            let mut pages = gg.list_effective_deployments().core_device_thing_name(&core.thing).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(aws("ListEffectiveDeployments"))?;
                if let Some(found) = page.effective_deployments().iter().find(|d| d.deployment_id() == deployment_id) {
                    let now = CoreStatus {
                        thing: core.thing.clone(),
                        status: Some(found.core_device_execution_status().clone()),
                        reason: found.reason().filter(|r| !r.is_empty()).map(str::to_owned),
                    };
                    if now != *core {
                        on_change(&now);
                        *core = now;
                    }
                    break;
                }
            }
        }
        let outcome = |timed_out| DeploymentOutcome {
            deployment_id: deployment_id.to_owned(),
            cores: cores.values().cloned().collect(),
            timed_out,
        };
        if !cores.is_empty() && cores.values().all(CoreStatus::is_terminal) {
            return Ok(outcome(false));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(outcome(true));
        }
        tokio::time::sleep(options.poll.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_and_merge_arguments_are_checked_before_anything_is_sent() {
        assert_eq!(parse_component("com.example.A=1.0.0").unwrap(), ("com.example.A".into(), "1.0.0".into()));
        assert!(parse_component("com.example.A").is_err());
        assert!(parse_component("=1.0.0").is_err());
        assert_eq!(parse_merge(r#"A={"x":1}"#).unwrap(), ("A".into(), r#"{"x":1}"#.into()));
        let err = parse_merge(r#"A={"x":"#).unwrap_err();
        assert!(err.to_string().contains("malformed JSON") && err.to_string().contains('A'), "{err}");
        assert!(parse_merge("A=[1]").unwrap_err().to_string().contains("JSON object"));
        assert!(parse_merge("nojson").is_err());
    }

    #[test]
    fn only_succeeded_cores_make_a_successful_deployment() {
        let core =
            |status: Option<EffectiveDeploymentExecutionStatus>| CoreStatus { thing: "c".into(), status, reason: None };
        let outcome = |cores, timed_out| DeploymentOutcome { deployment_id: "d".into(), cores, timed_out };
        assert!(outcome(vec![core(Some(EffectiveDeploymentExecutionStatus::Succeeded))], false).succeeded());
        assert!(!outcome(vec![], false).succeeded(), "no core is no success");
        assert!(!outcome(vec![core(Some(EffectiveDeploymentExecutionStatus::Succeeded))], true).succeeded());
        for failed in [
            EffectiveDeploymentExecutionStatus::Failed,
            EffectiveDeploymentExecutionStatus::Rejected,
            EffectiveDeploymentExecutionStatus::TimedOut,
            EffectiveDeploymentExecutionStatus::Canceled,
        ] {
            let c = core(Some(failed));
            assert!(c.is_terminal() && c.is_failure());
            assert!(!outcome(vec![c], false).succeeded());
        }
        let waiting = core(Some(EffectiveDeploymentExecutionStatus::InProgress));
        assert!(!waiting.is_terminal() && !waiting.is_failure());
        assert_eq!(core(None).status_text(), "WAITING");
    }
}
