//! Static thing groups: the hierarchy, membership, and the membership events
//! other services follow. Operations and shapes are those of `iot.json`
//! (AWS IoT, 2015-05-28); the rules are the AWS IoT Developer Guide's
//! "Static thing groups":
//!
//! - a group's parent is given at creation and never changes, so the
//!   hierarchy has no cycles;
//! - a thing is a direct member of at most [`MAX_GROUPS_PER_THING`] groups;
//! - a group with child groups cannot be deleted (`InvalidRequestException`,
//!   "Cannot delete thing group : NAME when there are still child groups
//!   attached to it"); deleting a group that has things removes them from it;
//! - ListThingGroupsForThing lists the groups a thing belongs to "including
//!   any parent groups".
//!
//! Each membership is one record (`thing_group_member`, key `group\nthing`),
//! so joining a large group writes one small record. Group records written
//! before that carried a `things` list; [`load_groups`] moves those lists into
//! membership records at start.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{
    K_GROUP, K_GROUP_MEMBER, K_POLICY_TARGET, PageRequest, Registry, RegistryError, RegistryEvent, State, ThingGroup,
    check_attributes, check_resource_name, del, del_pair, group_not_found, paginate, put, put_pair, remove_from,
    thing_not_found,
};
use crate::store::Op;

/// The most groups a thing can be a direct member of: "You can add a thing to
/// a maximum of 10 groups" (AWS IoT Developer Guide, static thing groups).
pub const MAX_GROUPS_PER_THING: usize = 10;

/// A guard on walks up the hierarchy. AWS limits a hierarchy's depth (a
/// quota the registry does not enforce); parents are fixed at creation, so
/// there are no cycles, and the guard only stops a walk over damaged records.
const MAX_GROUP_DEPTH: usize = 16;

/// A thing's direct membership of a group, as [`RegistryEvent`]s carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The thing.
    pub thing_name: String,
    /// The group it joined or left.
    pub thing_group_name: String,
    /// The group's ancestors, root first: a thing in a group is also in its
    /// ancestors' hierarchies (jobs and deployments that target an ancestor
    /// reach it). Kept in the event because a deleted group cannot be asked.
    pub ancestors: Vec<String>,
}

/// Why a thing left a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalCause {
    /// RemoveThingFromThingGroup.
    Removed,
    /// DeleteThing: a deleted thing leaves all its groups.
    ThingDeleted,
    /// DeleteThingGroup: the group's things leave it.
    GroupDeleted,
}

/// Filters and paging for ListThingGroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListThingGroupsQuery {
    /// Only groups under this one (`parentGroup`); it must exist.
    pub parent_group: Option<String>,
    /// Only groups whose name starts with this (`namePrefixFilter`).
    pub name_prefix_filter: Option<String>,
    /// `true` (the default when absent): every descendant of `parent_group`
    /// (every group without one); `false`: its direct children (the root
    /// groups without one). The model leaves the default open
    /// (`RecursiveWithoutDefault`) and the developer guide's example shows
    /// direct children; boto3 output from AWS quoted in getmoto/moto#2961
    /// lists grandchildren for a bare `parentGroup`, which is followed here.
    pub recursive: Option<bool>,
    /// Paging.
    pub page: PageRequest,
}

/// A group record as stored. Records written before memberships had their
/// own kind list the members in `things`.
#[derive(Deserialize)]
pub(super) struct StoredGroup {
    #[serde(flatten)]
    group: ThingGroup,
    #[serde(default)]
    things: Vec<String>,
}

/// Puts stored groups into `state`, with the members of old-style records;
/// returns the writes that move those members into membership records.
pub(super) fn load_groups(state: &mut State, stored: Vec<(String, StoredGroup)>) -> Vec<Op> {
    let mut ops = Vec::new();
    for (name, StoredGroup { group, things }) in stored {
        if !things.is_empty() {
            ops.push(put(K_GROUP, &name, &group));
            // A thing deleted since is dropped: deleting a thing always left its groups.
            for thing in things.into_iter().filter(|t| state.things.contains_key(t)).collect::<Vec<_>>() {
                ops.push(put_pair(K_GROUP_MEMBER, &name, &thing));
                state.link(&name, &thing);
            }
        }
        state.groups.insert(name, group);
    }
    ops
}

impl State {
    /// Records that `thing` is a direct member of `group` (memory only).
    pub(super) fn link(&mut self, group: &str, thing: &str) {
        self.group_members.entry(group.to_string()).or_default().insert(thing.to_string());
        self.thing_groups.entry(thing.to_string()).or_default().insert(group.to_string());
    }

    /// Forgets that membership (memory only) and describes it for the event.
    fn unlink(&mut self, group: &str, thing: &str) -> Membership {
        remove_from(&mut self.group_members, group, thing);
        remove_from(&mut self.thing_groups, thing, group);
        self.membership(group, thing)
    }

    pub(super) fn membership(&self, group: &str, thing: &str) -> Membership {
        Membership {
            thing_name: thing.to_string(),
            thing_group_name: group.to_string(),
            ancestors: self.ancestors(group).into_iter().map(|g| g.name.clone()).collect(),
        }
    }

    pub(super) fn is_member(&self, group: &str, thing: &str) -> bool {
        self.group_members.get(group).is_some_and(|things| things.contains(thing))
    }

    /// The ancestors of `group`, root first (none for a root or unknown group).
    fn ancestors(&self, group: &str) -> Vec<&ThingGroup> {
        let mut chain = Vec::new();
        let mut next = self.groups.get(group).and_then(|g| g.parent_group_name.as_deref());
        while let Some(parent) = next {
            let Some(p) = self.groups.get(parent).filter(|_| chain.len() < MAX_GROUP_DEPTH) else { break };
            chain.push(p);
            next = p.parent_group_name.as_deref();
        }
        chain.reverse();
        chain
    }

    /// The descendants of `group` (children, grandchildren, …), not `group` itself.
    fn descendants(&self, group: &str) -> BTreeSet<&str> {
        let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for g in self.groups.values() {
            if let Some(parent) = g.parent_group_name.as_deref() {
                children.entry(parent).or_default().push(&g.name);
            }
        }
        let mut found = BTreeSet::new();
        let mut frontier = vec![group];
        while let Some(g) = frontier.pop() {
            for &child in children.get(g).into_iter().flatten() {
                if found.insert(child) {
                    frontier.push(child);
                }
            }
        }
        found
    }

    /// The groups `thing` belongs to: its direct groups and their ancestors, by name.
    pub(super) fn groups_of_thing(&self, thing: &str) -> Vec<&ThingGroup> {
        let mut groups: BTreeMap<&str, &ThingGroup> = BTreeMap::new();
        for name in self.thing_groups.get(thing).into_iter().flatten() {
            let direct = self.groups.get(name).into_iter();
            groups.extend(direct.chain(self.ancestors(name)).map(|g| (g.name.as_str(), g)));
        }
        groups.into_values().collect()
    }
}

impl Registry {
    /// Takes `thing` out of `group` in memory, once the change is stored, and
    /// announces it. Called under the write lock, so events keep the order of
    /// the stored changes.
    pub(super) fn leave(&self, state: &mut State, group: &str, thing: &str, cause: RemovalCause) {
        let membership = state.unlink(group, thing);
        self.announce(RegistryEvent::ThingRemovedFromThingGroup { membership, cause });
    }

    /// CreateThingGroup. Idempotent when the same properties are given;
    /// otherwise `AlreadyExists`. The parent must exist.
    pub fn create_thing_group(
        &self,
        name: &str,
        parent: Option<&str>,
        description: Option<&str>,
        attributes: BTreeMap<String, String>,
    ) -> Result<ThingGroup, RegistryError> {
        check_resource_name(name, "thingGroupName")?;
        check_attributes(&attributes)?;
        let mut state = self.write();
        if let Some(p) = parent
            && !state.groups.contains_key(p)
        {
            return Err(group_not_found(p));
        }
        if let Some(existing) = state.groups.get(name) {
            if existing.parent_group_name.as_deref() == parent
                && existing.description.as_deref() == description
                && existing.attributes == attributes
            {
                return Ok(existing.clone());
            }
            return Err(RegistryError::AlreadyExists {
                message: format!("Thing Group {name} already exists with different properties"),
                resource_id: existing.id.clone(),
                resource_arn: existing.arn.clone(),
            });
        }
        let group = ThingGroup {
            name: name.to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            arn: self.arn(&format!("thinggroup/{name}")),
            description: description.map(str::to_string),
            attributes,
            parent_group_name: parent.map(str::to_string),
            version: 1,
            creation_date: self.clock.now_secs(),
        };
        self.persist(&[put(K_GROUP, name, &group)])?;
        state.groups.insert(name.to_string(), group.clone());
        Ok(group)
    }

    /// DescribeThingGroup.
    pub fn describe_thing_group(&self, name: &str) -> Result<ThingGroup, RegistryError> {
        self.read().groups.get(name).cloned().ok_or_else(|| group_not_found(name))
    }

    /// The ancestors of a group, root first (DescribeThingGroup's `rootToParentThingGroups`).
    pub fn thing_group_ancestors(&self, name: &str) -> Result<Vec<ThingGroup>, RegistryError> {
        let state = self.read();
        if !state.groups.contains_key(name) {
            return Err(group_not_found(name));
        }
        Ok(state.ancestors(name).into_iter().cloned().collect())
    }

    /// DeleteThingGroup. Deleting a missing group succeeds, as on AWS. A group
    /// with child groups is refused; the group's things leave it (one event
    /// each) and the policies attached to it are detached.
    pub fn delete_thing_group(&self, name: &str, expected_version: Option<i64>) -> Result<(), RegistryError> {
        let mut state = self.write();
        let Some(group) = state.groups.get(name).cloned() else {
            return Ok(());
        };
        if let Some(v) = expected_version
            && v != group.version
        {
            return Err(RegistryError::VersionConflict(format!(
                "The version for thing group {name} does not match the expected version."
            )));
        }
        if state.groups.values().any(|g| g.parent_group_name.as_deref() == Some(name)) {
            return Err(RegistryError::InvalidRequest(format!(
                "Cannot delete thing group : {name} when there are still child groups attached to it"
            )));
        }
        let things: Vec<String> = state.group_members.get(name).into_iter().flatten().cloned().collect();
        let policies: Vec<String> = state.policy_targets.get(&group.arn).into_iter().flatten().cloned().collect();
        let mut ops = vec![del(K_GROUP, name)];
        ops.extend(things.iter().map(|t| del_pair(K_GROUP_MEMBER, name, t)));
        ops.extend(policies.iter().map(|p| del_pair(K_POLICY_TARGET, &group.arn, p)));
        self.persist(&ops)?;
        // The events name the ancestors: the members leave before the group is gone.
        for thing in &things {
            self.leave(&mut state, name, thing, RemovalCause::GroupDeleted);
        }
        state.groups.remove(name);
        state.policy_targets.remove(&group.arn);
        Ok(())
    }

    /// ListThingGroups: a page of groups, by name.
    pub fn list_thing_groups(
        &self,
        query: &ListThingGroupsQuery,
    ) -> Result<(Vec<ThingGroup>, Option<String>), RegistryError> {
        let state = self.read();
        let recursive = query.recursive.unwrap_or(true);
        let names: BTreeSet<&str> = match query.parent_group.as_deref() {
            Some(parent) if !state.groups.contains_key(parent) => return Err(group_not_found(parent)),
            Some(parent) if recursive => state.descendants(parent),
            parent => state
                .groups
                .values()
                .filter(|g| recursive || g.parent_group_name.as_deref() == parent)
                .map(|g| g.name.as_str())
                .collect(),
        };
        let prefix = query.name_prefix_filter.as_deref().unwrap_or("");
        let groups = names.into_iter().filter(|n| n.starts_with(prefix)).filter_map(|n| state.groups.get(n));
        paginate(groups, &query.page, |g| g.name.clone())
    }

    /// AddThingToThingGroup. Adding a member again changes nothing; a thing
    /// already in [`MAX_GROUPS_PER_THING`] groups is refused.
    pub fn add_thing_to_thing_group(&self, group: &str, thing: &str) -> Result<(), RegistryError> {
        let mut state = self.write();
        if !state.things.contains_key(thing) {
            return Err(thing_not_found(thing));
        }
        if !state.groups.contains_key(group) {
            return Err(group_not_found(group));
        }
        if state.is_member(group, thing) {
            return Ok(());
        }
        if state.thing_groups.get(thing).is_some_and(|groups| groups.len() >= MAX_GROUPS_PER_THING) {
            return Err(RegistryError::InvalidRequest(format!(
                "Thing {thing} cannot be added to thing group {group}: a thing can be a member of at most \
                 {MAX_GROUPS_PER_THING} thing groups"
            )));
        }
        self.persist(&[put_pair(K_GROUP_MEMBER, group, thing)])?;
        state.link(group, thing);
        // Under the write lock, like `leave`.
        self.announce(RegistryEvent::ThingAddedToThingGroup { membership: state.membership(group, thing) });
        Ok(())
    }

    /// RemoveThingFromThingGroup. Removing a thing that is not a member
    /// succeeds and changes nothing; an unknown thing or group is `NotFound`.
    pub fn remove_thing_from_thing_group(&self, group: &str, thing: &str) -> Result<(), RegistryError> {
        let mut state = self.write();
        if !state.things.contains_key(thing) {
            return Err(thing_not_found(thing));
        }
        if !state.groups.contains_key(group) {
            return Err(group_not_found(group));
        }
        if !state.is_member(group, thing) {
            return Ok(());
        }
        self.persist(&[del_pair(K_GROUP_MEMBER, group, thing)])?;
        self.leave(&mut state, group, thing, RemovalCause::Removed);
        Ok(())
    }

    /// The things in a group, by name; with `recursive`, also those in its
    /// descendants (each thing once).
    pub fn things_in_thing_group(&self, group: &str, recursive: bool) -> Result<BTreeSet<String>, RegistryError> {
        let state = self.read();
        if !state.groups.contains_key(group) {
            return Err(group_not_found(group));
        }
        let mut groups = if recursive { state.descendants(group) } else { BTreeSet::new() };
        groups.insert(group);
        Ok(groups.into_iter().filter_map(|g| state.group_members.get(g)).flatten().cloned().collect())
    }

    /// ListThingsInThingGroup: a page of [`Registry::things_in_thing_group`].
    pub fn list_things_in_thing_group(
        &self,
        group: &str,
        recursive: bool,
        page: &PageRequest,
    ) -> Result<(Vec<String>, Option<String>), RegistryError> {
        paginate(self.things_in_thing_group(group, recursive)?.iter(), page, String::clone)
    }

    /// The groups a thing belongs to, by name: those it is a direct member of
    /// and their ancestors.
    pub fn thing_groups_for_thing(&self, thing: &str) -> Result<Vec<ThingGroup>, RegistryError> {
        let state = self.read();
        if !state.things.contains_key(thing) {
            return Err(thing_not_found(thing));
        }
        Ok(state.groups_of_thing(thing).into_iter().cloned().collect())
    }

    /// ListThingGroupsForThing: a page of [`Registry::thing_groups_for_thing`].
    pub fn list_thing_groups_for_thing(
        &self,
        thing: &str,
        page: &PageRequest,
    ) -> Result<(Vec<ThingGroup>, Option<String>), RegistryError> {
        paginate(self.thing_groups_for_thing(thing)?.iter(), page, |g| g.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast::error::TryRecvError;

    use super::super::tests::{registry, reopen};
    use super::*;

    /// `fleet` → `site` → `line`, and a second root `lab`.
    fn hierarchy(r: &Registry) {
        r.create_thing_group("fleet", None, None, BTreeMap::new()).unwrap();
        r.create_thing_group("site", Some("fleet"), None, BTreeMap::new()).unwrap();
        r.create_thing_group("line", Some("site"), None, BTreeMap::new()).unwrap();
        r.create_thing_group("lab", None, None, BTreeMap::new()).unwrap();
    }

    fn things(r: &Registry, names: &[&str]) {
        for name in names {
            r.create_thing(name, None, BTreeMap::new()).unwrap();
        }
    }

    fn names(groups: &[ThingGroup]) -> Vec<&str> {
        groups.iter().map(|g| g.name.as_str()).collect()
    }

    fn page(next_token: Option<String>, max_results: usize) -> PageRequest {
        PageRequest { next_token, max_results: Some(max_results) }
    }

    fn added(thing: &str, group: &str, ancestors: &[&str]) -> RegistryEvent {
        RegistryEvent::ThingAddedToThingGroup { membership: membership(thing, group, ancestors) }
    }

    fn removed(thing: &str, group: &str, ancestors: &[&str], cause: RemovalCause) -> RegistryEvent {
        RegistryEvent::ThingRemovedFromThingGroup { membership: membership(thing, group, ancestors), cause }
    }

    fn membership(thing: &str, group: &str, ancestors: &[&str]) -> Membership {
        Membership {
            thing_name: thing.into(),
            thing_group_name: group.into(),
            ancestors: ancestors.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn drain(events: &mut tokio::sync::broadcast::Receiver<RegistryEvent>) -> Vec<RegistryEvent> {
        let mut out = Vec::new();
        loop {
            match events.try_recv() {
                Ok(e) => out.push(e),
                Err(TryRecvError::Empty) => return out,
                Err(e) => panic!("event channel: {e}"),
            }
        }
    }

    #[test]
    fn recursive_listing_reaches_things_of_every_level_below() {
        let (r, _d) = registry();
        hierarchy(&r);
        things(&r, &["a", "b", "c", "d", "x"]);
        r.add_thing_to_thing_group("fleet", "a").unwrap();
        r.add_thing_to_thing_group("site", "b").unwrap();
        r.add_thing_to_thing_group("line", "c").unwrap();
        r.add_thing_to_thing_group("line", "d").unwrap();
        // In two levels of the same hierarchy: listed once.
        r.add_thing_to_thing_group("site", "d").unwrap();
        r.add_thing_to_thing_group("lab", "x").unwrap();

        let list = |g, recursive| r.things_in_thing_group(g, recursive).unwrap().into_iter().collect::<Vec<_>>();
        assert_eq!(list("fleet", false), ["a"]);
        assert_eq!(list("fleet", true), ["a", "b", "c", "d"]);
        assert_eq!(list("site", true), ["b", "c", "d"]);
        assert_eq!(list("line", true), ["c", "d"]);
        assert!(matches!(r.things_in_thing_group("nope", true), Err(RegistryError::NotFound(_))));
    }

    #[test]
    fn thing_groups_list_by_parent_prefix_and_depth() {
        let (r, _d) = registry();
        hierarchy(&r);
        let list = |parent: Option<&str>, prefix: Option<&str>, recursive: Option<bool>| {
            let query = ListThingGroupsQuery {
                parent_group: parent.map(Into::into),
                name_prefix_filter: prefix.map(Into::into),
                recursive,
                page: PageRequest::default(),
            };
            let (groups, token) = r.list_thing_groups(&query).unwrap();
            assert_eq!(token, None);
            groups.into_iter().map(|g| g.name).collect::<Vec<_>>()
        };
        assert_eq!(list(None, None, None), ["fleet", "lab", "line", "site"]);
        assert_eq!(list(None, None, Some(false)), ["fleet", "lab"]);
        assert_eq!(list(Some("fleet"), None, None), ["line", "site"]);
        assert_eq!(list(Some("fleet"), None, Some(false)), ["site"]);
        assert_eq!(list(None, Some("l"), None), ["lab", "line"]);
        assert_eq!(list(Some("line"), None, None), Vec::<String>::new());
        let unknown = ListThingGroupsQuery { parent_group: Some("nope".into()), ..Default::default() };
        assert!(matches!(r.list_thing_groups(&unknown), Err(RegistryError::NotFound(_))));
    }

    #[test]
    fn listings_page_through_more_members_than_one_page() {
        let (r, _d) = registry();
        hierarchy(&r);
        let all: Vec<String> = (0..7).map(|i| format!("pump-{i:02}")).collect();
        for (i, name) in all.iter().enumerate() {
            r.create_thing(name, None, BTreeMap::new()).unwrap();
            // Spread over two levels; the recursive listing merges them in name order.
            r.add_thing_to_thing_group(if i % 2 == 0 { "site" } else { "line" }, name).unwrap();
        }
        let mut seen = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let (things, next) = r.list_things_in_thing_group("fleet", true, &page(token, 3)).unwrap();
            assert!(things.len() <= 3);
            seen.extend(things);
            pages += 1;
            token = next;
            if token.is_none() {
                break;
            }
        }
        assert_eq!((seen, pages), (all, 3));
        assert!(r.list_things_in_thing_group("fleet", true, &page(None, 0)).is_err());
        assert!(r.list_things_in_thing_group("fleet", true, &page(None, 251)).is_err());

        let (first, token) = r.list_thing_groups_for_thing("pump-01", &page(None, 2)).unwrap();
        assert_eq!(names(&first), ["fleet", "line"]);
        let (rest, token) = r.list_thing_groups_for_thing("pump-01", &page(token, 2)).unwrap();
        assert_eq!((names(&rest), token), (vec!["site"], None));
    }

    #[test]
    fn groups_for_a_thing_include_the_ancestors_of_its_groups() {
        let (r, _d) = registry();
        hierarchy(&r);
        things(&r, &["t", "u"]);
        r.add_thing_to_thing_group("line", "t").unwrap();
        r.add_thing_to_thing_group("lab", "t").unwrap();
        assert_eq!(names(&r.thing_groups_for_thing("t").unwrap()), ["fleet", "lab", "line", "site"]);
        assert!(r.thing_groups_for_thing("u").unwrap().is_empty());
        assert!(matches!(r.thing_groups_for_thing("nope"), Err(RegistryError::NotFound(_))));
        assert_eq!(names(&r.thing_group_ancestors("line").unwrap()), ["fleet", "site"]);
    }

    #[test]
    fn membership_changes_are_announced_once_and_no_ops_are_silent() {
        let (r, _d) = registry();
        hierarchy(&r);
        things(&r, &["t"]);
        let mut events = r.events();

        r.add_thing_to_thing_group("line", "t").unwrap();
        r.add_thing_to_thing_group("line", "t").unwrap();
        assert_eq!(drain(&mut events), [added("t", "line", &["fleet", "site"])]);

        r.remove_thing_from_thing_group("line", "t").unwrap();
        r.remove_thing_from_thing_group("line", "t").unwrap();
        r.remove_thing_from_thing_group("lab", "t").unwrap();
        assert_eq!(drain(&mut events), [removed("t", "line", &["fleet", "site"], RemovalCause::Removed)]);
        assert!(r.things_in_thing_group("line", false).unwrap().is_empty());

        // Refused requests change nothing and announce nothing.
        assert!(matches!(r.remove_thing_from_thing_group("nope", "t"), Err(RegistryError::NotFound(_))));
        assert!(matches!(r.remove_thing_from_thing_group("line", "nope"), Err(RegistryError::NotFound(_))));
        assert!(matches!(r.add_thing_to_thing_group("nope", "t"), Err(RegistryError::NotFound(_))));
        r.delete_thing_group("nope", None).unwrap();
        assert_eq!(drain(&mut events), []);
    }

    #[test]
    fn deleting_a_thing_or_a_group_removes_memberships_and_announces_each() {
        let (r, _d) = registry();
        hierarchy(&r);
        things(&r, &["t", "u"]);
        r.add_thing_to_thing_group("line", "t").unwrap();
        r.add_thing_to_thing_group("lab", "t").unwrap();
        r.add_thing_to_thing_group("line", "u").unwrap();
        r.create_policy("p", super::super::tests::THING_POLICY).unwrap();
        let line = r.describe_thing_group("line").unwrap();
        r.attach_policy("p", &line.arn).unwrap();
        let mut events = r.events();

        r.delete_thing("t", None).unwrap();
        assert_eq!(
            drain(&mut events),
            [
                removed("t", "lab", &[], RemovalCause::ThingDeleted),
                removed("t", "line", &["fleet", "site"], RemovalCause::ThingDeleted)
            ]
        );
        assert_eq!(r.things_in_thing_group("fleet", true).unwrap(), BTreeSet::from(["u".to_string()]));

        // A group with a child group stays; a leaf goes, with its members and policy attachments.
        let err = r.delete_thing_group("site", None).unwrap_err();
        assert!(matches!(&err, RegistryError::InvalidRequest(m) if m.contains("child groups")), "{err:?}");
        assert!(matches!(r.delete_thing_group("line", Some(7)), Err(RegistryError::VersionConflict(_))));
        assert_eq!(drain(&mut events), []);
        r.delete_thing_group("line", Some(1)).unwrap();
        assert_eq!(drain(&mut events), [removed("u", "line", &["fleet", "site"], RemovalCause::GroupDeleted)]);
        assert!(r.thing_groups_for_thing("u").unwrap().is_empty());
        assert!(matches!(r.describe_thing_group("line"), Err(RegistryError::NotFound(_))));
        r.delete_policy("p").expect("the deleted group's policy attachment went with it");

        // Now a leaf, `site` can go; a recreated `line` starts empty.
        r.delete_thing_group("site", None).unwrap();
        r.create_thing_group("line", Some("fleet"), None, BTreeMap::new()).unwrap();
        assert!(r.things_in_thing_group("line", true).unwrap().is_empty());
    }

    #[test]
    fn a_thing_joins_at_most_ten_groups() {
        let (r, _d) = registry();
        things(&r, &["t"]);
        for i in 0..=MAX_GROUPS_PER_THING {
            r.create_thing_group(&format!("g{i:02}"), None, None, BTreeMap::new()).unwrap();
        }
        for i in 0..MAX_GROUPS_PER_THING {
            r.add_thing_to_thing_group(&format!("g{i:02}"), "t").unwrap();
        }
        // Adding to a group it is already in is still fine.
        r.add_thing_to_thing_group("g00", "t").unwrap();
        let err = r.add_thing_to_thing_group("g10", "t").unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
        r.remove_thing_from_thing_group("g00", "t").unwrap();
        r.add_thing_to_thing_group("g10", "t").unwrap();
    }

    #[test]
    fn memberships_survive_a_restart() {
        let (r, dir) = registry();
        hierarchy(&r);
        things(&r, &["t", "u"]);
        r.add_thing_to_thing_group("line", "t").unwrap();
        r.add_thing_to_thing_group("lab", "u").unwrap();
        r.add_thing_to_thing_group("lab", "t").unwrap();
        r.remove_thing_from_thing_group("lab", "t").unwrap();
        drop(r);
        let r = reopen(&dir);
        assert_eq!(names(&r.thing_groups_for_thing("t").unwrap()), ["fleet", "line", "site"]);
        assert_eq!(r.things_in_thing_group("lab", false).unwrap(), BTreeSet::from(["u".to_string()]));
    }

    #[test]
    fn members_listed_in_an_old_group_record_are_moved_to_membership_records() {
        let (r, dir) = registry();
        hierarchy(&r);
        things(&r, &["t"]);
        // A record as written before memberships had their own kind; "gone" no longer exists.
        let mut old = serde_json::to_value(r.describe_thing_group("site").unwrap()).unwrap();
        old["things"] = serde_json::json!(["t", "gone"]);
        r.store.put(K_GROUP, "site", &old.to_string()).unwrap();
        drop(r);
        let r = reopen(&dir);
        assert_eq!(r.things_in_thing_group("site", false).unwrap(), BTreeSet::from(["t".to_string()]));
        let stored: serde_json::Value = serde_json::from_str(&r.store.get(K_GROUP, "site").unwrap().unwrap()).unwrap();
        assert!(stored.get("things").is_none(), "rewritten without the list: {stored}");
        drop(r);
        let r = reopen(&dir);
        assert_eq!(r.things_in_thing_group("site", false).unwrap(), BTreeSet::from(["t".to_string()]));
    }
}
