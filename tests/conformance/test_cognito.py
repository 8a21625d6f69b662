"""boto3 `cognito-idp` against the local cloud's Amazon Cognito user pools (AWS JSON 1.1,
`AWSCognitoIdentityProviderService.*`): a pool, an app client and a user made by the
administrator, sign-in with USER_PASSWORD_AUTH (unsigned, as on AWS), the IdToken checked with
PyJWT against the pool's JWKS as a web application checks it (signature, issuer, audience,
expiry), the NEW_PASSWORD_REQUIRED challenge of a temporary password, refresh, and the errors
botocore raises for wrong passwords, broken password policies and malformed requests."""

from __future__ import annotations

import json
import time
import urllib.request

import jwt
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from support import boto_client, fetch_url, unique_name

PASSWORD = "Correct-horse-7"


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def cognito(endpoints):
    return boto_client(endpoints, "cognito-idp")


@pytest.fixture(scope="module")
def anonymous(endpoints):
    """A client that does not sign, as a browser or a mobile app calls InitiateAuth."""
    import boto3

    return boto3.session.Session(region_name=endpoints.region).client(
        "cognito-idp",
        endpoint_url=endpoints.http,
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture(scope="module")
def pool(cognito):
    """A pool, a client allowing password sign-in and refresh, and a user with a permanent password."""
    pool_id = cognito.create_user_pool(PoolName=unique_name("pool"))["UserPool"]["Id"]
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="web",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    cognito.admin_create_user(
        UserPoolId=pool_id,
        Username="auditor",
        MessageAction="SUPPRESS",
        UserAttributes=[{"Name": "email", "Value": "auditor@example.com"}],
    )
    cognito.admin_set_user_password(UserPoolId=pool_id, Username="auditor", Password=PASSWORD, Permanent=True)
    yield pool_id, client_id
    cognito.delete_user_pool(UserPoolId=pool_id)


def _jwks_client(endpoints, pool_id) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(f"{endpoints.http}/{pool_id}/.well-known/jwks.json", cache_keys=False)


def _verify(endpoints, pool_id, client_id, token, **options):
    """What a web application does with an IdToken (the Cognito Developer Guide's
    "Verifying a JSON web token"): key from the JWKS by `kid`, RS256, `iss`, `aud`, `exp`."""
    key = _jwks_client(endpoints, pool_id).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=client_id,
        issuer=f"{endpoints.http}/{pool_id}",
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        **options,
    )
    assert claims["token_use"] == "id"
    return claims


def test_pool_client_and_user_are_described_and_listed(cognito, pool, endpoints):
    pool_id, client_id = pool
    described = cognito.describe_user_pool(UserPoolId=pool_id)["UserPool"]
    assert described["Arn"] == f"arn:aws:cognito-idp:{endpoints.region}:{endpoints.account_id}:userpool/{pool_id}"
    assert described["Policies"]["PasswordPolicy"]["MinimumLength"] == 8
    assert pool_id.startswith(f"{endpoints.region}_")
    listed = [p["Id"] for page in cognito.get_paginator("list_user_pools").paginate(MaxResults=60) for p in page["UserPools"]]
    assert pool_id in listed
    client = cognito.describe_user_pool_client(UserPoolId=pool_id, ClientId=client_id)["UserPoolClient"]
    assert set(client["ExplicitAuthFlows"]) == {"ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}
    assert "ClientSecret" not in client
    clients = cognito.list_user_pool_clients(UserPoolId=pool_id)["UserPoolClients"]
    assert [c["ClientId"] for c in clients] == [client_id]
    user = cognito.admin_get_user(UserPoolId=pool_id, Username="auditor")
    assert user["UserStatus"] == "CONFIRMED" and user["Enabled"] is True
    attributes = {a["Name"]: a["Value"] for a in user["UserAttributes"]}
    assert attributes["email"] == "auditor@example.com" and len(attributes["sub"]) == 36
    users = cognito.list_users(UserPoolId=pool_id)["Users"]
    assert [u["Username"] for u in users] == ["auditor"]


def test_sign_in_returns_tokens_that_verify_against_the_jwks(anonymous, pool, endpoints):
    pool_id, client_id = pool
    answer = anonymous.initiate_auth(
        AuthFlow="USER_PASSWORD_AUTH",
        ClientId=client_id,
        AuthParameters={"USERNAME": "auditor", "PASSWORD": PASSWORD},
    )
    result = answer["AuthenticationResult"]
    assert result["ExpiresIn"] == 3600 and result["TokenType"] == "Bearer" and result["RefreshToken"]
    claims = _verify(endpoints, pool_id, client_id, result["IdToken"])
    assert claims["cognito:username"] == "auditor" and claims["email"] == "auditor@example.com"
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(result["IdToken"])["alg"] == "RS256"
    access = jwt.decode(result["AccessToken"], options={"verify_signature": False})
    assert access["token_use"] == "access" and access["client_id"] == client_id and access["username"] == "auditor"
    assert access["sub"] == claims["sub"]

    refreshed = anonymous.initiate_auth(
        AuthFlow="REFRESH_TOKEN_AUTH", ClientId=client_id, AuthParameters={"REFRESH_TOKEN": result["RefreshToken"]}
    )["AuthenticationResult"]
    assert _verify(endpoints, pool_id, client_id, refreshed["IdToken"])["sub"] == claims["sub"]
    assert "RefreshToken" not in refreshed


def test_wrong_password_and_unknown_user_are_not_authorized_alike(anonymous, pool):
    _, client_id = pool
    codes = []
    for username, password in [("auditor", "Wrong-horse-7"), ("nobody", PASSWORD)]:
        with pytest.raises(ClientError) as excinfo:
            anonymous.initiate_auth(
                AuthFlow="USER_PASSWORD_AUTH",
                ClientId=client_id,
                AuthParameters={"USERNAME": username, "PASSWORD": password},
            )
        codes.append((_error(excinfo), excinfo.value.response["Error"]["Message"]))
    assert codes == [(("NotAuthorizedException", 400), "Incorrect username or password.")] * 2


def test_forged_and_expired_tokens_are_rejected_by_the_verifier(anonymous, pool, endpoints):
    pool_id, client_id = pool
    token = anonymous.initiate_auth(
        AuthFlow="USER_PASSWORD_AUTH", ClientId=client_id, AuthParameters={"USERNAME": "auditor", "PASSWORD": PASSWORD}
    )["AuthenticationResult"]["IdToken"]
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged_claims = dict(claims, **{"cognito:username": "admin"})
    forged_payload = jwt.utils.base64url_encode(json.dumps(forged_claims).encode()).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(endpoints, pool_id, client_id, f"{header}.{forged_payload}.{signature}")
    with pytest.raises(jwt.InvalidAudienceError):
        _verify(endpoints, pool_id, "another-client", token)
    # A token is good for an hour: checked as if that hour had passed.
    with pytest.raises(jwt.ExpiredSignatureError):
        key = _jwks_client(endpoints, pool_id).get_signing_key_from_jwt(token)
        jwt.decode(
            token, key.key, algorithms=["RS256"], audience=client_id, leeway=-3601, options={"verify_iat": False}
        )
    assert claims["exp"] > time.time()


def test_a_temporary_password_must_be_changed_through_the_challenge(cognito, anonymous, pool, endpoints):
    pool_id, client_id = pool
    username = unique_name("temp")
    created = cognito.admin_create_user(
        UserPoolId=pool_id, Username=username, TemporaryPassword="Temporary-pw-1", MessageAction="SUPPRESS"
    )["User"]
    assert created["UserStatus"] == "FORCE_CHANGE_PASSWORD"
    challenge = anonymous.initiate_auth(
        AuthFlow="USER_PASSWORD_AUTH",
        ClientId=client_id,
        AuthParameters={"USERNAME": username, "PASSWORD": "Temporary-pw-1"},
    )
    assert challenge["ChallengeName"] == "NEW_PASSWORD_REQUIRED" and challenge["Session"]
    assert "AuthenticationResult" not in challenge
    with pytest.raises(ClientError) as excinfo:
        anonymous.respond_to_auth_challenge(
            ClientId=client_id,
            ChallengeName="NEW_PASSWORD_REQUIRED",
            Session=challenge["Session"],
            ChallengeResponses={"USERNAME": username, "NEW_PASSWORD": "short"},
        )
    assert _error(excinfo) == ("InvalidPasswordException", 400)
    done = anonymous.respond_to_auth_challenge(
        ClientId=client_id,
        ChallengeName="NEW_PASSWORD_REQUIRED",
        Session=challenge["Session"],
        ChallengeResponses={"USERNAME": username, "NEW_PASSWORD": "Chosen-password-2"},
    )
    assert _verify(endpoints, pool_id, client_id, done["AuthenticationResult"]["IdToken"])["cognito:username"] == username
    assert cognito.admin_get_user(UserPoolId=pool_id, Username=username)["UserStatus"] == "CONFIRMED"
    cognito.admin_delete_user(UserPoolId=pool_id, Username=username)
    with pytest.raises(ClientError) as excinfo:
        cognito.admin_get_user(UserPoolId=pool_id, Username=username)
    assert _error(excinfo) == ("UserNotFoundException", 400)


def test_policy_flows_and_secrets_are_enforced(cognito, anonymous, pool):
    pool_id, _ = pool
    with pytest.raises(ClientError) as excinfo:
        cognito.admin_set_user_password(UserPoolId=pool_id, Username="auditor", Password="nouppercase1!", Permanent=True)
    assert _error(excinfo) == ("InvalidPasswordException", 400)
    assert "uppercase" in excinfo.value.response["Error"]["Message"]
    srp_only = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName="srp-only", ExplicitAuthFlows=["ALLOW_USER_SRP_AUTH"]
    )["UserPoolClient"]["ClientId"]
    with pytest.raises(ClientError) as excinfo:
        anonymous.initiate_auth(
            AuthFlow="USER_PASSWORD_AUTH", ClientId=srp_only, AuthParameters={"USERNAME": "auditor", "PASSWORD": PASSWORD}
        )
    assert _error(excinfo) == ("InvalidParameterException", 400)
    with pytest.raises(ClientError) as excinfo:
        cognito.create_user_pool_client(UserPoolId=pool_id, ClientName="secret", GenerateSecret=True)
    assert _error(excinfo) == ("InvalidParameterException", 400)
    with pytest.raises(ClientError) as excinfo:
        cognito.admin_create_user(UserPoolId=pool_id, Username="auditor")
    assert _error(excinfo) == ("UsernameExistsException", 400)
    with pytest.raises(ClientError) as excinfo:
        cognito.describe_user_pool(UserPoolId=f"{pool_id}x")
    assert _error(excinfo) == ("ResourceNotFoundException", 400)
    with pytest.raises(ClientError) as excinfo:
        anonymous.describe_user_pool(UserPoolId=pool_id)
    assert _error(excinfo)[0] == "MissingAuthenticationTokenException"


def test_a_wrong_secret_is_refused(endpoints, pool):
    pool_id, _ = pool
    wrong = boto_client(endpoints, "cognito-idp", secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as excinfo:
        wrong.describe_user_pool(UserPoolId=pool_id)
    assert _error(excinfo) == ("InvalidSignatureException", 400)


def _post(endpoints, target: str | None, body: bytes) -> tuple[int, dict]:
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target:
        headers["X-Amz-Target"] = f"AWSCognitoIdentityProviderService.{target}"
    request = urllib.request.Request(endpoints.http + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_malformed_requests_get_the_aws_error_shape(endpoints, pool):
    _, client_id = pool
    status, body = _post(endpoints, "InitiateAuth", b"{not json")
    assert (status, body["__type"]) == (400, "SerializationException")
    status, body = _post(endpoints, "SignUpWithoutAsking", b"{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    status, body = _post(endpoints, "InitiateAuth", json.dumps({"AuthFlow": "USER_PASSWORD_AUTH"}).encode())
    assert (status, body["__type"]) == (400, "InvalidParameterException") and "clientId" in body["message"]
    missing_password = {"AuthFlow": "USER_PASSWORD_AUTH", "ClientId": client_id, "AuthParameters": {"USERNAME": "auditor"}}
    status, body = _post(endpoints, "InitiateAuth", json.dumps(missing_password).encode())
    assert (status, body["__type"]) == (400, "InvalidParameterException") and "PASSWORD" in body["message"]
    unknown_client = {"AuthFlow": "USER_PASSWORD_AUTH", "ClientId": "nope", "AuthParameters": {}}
    status, body = _post(endpoints, "InitiateAuth", json.dumps(unknown_client).encode())
    assert (status, body["__type"]) == (400, "ResourceNotFoundException")
    status, _ = fetch_url(f"{endpoints.http}/us-east-1_missing/.well-known/jwks.json")
    assert status == 404
