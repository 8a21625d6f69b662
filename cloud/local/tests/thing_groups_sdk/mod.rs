//! Thing groups driven by AWS's own `aws-sdk-iot` against a started local
//! cloud: a three-level hierarchy, members added and removed by name and by
//! ARN, recursive and paginated listings through the SDK's paginators, every
//! operation's errors with the model's status codes, deletion cascades, the
//! registry's membership events, and a restart.

use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::config::{BehaviorVersion, Region};
use aws_sdk_iot::error::ProvideErrorMetadata;
use local_cloud::registry::{Membership, RegistryEvent, RemovalCause};
use local_cloud::server::{Config, LocalCloud};

use crate::common::failed;

const ARN_PREFIX: &str = "arn:aws:iot:us-east-1:000000000000";

pub(crate) fn iot(cloud: &LocalCloud) -> aws_sdk_iot::Client {
    let conf = aws_sdk_iot::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(crate::common::admin(&cloud.endpoints))
        .endpoint_url(&cloud.endpoints.http)
        .retry_config(RetryConfig::disabled())
        .http_client(crate::common::sdk_http_client())
        .build();
    aws_sdk_iot::Client::from_conf(conf)
}

async fn start(dir: &std::path::Path) -> LocalCloud {
    LocalCloud::start(Config::ephemeral(dir)).await.expect("local cloud starts")
}

/// A started cloud (and its data directory) with the groups `fleet` → `site`
/// → `line`, and `lab` beside `fleet`, made through the SDK.
async fn started_with_hierarchy() -> (tempfile::TempDir, LocalCloud, aws_sdk_iot::Client) {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let iot = iot(&cloud);
    for (group, parent) in [("fleet", None), ("site", Some("fleet")), ("line", Some("site")), ("lab", None)] {
        iot.create_thing_group()
            .thing_group_name(group)
            .set_parent_group_name(parent.map(Into::into))
            .send()
            .await
            .unwrap();
    }
    (dir, cloud, iot)
}

async fn things_in(iot: &aws_sdk_iot::Client, group: &str, recursive: bool, page_size: i32) -> (Vec<String>, usize) {
    let pages: Vec<_> = iot
        .list_things_in_thing_group()
        .thing_group_name(group)
        .recursive(recursive)
        .into_paginator()
        .page_size(page_size)
        .send()
        .collect::<Result<_, _>>()
        .await
        .expect("ListThingsInThingGroup pages");
    let count = pages.len();
    (pages.into_iter().flat_map(|p| p.things.unwrap_or_default()).collect(), count)
}

async fn groups_of(iot: &aws_sdk_iot::Client, thing: &str, page_size: i32) -> Vec<String> {
    iot.list_thing_groups_for_thing()
        .thing_name(thing)
        .into_paginator()
        .page_size(page_size)
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("ListThingGroupsForThing pages")
        .into_iter()
        .map(|g| {
            let name = g.group_name().expect("groupName").to_string();
            assert_eq!(g.group_arn(), Some(format!("{ARN_PREFIX}:thinggroup/{name}").as_str()));
            name
        })
        .collect()
}

async fn thing_groups(iot: &aws_sdk_iot::Client, parent: Option<&str>, recursive: Option<bool>) -> Vec<String> {
    iot.list_thing_groups()
        .set_parent_group(parent.map(Into::into))
        .set_recursive(recursive)
        .into_paginator()
        .page_size(2)
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("ListThingGroups pages")
        .into_iter()
        .map(|g| g.group_name().expect("groupName").to_string())
        .collect()
}

#[tokio::test]
async fn thing_group_members_are_listed_recursively_in_pages_and_survive_a_restart() {
    let (dir, cloud, iot) = started_with_hierarchy().await;
    let names: Vec<String> = (0..7).map(|i| format!("pump-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        iot.create_thing().thing_name(name).send().await.unwrap();
        if i % 2 == 0 {
            iot.add_thing_to_thing_group().thing_group_name("site").thing_name(name).send().await.unwrap();
        } else {
            iot.add_thing_to_thing_group()
                .thing_group_arn(format!("{ARN_PREFIX}:thinggroup/line"))
                .thing_arn(format!("{ARN_PREFIX}:thing/{name}"))
                .send()
                .await
                .unwrap();
        }
    }

    assert_eq!(things_in(&iot, "fleet", false, 3).await, (vec![], 1));
    assert_eq!(things_in(&iot, "fleet", true, 3).await, (names.clone(), 3), "7 things in pages of 3");
    let (on_line, _) = things_in(&iot, "line", true, 250).await;
    assert_eq!(on_line, ["pump-01", "pump-03", "pump-05"]);
    let out = iot.list_things_in_thing_group().thing_group_name("site").max_results(2).send().await.unwrap();
    assert_eq!((out.things(), out.next_token().is_some()), (&["pump-00".to_string(), "pump-02".into()][..], true));

    assert_eq!(groups_of(&iot, "pump-01", 1).await, ["fleet", "line", "site"], "direct groups and their ancestors");
    assert_eq!(groups_of(&iot, "pump-00", 1).await, ["fleet", "site"]);

    assert_eq!(thing_groups(&iot, None, None).await, ["fleet", "lab", "line", "site"]);
    assert_eq!(thing_groups(&iot, None, Some(false)).await, ["fleet", "lab"]);
    assert_eq!(thing_groups(&iot, Some("fleet"), None).await, ["line", "site"]);
    assert_eq!(thing_groups(&iot, Some("fleet"), Some(false)).await, ["site"]);
    let prefixed = iot.list_thing_groups().name_prefix_filter("l").send().await.unwrap();
    let prefixed: Vec<_> = prefixed.thing_groups().iter().filter_map(|g| g.group_name()).collect();
    assert_eq!(prefixed, ["lab", "line"]);

    // Removal by name and by ARN; removing a non-member changes nothing and succeeds.
    iot.remove_thing_from_thing_group().thing_group_name("line").thing_name("pump-01").send().await.unwrap();
    iot.remove_thing_from_thing_group()
        .thing_group_arn(format!("{ARN_PREFIX}:thinggroup/site"))
        .thing_arn(format!("{ARN_PREFIX}:thing/pump-00"))
        .send()
        .await
        .unwrap();
    iot.remove_thing_from_thing_group().thing_group_name("line").thing_name("pump-01").send().await.unwrap();
    iot.remove_thing_from_thing_group().thing_group_name("lab").thing_name("pump-02").send().await.unwrap();
    assert!(groups_of(&iot, "pump-01", 10).await.is_empty());
    let (remaining, _) = things_in(&iot, "fleet", true, 250).await;
    assert_eq!(remaining, ["pump-02", "pump-03", "pump-04", "pump-05", "pump-06"]);
    cloud.shutdown().await;

    let cloud = start(dir.path()).await;
    let iot = self::iot(&cloud);
    let (after, _) = things_in(&iot, "fleet", true, 250).await;
    assert_eq!(after, remaining, "memberships survive a restart");
    assert_eq!(groups_of(&iot, "pump-03", 10).await, ["fleet", "line", "site"]);
    assert!(groups_of(&iot, "pump-00", 10).await.is_empty());
    cloud.shutdown().await;
}

#[tokio::test]
async fn thing_group_operations_answer_the_modelled_errors() {
    let (_dir, cloud, iot) = started_with_hierarchy().await;
    iot.create_thing().thing_name("t").send().await.unwrap();
    let not_found = ("ResourceNotFoundException".to_string(), 404);
    let invalid = ("InvalidRequestException".to_string(), 400);

    let unknown_group = iot.list_things_in_thing_group().thing_group_name("nope").send().await;
    assert!(
        unknown_group.as_ref().unwrap_err().as_service_error().is_some_and(|e| e.is_resource_not_found_exception())
    );
    assert_eq!(failed(unknown_group), not_found);
    assert_eq!(failed(iot.list_thing_groups_for_thing().thing_name("nope").send().await), not_found);
    assert_eq!(failed(iot.list_thing_groups().parent_group("nope").send().await), not_found);
    let remove = || iot.remove_thing_from_thing_group();
    assert_eq!(failed(remove().thing_group_name("nope").thing_name("t").send().await), not_found);
    assert_eq!(failed(remove().thing_group_name("line").thing_name("nope").send().await), not_found);
    let err = remove().thing_group_name("line").send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_request_exception(), "no thing named");
    assert_eq!(failed(remove().thing_group_arn(format!("{ARN_PREFIX}:thing/t")).thing_name("t").send().await), invalid);
    let too_many = iot.list_things_in_thing_group().thing_group_name("line").max_results(251).send().await;
    assert_eq!(failed(too_many), invalid);
    assert_eq!(failed(iot.list_thing_groups().name_prefix_filter("bad name").send().await), invalid);

    // A thing may be a direct member of ten groups, not eleven.
    for i in 0..11 {
        iot.create_thing_group().thing_group_name(format!("g{i:02}")).send().await.unwrap();
    }
    for i in 0..10 {
        iot.add_thing_to_thing_group().thing_group_name(format!("g{i:02}")).thing_name("t").send().await.unwrap();
    }
    let eleventh = iot.add_thing_to_thing_group().thing_group_name("g10").thing_name("t").send().await;
    assert_eq!(failed(eleventh), invalid);

    // DeleteThingGroup: children block it (InvalidRequest), a stale version conflicts (409).
    let err = iot.delete_thing_group().thing_group_name("site").send().await.unwrap_err();
    let err = err.into_service_error();
    assert!(err.is_invalid_request_exception(), "{err:?}");
    assert!(err.message().is_some_and(|m| m.contains("child groups")), "{err:?}");
    let stale = iot.delete_thing_group().thing_group_name("line").expected_version(9).send().await;
    assert!(stale.as_ref().unwrap_err().as_service_error().is_some_and(|e| e.is_version_conflict_exception()));
    assert_eq!(failed(stale), ("VersionConflictException".to_string(), 409));
    iot.describe_thing_group().thing_group_name("line").send().await.expect("still there");
    cloud.shutdown().await;
}

#[tokio::test]
async fn deleting_things_and_groups_removes_memberships_and_announces_each_change() {
    let (_dir, cloud, iot) = started_with_hierarchy().await;
    for thing in ["a", "b"] {
        iot.create_thing().thing_name(thing).send().await.unwrap();
        iot.add_thing_to_thing_group().thing_group_name("line").thing_name(thing).send().await.unwrap();
    }
    iot.add_thing_to_thing_group().thing_group_name("lab").thing_name("a").send().await.unwrap();
    let mut events = cloud.registry.events();
    let line = |thing: &str| Membership {
        thing_name: thing.into(),
        thing_group_name: "line".into(),
        ancestors: vec!["fleet".into(), "site".into()],
    };

    // Adding again is a no-op: no event. Removal through the SDK is one event.
    iot.add_thing_to_thing_group().thing_group_name("line").thing_name("a").send().await.unwrap();
    iot.remove_thing_from_thing_group().thing_group_name("lab").thing_name("a").send().await.unwrap();
    iot.add_thing_to_thing_group().thing_group_name("lab").thing_name("a").send().await.unwrap();
    let lab_a = Membership { thing_name: "a".into(), thing_group_name: "lab".into(), ancestors: vec![] };
    assert_eq!(
        events.try_recv().unwrap(),
        RegistryEvent::ThingRemovedFromThingGroup { membership: lab_a.clone(), cause: RemovalCause::Removed }
    );
    assert_eq!(events.try_recv().unwrap(), RegistryEvent::ThingAddedToThingGroup { membership: lab_a.clone() });

    iot.delete_thing().thing_name("a").send().await.unwrap();
    assert_eq!(
        events.try_recv().unwrap(),
        RegistryEvent::ThingRemovedFromThingGroup { membership: lab_a, cause: RemovalCause::ThingDeleted }
    );
    assert_eq!(
        events.try_recv().unwrap(),
        RegistryEvent::ThingRemovedFromThingGroup { membership: line("a"), cause: RemovalCause::ThingDeleted }
    );
    let (left, _) = things_in(&iot, "fleet", true, 250).await;
    assert_eq!(left, ["b"]);

    iot.delete_thing_group().thing_group_name("line").expected_version(1).send().await.unwrap();
    assert_eq!(
        events.try_recv().unwrap(),
        RegistryEvent::ThingRemovedFromThingGroup { membership: line("b"), cause: RemovalCause::GroupDeleted }
    );
    assert!(events.try_recv().is_err(), "nothing else was announced");
    assert!(groups_of(&iot, "b", 10).await.is_empty());
    let err = iot.describe_thing_group().thing_group_name("line").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
    // Deleting a missing group succeeds, as on AWS; `site` is a leaf now.
    iot.delete_thing_group().thing_group_name("line").send().await.unwrap();
    iot.delete_thing_group().thing_group_name("site").send().await.unwrap();
    assert_eq!(thing_groups(&iot, None, None).await, ["fleet", "lab"]);
    cloud.shutdown().await;
}
