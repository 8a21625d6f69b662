//! Thing groups on the IoT control plane: CreateThingGroup, DescribeThingGroup,
//! DeleteThingGroup, ListThingGroups, AddThingToThingGroup,
//! RemoveThingFromThingGroup, ListThingsInThingGroup and
//! ListThingGroupsForThing. URIs, query names and members follow `iot.json`
//! (AWS IoT, 2015-05-28); the rules live in [`crate::registry`].

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::AppState;
use super::control::{Reply, on_registry};
use super::error::AwsError;
use super::wire::*;
use crate::registry::ListThingGroupsQuery;

/// Routes of the thing-group operations.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/thing-groups", get(list_thing_groups))
        // `PUT /thing-groups/addThingToThingGroup` and `…/removeThingFromThingGroup`
        // share the pattern; `thing_groups_put` tells them apart.
        .route(
            "/thing-groups/{thingGroupName}",
            get(describe_thing_group).post(create_thing_group).delete(delete_thing_group).put(thing_groups_put),
        )
        .route("/thing-groups/{thingGroupName}/things", get(list_things_in_thing_group))
        .route("/things/{thingName}/thing-groups", get(list_thing_groups_for_thing))
}

async fn create_thing_group(
    State(st): State<AppState>,
    Label(name): Label,
    JsonBody(req): JsonBody<CreateThingGroupRequest>,
) -> Reply {
    check_name("thing group name", &name)?;
    if let Some(parent) = &req.parent_group_name {
        check_name("parent group name", parent)?;
    }
    let props = req.thing_group_properties.unwrap_or_default();
    let attributes = props.attribute_payload.and_then(|p| p.attributes).unwrap_or_default();
    let g = on_registry(&st, move |reg| {
        Ok(reg.create_thing_group(
            &name,
            req.parent_group_name.as_deref(),
            props.thing_group_description.as_deref(),
            attributes,
        )?)
    })
    .await?;
    Ok(json_ok(&CreateThingGroupResponse { thing_group_name: g.name, thing_group_arn: g.arn, thing_group_id: g.id }))
}

async fn describe_thing_group(State(st): State<AppState>, Label(name): Label) -> Reply {
    check_name("thing group name", &name)?;
    let (g, ancestors) =
        on_registry(&st, move |reg| Ok((reg.describe_thing_group(&name)?, reg.thing_group_ancestors(&name)?))).await?;
    Ok(json_ok(&DescribeThingGroupResponse {
        thing_group_name: g.name,
        thing_group_id: g.id,
        thing_group_arn: g.arn,
        version: g.version,
        thing_group_properties: ThingGroupProperties {
            thing_group_description: g.description,
            attribute_payload: Some(AttributePayload { attributes: Some(g.attributes), merge: None }),
        },
        thing_group_metadata: ThingGroupMetadata {
            parent_group_name: g.parent_group_name,
            root_to_parent_thing_groups: ancestors.into_iter().map(GroupNameAndArn::from).collect(),
            creation_date: g.creation_date,
        },
    }))
}

async fn delete_thing_group(State(st): State<AppState>, Label(name): Label, params: Params) -> Reply {
    check_name("thing group name", &name)?;
    let expected = params.int("expectedVersion", i64::MIN, i64::MAX)?;
    on_registry(&st, move |reg| Ok(reg.delete_thing_group(&name, expected)?)).await?;
    Ok(empty_ok())
}

async fn list_thing_groups(State(st): State<AppState>, params: Params) -> Reply {
    let parent_group = params.str("parentGroup").map(str::to_owned);
    let name_prefix_filter = params.str("namePrefixFilter").map(str::to_owned);
    if let Some(parent) = &parent_group {
        check_name("parentGroup", parent)?;
    }
    if let Some(prefix) = &name_prefix_filter {
        check_name("namePrefixFilter", prefix)?;
    }
    let query = ListThingGroupsQuery {
        parent_group,
        name_prefix_filter,
        recursive: params.bool("recursive")?,
        page: params.page()?,
    };
    let (groups, next_token) = on_registry(&st, move |reg| Ok(reg.list_thing_groups(&query)?)).await?;
    Ok(json_ok(&ListThingGroupsResponse { thing_groups: groups.into_iter().map(Into::into).collect(), next_token }))
}

/// The two operations that share `PUT /thing-groups/{thingGroupName}`.
async fn thing_groups_put(
    State(st): State<AppState>,
    Label(operation): Label,
    JsonBody(req): JsonBody<AddThingToThingGroupRequest>,
) -> Reply {
    let remove = match operation.as_str() {
        "addThingToThingGroup" => false,
        "removeThingFromThingGroup" => true,
        other => return Err(AwsError::method_not_allowed("PUT", &format!("/thing-groups/{other}"))),
    };
    let group =
        name_or_arn(req.thing_group_name, req.thing_group_arn, "thinggroup", "thingGroupName or thingGroupArn")?;
    let thing = name_or_arn(req.thing_name, req.thing_arn, "thing", "thingName or thingArn")?;
    check_name("thing group name", &group)?;
    check_name("thing name", &thing)?;
    on_registry(&st, move |reg| {
        if remove {
            Ok(reg.remove_thing_from_thing_group(&group, &thing)?)
        } else {
            Ok(reg.add_thing_to_thing_group(&group, &thing)?)
        }
    })
    .await?;
    Ok(empty_ok())
}

/// The name given directly, else the one at the end of the ARN.
fn name_or_arn(name: Option<String>, arn: Option<String>, kind: &str, what: &str) -> Result<String, AwsError> {
    match (name, arn) {
        (Some(n), _) => Ok(n),
        (None, Some(arn)) => arn_resource(&arn, kind)
            .map(str::to_owned)
            .ok_or_else(|| AwsError::invalid_request(format!("{arn:?} is not a {kind} ARN"))),
        (None, None) => Err(AwsError::invalid_request(format!("{what} is required"))),
    }
}

async fn list_things_in_thing_group(State(st): State<AppState>, Label(name): Label, params: Params) -> Reply {
    check_name("thing group name", &name)?;
    let recursive = params.bool("recursive")?.unwrap_or(false);
    let page = params.page()?;
    let (things, next_token) =
        on_registry(&st, move |reg| Ok(reg.list_things_in_thing_group(&name, recursive, &page)?)).await?;
    Ok(json_ok(&ListThingsInThingGroupResponse { things, next_token }))
}

async fn list_thing_groups_for_thing(State(st): State<AppState>, Label(thing): Label, params: Params) -> Reply {
    check_name("thing name", &thing)?;
    let page = params.page()?;
    let (groups, next_token) = on_registry(&st, move |reg| Ok(reg.list_thing_groups_for_thing(&thing, &page)?)).await?;
    Ok(json_ok(&ListThingGroupsResponse { thing_groups: groups.into_iter().map(Into::into).collect(), next_token }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_or_arn_prefers_the_name_and_reads_the_arn_otherwise() {
        let arn = Some("arn:aws:iot:us-east-1:000000000000:thing/pump-1".to_string());
        assert_eq!(name_or_arn(Some("a".into()), arn.clone(), "thing", "x").unwrap(), "a");
        assert_eq!(name_or_arn(None, arn.clone(), "thing", "x").unwrap(), "pump-1");
        assert!(name_or_arn(None, arn, "thinggroup", "x").is_err());
        assert!(name_or_arn(None, None, "thing", "x").is_err());
    }
}
