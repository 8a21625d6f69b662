"""Thing groups with boto3's `iot` client, as the AWS IoT Developer Guide's
"Static thing groups" describes them: a hierarchy, things added and removed by
name and by ARN, recursive listings read with boto3's own paginators, and the
exceptions AWS documents (ResourceNotFoundException for an unknown group,
InvalidRequestException for a group that still has child groups,
VersionConflictException for a stale expectedVersion)."""

import pytest

from support import unique_name


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def hierarchy(iot):
    """Three levels: root → child → grandchild, named with one unique prefix."""
    prefix = unique_name("tg")
    root, child, grandchild = f"{prefix}-root", f"{prefix}-child", f"{prefix}-grandchild"
    iot.create_thing_group(thingGroupName=root)
    iot.create_thing_group(thingGroupName=child, parentGroupName=root)
    iot.create_thing_group(thingGroupName=grandchild, parentGroupName=child)
    return prefix, root, child, grandchild


def _pages(iot, operation: str, page_size: int, **kwargs) -> list[dict]:
    paginator = iot.get_paginator(operation)
    return list(paginator.paginate(PaginationConfig={"PageSize": page_size}, **kwargs))


def test_things_are_listed_recursively_and_in_pages_with_boto3_paginators(iot, endpoints, hierarchy):
    prefix, root, child, grandchild = hierarchy
    things = [f"{prefix}-pump-{i}" for i in range(7)]
    for i, thing in enumerate(things):
        iot.create_thing(thingName=thing)
        if i % 2 == 0:
            iot.add_thing_to_thing_group(thingGroupName=child, thingName=thing)
        else:
            iot.add_thing_to_thing_group(
                thingGroupArn=endpoints.arn(f"thinggroup/{grandchild}"), thingArn=endpoints.arn(f"thing/{thing}")
            )

    pages = _pages(iot, "list_things_in_thing_group", 3, thingGroupName=root, recursive=True)
    assert [len(p["things"]) for p in pages] == [3, 3, 1]
    assert [t for p in pages for t in p["things"]] == sorted(things)
    assert "nextToken" not in pages[-1]
    assert iot.list_things_in_thing_group(thingGroupName=root)["things"] == []
    direct = _pages(iot, "list_things_in_thing_group", 2, thingGroupName=grandchild)
    assert [t for p in direct for t in p["things"]] == things[1::2]

    groups = _pages(iot, "list_thing_groups_for_thing", 1, thingName=things[1])
    assert len(groups) == 3
    listed = [g for p in groups for g in p["thingGroups"]]
    assert sorted(g["groupName"] for g in listed) == sorted([root, child, grandchild])
    assert all(g["groupArn"] == endpoints.arn(f"thinggroup/{g['groupName']}") for g in listed)

    def group_names(**kwargs) -> list[str]:
        return [g["groupName"] for p in _pages(iot, "list_thing_groups", 1, **kwargs) for g in p["thingGroups"]]

    assert group_names(parentGroup=root) == sorted([child, grandchild])
    assert group_names(parentGroup=root, recursive=False) == [child]
    assert group_names(namePrefixFilter=prefix) == sorted([root, child, grandchild])


def test_a_thing_is_removed_by_name_or_arn_and_removing_a_non_member_succeeds(iot, endpoints, hierarchy):
    prefix, root, child, grandchild = hierarchy
    thing = f"{prefix}-thing"
    iot.create_thing(thingName=thing)
    iot.add_thing_to_thing_group(thingGroupName=grandchild, thingName=thing)
    iot.add_thing_to_thing_group(thingGroupName=root, thingName=thing)

    iot.remove_thing_from_thing_group(thingGroupName=grandchild, thingName=thing)
    assert iot.list_things_in_thing_group(thingGroupName=grandchild)["things"] == []
    iot.remove_thing_from_thing_group(
        thingGroupArn=endpoints.arn(f"thinggroup/{root}"), thingArn=endpoints.arn(f"thing/{thing}")
    )
    # Not a member any more: AWS answers 200 and nothing changes.
    iot.remove_thing_from_thing_group(thingGroupName=root, thingName=thing)
    assert iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"] == []
    assert iot.list_things_in_thing_group(thingGroupName=root, recursive=True)["things"] == []


def test_an_unknown_group_or_thing_raises_resource_not_found(iot, hierarchy):
    prefix, root, _, _ = hierarchy
    thing = f"{prefix}-thing"
    iot.create_thing(thingName=thing)
    missing = f"{prefix}-missing"
    calls = [
        lambda: iot.list_things_in_thing_group(thingGroupName=missing, recursive=True),
        lambda: iot.list_thing_groups(parentGroup=missing),
        lambda: iot.list_thing_groups_for_thing(thingName=missing),
        lambda: iot.add_thing_to_thing_group(thingGroupName=missing, thingName=thing),
        lambda: iot.remove_thing_from_thing_group(thingGroupName=missing, thingName=thing),
        lambda: iot.remove_thing_from_thing_group(thingGroupName=root, thingName=missing),
    ]
    for call in calls:
        with pytest.raises(iot.exceptions.ResourceNotFoundException) as excinfo:
            call()
        assert _error(excinfo) == ("ResourceNotFoundException", 404)


def test_delete_thing_group_refuses_a_parent_checks_the_version_and_frees_members(iot, hierarchy):
    prefix, root, child, grandchild = hierarchy
    thing = f"{prefix}-thing"
    iot.create_thing(thingName=thing)
    iot.add_thing_to_thing_group(thingGroupName=grandchild, thingName=thing)

    with pytest.raises(iot.exceptions.InvalidRequestException) as excinfo:
        iot.delete_thing_group(thingGroupName=child)
    assert _error(excinfo) == ("InvalidRequestException", 400)
    assert "child groups" in excinfo.value.response["Error"]["Message"]

    with pytest.raises(iot.exceptions.VersionConflictException) as excinfo:
        iot.delete_thing_group(thingGroupName=grandchild, expectedVersion=42)
    assert _error(excinfo) == ("VersionConflictException", 409)

    version = iot.describe_thing_group(thingGroupName=grandchild)["version"]
    iot.delete_thing_group(thingGroupName=grandchild, expectedVersion=version)
    assert iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"] == []
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_group(thingGroupName=grandchild)
    # Deleting a group that is not there succeeds, as on AWS.
    iot.delete_thing_group(thingGroupName=grandchild)
    iot.delete_thing_group(thingGroupName=child)
    iot.delete_thing_group(thingGroupName=root)


def test_deleting_a_thing_removes_it_from_its_groups(iot, hierarchy):
    prefix, root, child, _ = hierarchy
    thing = f"{prefix}-thing"
    iot.create_thing(thingName=thing)
    iot.add_thing_to_thing_group(thingGroupName=child, thingName=thing)
    iot.delete_thing(thingName=thing)
    assert iot.list_things_in_thing_group(thingGroupName=root, recursive=True)["things"] == []
