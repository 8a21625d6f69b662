"""boto3 raises the typed exception AWS documents for each failure, which
needs the right status code, `x-amzn-ErrorType` and error body from the
local cloud (restJson1 error serialization)."""

import json

import pytest

from support import unique_name


def _error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_describe_thing_on_a_missing_thing_raises_resource_not_found(iot):
    with pytest.raises(iot.exceptions.ResourceNotFoundException) as excinfo:
        iot.describe_thing(thingName=unique_name("missing"))
    assert _error_code(excinfo) == "ResourceNotFoundException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.parametrize(
    "document",
    [
        "{not json",
        json.dumps({"Version": "2012-10-17"}),
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Action": "iot:Connect", "Resource": "*"}]}),
    ],
    ids=["not-json", "no-statement", "bad-effect"],
)
def test_create_policy_with_a_malformed_document_raises_malformed_policy(iot, document):
    policy_name = unique_name("malformed")
    with pytest.raises(iot.exceptions.MalformedPolicyException) as excinfo:
        iot.create_policy(policyName=policy_name, policyDocument=document)
    assert _error_code(excinfo) == "MalformedPolicyException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Nothing was stored.
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.get_policy(policyName=policy_name)


def test_delete_certificate_while_active_raises_certificate_state(iot):
    cert_id = iot.create_keys_and_certificate(setAsActive=True)["certificateId"]

    with pytest.raises(iot.exceptions.CertificateStateException) as excinfo:
        iot.delete_certificate(certificateId=cert_id)
    assert _error_code(excinfo) == "CertificateStateException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 406
    assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] == "ACTIVE"

    # Once INACTIVE (and attached to nothing) it can be deleted.
    iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
    iot.delete_certificate(certificateId=cert_id)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_certificate(certificateId=cert_id)
