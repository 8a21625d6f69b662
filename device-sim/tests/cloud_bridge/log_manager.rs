//! The log manager (`aws.greengrass.LogManager`) against the local cloud's CloudWatch Logs: a
//! component's lines and the core's own log reach the log groups and streams AWS names, with
//! the token exchange role's credentials; a line under `minimumLogLevel` stays home; later
//! intervals send only new lines, and a restart neither loses nor repeats any; rotated files
//! are deleted once uploaded, or when their log is over its disk space limit; lines written while
//! the cloud is down arrive once it is back.

use std::collections::BTreeMap;

use aws_sdk_cloudwatchlogs::Client;
use device_sim::core::runtime::Core;
use serde_json::{Value, json};
use site_testkit::site::Site;
use site_testkit::{WAIT, wait_until};

use super::{TES_ALIAS, THING, tes_role_alias};

/// A component that prints known lines, then waits for a file `go` in its work directory to
/// print more.
const TALKER: &str = "com.example.Talker";

/// The core may connect and assume its token exchange role.
fn core_policy() -> String {
    json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
        {"Effect": "Allow", "Action": "iot:AssumeRoleWithCertificate", "Resource": format!("arn:aws:iot:*:*:rolealias/{TES_ALIAS}")}
    ]})
    .to_string()
}

/// What the log manager's documentation asks of the token exchange role, on Greengrass's
/// log groups only.
const LOGS_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
 "Action":["logs:CreateLogGroup","logs:CreateLogStream","logs:PutLogEvents","logs:DescribeLogStreams"],
 "Resource":"arn:aws:logs:*:*:log-group:/aws/greengrass/*"}]}"#;

fn talker_recipe(run: &str) -> String {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": TALKER,
        "ComponentVersion": "1.0.0",
        "ComponentDependencies": {
            "aws.greengrass.LogManager": {"VersionRequirement": "^2.0.0", "DependencyType": "SOFT"}
        },
        "Manifests": [{"Lifecycle": {"Run": run}}]
    })
    .to_string()
}

async fn logs_site(run: &str) -> Site {
    let mut site = Site::new(THING);
    site.deploy(TALKER, "1.0.0", &talker_recipe(run));
    site.start_cloud(&core_policy()).await;
    let local = site.cloud().local();
    tes_role_alias(local, false);
    local.iam.put_role_policy("CoreTokenExchangeRole", "logs", LOGS_POLICY).unwrap();
    site
}

/// The configuration update: the role alias, and the log manager uploading the system log and
/// the talker's every `interval` seconds with `talker` as the talker's settings.
fn update_config(interval: f64, talker: Value, nucleus: Value) -> Value {
    let mut nucleus_merge = json!({"iotRoleAlias": TES_ALIAS});
    if let (Some(m), Some(extra)) = (nucleus_merge.as_object_mut(), nucleus.as_object()) {
        m.extend(extra.clone());
    }
    json!({
        "aws.greengrass.Nucleus": {"MERGE": nucleus_merge},
        "aws.greengrass.LogManager": {"MERGE": {
            "periodicUploadIntervalSec": interval,
            "logsUploaderConfiguration": {
                "systemLogsConfiguration": {"uploadToCloudWatch": true},
                "componentLogsConfigurationMap": {TALKER: talker}
            }
        }}
    })
}

/// An operator's CloudWatch Logs client (the administrator's key pair from `endpoints.json`).
fn operator_client(site: &Site) -> Client {
    let endpoints = site.cloud().endpoints();
    let pair = endpoints.credentials.as_ref().expect("the administrator's key pair");
    let credentials = aws_credential_types::Credentials::new(
        &pair.access_key_id,
        &pair.secret_access_key,
        None,
        None,
        "local-cloud-administrator",
    );
    let config = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatchlogs::config::Region::new(endpoints.region.clone()))
        .credentials_provider(credentials)
        .endpoint_url(&endpoints.http)
        .http_client(device_sim::core::log_manager::http_client())
        .build();
    Client::from_conf(config)
}

/// An uploaded event: its stream, time and message.
#[derive(Debug, Clone)]
struct Event {
    stream: String,
    timestamp: i64,
    message: String,
}

/// Every event of `group` through FilterLogEvents (none while the group does not exist).
async fn events(client: &Client, group: &str) -> Vec<Event> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = match client.filter_log_events().log_group_name(group).set_next_token(token).send().await {
            Ok(page) => page,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => return out,
            Err(e) => panic!("FilterLogEvents {group}: {}", aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e)),
        };
        out.extend(page.events().iter().map(|e| Event {
            stream: e.log_stream_name().unwrap_or_default().to_owned(),
            timestamp: e.timestamp().unwrap_or_default(),
            message: e.message().unwrap_or_default().to_owned(),
        }));
        match page.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => return out,
        }
    }
}

/// Waits until the events of `group` satisfy `done`; returns them.
async fn wait_events(client: &Client, group: &str, what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    wait_until(format!("{what} in {group}"), async || events(client, group).await, |e| done(e), |e| format!("{e:#?}"))
        .await
}

fn count(events: &[Event], text: &str) -> usize {
    events.iter().filter(|e| e.message.contains(text)).count()
}

/// The stream AWS names for a line of `timestamp` from [`THING`]: `/{yyyy}/{MM}/{dd}/thing/{thing}`.
fn stream_of(timestamp: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp) * 1_000_000).unwrap();
    let date = t.format(time::macros::format_description!("[year]/[month]/[day]")).unwrap();
    format!("/{date}/thing/{THING}")
}

/// The talker's log lines as the core wrote them, counted by text.
fn lines_by_text(site: &Site, logs_dir_files: bool) -> BTreeMap<String, usize> {
    let mut texts = Vec::new();
    if logs_dir_files {
        for entry in std::fs::read_dir(site.core_root().join("logs")).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TALKER) {
                texts.push(std::fs::read_to_string(entry.path()).unwrap());
            }
        }
    } else {
        texts.push(site.log(TALKER));
    }
    let mut counted = BTreeMap::new();
    for line in texts.iter().flat_map(|t| t.lines()) {
        *counted.entry(line.to_owned()).or_insert(0) += 1;
    }
    counted
}

fn events_by_text(events: &[Event]) -> BTreeMap<String, usize> {
    let mut counted = BTreeMap::new();
    for e in events {
        *counted.entry(e.message.clone()).or_insert(0) += 1;
    }
    counted
}

const USER_GROUP: &str = "/aws/greengrass/UserComponent/us-east-1/com.example.Talker";
const SYSTEM_GROUP: &str = "/aws/greengrass/GreengrassSystemComponent/us-east-1/System";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_manager_uploads_new_lines_to_the_groups_and_streams_aws_names_once_across_a_restart() {
    let run = "echo 'talker line one'; echo '[DEBUG] talker debug line'; \
               while [ ! -e go ]; do sleep 0.05; done; echo 'talker line two'; exec sleep 600";
    let site = logs_site(run).await;
    let client = operator_client(&site);
    let config = update_config(0.2, json!({"minimumLogLevel": "INFO"}), json!({}));
    let core = site.start_core(&config).await;
    site.wait_running(&core, TALKER).await;

    let first = wait_events(&client, USER_GROUP, "the talker's first line", |e| count(e, "talker line one") == 1).await;
    for e in &first {
        assert_eq!(e.stream, stream_of(e.timestamp), "{e:?}");
    }
    assert_eq!(count(&first, "talker debug line"), 0, "a DEBUG line stays home under INFO");
    let system = wait_events(&client, SYSTEM_GROUP, "the talker's start in the core's log", |e| {
        count(e, "com.example.Talker: Starting -> Running") >= 1
    })
    .await;
    assert!(system.iter().all(|e| e.stream == stream_of(e.timestamp)), "{system:#?}");

    // The next intervals send what is new, and only that.
    std::fs::write(site.core_root().join("work").join(TALKER).join("go"), b"").unwrap();
    let second =
        wait_events(&client, USER_GROUP, "the talker's second line", |e| count(e, "talker line two") == 1).await;
    assert_eq!(count(&second, "talker line one"), 1, "{second:#?}");

    // A restart: the component prints its lines again, and the core's log goes on; what is in
    // the files is in CloudWatch exactly as often.
    core.shutdown(WAIT).await;
    let core: Core = site.start_core(&config).await;
    site.wait_running(&core, TALKER).await;
    let expected = || {
        let mut lines = lines_by_text(&site, false);
        lines.retain(|text, _| !text.contains("[DEBUG]"));
        lines
    };
    wait_events(&client, USER_GROUP, "every line of both runs once", |e| {
        count(e, "talker line two") == 2 && events_by_text(e) == expected()
    })
    .await;
    let positions = site.core_root().join("work").join("aws.greengrass.LogManager").join("positions.json");
    assert!(positions.is_file(), "the upload positions are kept on disk");
    core.shutdown(WAIT).await;
}

/// About 4 KB of lines, then one more line once `go` is in the work directory.
const BURST: &str = "i=0; while [ $i -lt 60 ]; do echo \"burst line $i of the talker, padded to be long enough\"; \
                     i=$((i+1)); done; while [ ! -e go ]; do sleep 0.05; done; echo 'after the outage'; exec sleep 600";

/// Starts a core whose talker prints [`BURST`], its log manager set with `talker` and the core
/// rotating at 1 KB; waits until every burst line is uploaded once and the burst, rotated out of
/// the file being written, is deleted.
async fn burst_rotated_out_and_deleted(talker: Value) -> (Site, Client, Core) {
    let site = logs_site(BURST).await;
    let client = operator_client(&site);
    let config = update_config(0.2, talker, json!({"logging": {"fileSizeKB": 1}}));
    let core = site.start_core(&config).await;
    site.wait_running(&core, TALKER).await;
    let burst = wait_events(&client, USER_GROUP, "every burst line", |e| count(e, "burst line") == 60).await;
    assert_eq!(events_by_text(&burst).values().max(), Some(&1), "no line twice");
    // The burst went into the file being written; once that file is under the rotation size
    // and no rotated file is left, the burst was rotated out and deleted.
    let logs = site.core_root().join("logs");
    let active = logs.join(format!("{TALKER}.log"));
    let look = || {
        let rotated = std::fs::read_dir(&logs)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{TALKER}_")))
            .count();
        (std::fs::metadata(&active).map(|m| m.len()).unwrap_or(0), rotated)
    };
    wait_until(
        "the burst rotated out and deleted",
        async || look(),
        |(size, rotated)| *size < 1024 && *rotated == 0,
        |seen| format!("(active size, rotated files) {seen:?}"),
    )
    .await;
    (site, client, core)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_are_deleted_once_uploaded_and_lines_wait_out_a_cloud_outage() {
    let (mut site, _, core) = burst_rotated_out_and_deleted(json!({"deleteLogFileAfterCloudUpload": true})).await;

    // The cloud goes away; the line waits and arrives once it is back.
    site.cloud_mut().stop().await;
    std::fs::write(site.core_root().join("work").join(TALKER).join("go"), b"").unwrap();
    site.wait_log(TALKER, "after the outage").await;
    site.cloud_mut().restart().await;
    let client = operator_client(&site);
    let all =
        wait_events(&client, USER_GROUP, "the line written during the outage", |e| count(e, "after the outage") == 1)
            .await;
    assert_eq!(count(&all, "burst line"), 60, "nothing lost or repeated");
    assert!(lines_by_text(&site, true).keys().any(|l| l.contains("after the outage")));
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_over_its_disk_space_limit_loses_its_oldest_uploaded_files() {
    let (_site, _client, core) =
        burst_rotated_out_and_deleted(json!({"diskSpaceLimit": 1, "diskSpaceLimitUnit": "KB"})).await;
    core.shutdown(WAIT).await;
}
