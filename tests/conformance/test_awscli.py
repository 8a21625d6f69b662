"""The AWS CLI v1 (`aws`, installed in the venv from requirements.txt) against the
local cloud, unchanged but for `--endpoint-url`: `aws s3` (mb, cp up and down with a
multipart upload, ls, presign with SigV2 and SigV4, rm), `aws s3api` (copy-object, delete-objects) and
`aws iot` thing groups. Each run is isolated from the machine's AWS setup: a
temporary config file, no credentials file, the administrator's key pair from
endpoints.json in the environment, loopback only."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import fetch_url, sample_bytes, tamper_signature, unique_name

MIB = 1024 * 1024
CLI_TIMEOUT_S = 120
# The CLI ships as the `aws` script beside the venv's python.
AWS = Path(sys.executable).parent / "aws"


class Cli:
    """Runs `aws --endpoint-url … ARGS` and keeps exit code, stdout and stderr."""

    def __init__(self, endpoint: str, env: dict[str, str]):
        self.endpoint = endpoint
        self.env = env

    def run(self, *args: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
        if not AWS.is_file():
            pytest.fail(f"{AWS} not found: run scripts/python-env.sh (awscli is in requirements.txt)", pytrace=False)
        command = [sys.executable, str(AWS), "--endpoint-url", self.endpoint, *args]
        result = subprocess.run(
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        if expect_ok:
            assert result.returncode == 0, f"aws {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "--output", "json").stdout)

    def with_config(self, path: Path) -> "Cli":
        """The same CLI reading another config file."""
        return Cli(self.endpoint, {**self.env, "AWS_CONFIG_FILE": str(path)})


@pytest.fixture
def aws(endpoints, tmp_path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "aws-config"
    # A small multipart threshold so a 20 MiB copy goes multipart (5 MiB is S3's smallest part).
    config.write_text(
        "[default]\n"
        f"region = {endpoints.region}\n"
        "output = json\n"
        "s3 =\n"
        "    addressing_style = path\n"
        "    multipart_threshold = 5MB\n"
        "    multipart_chunksize = 5MB\n"
        "    max_concurrent_requests = 2\n"
    )
    # `aws s3 presign` signs with SigV2 unless told otherwise (CLI v1); this one says SigV4.
    (tmp_path / "aws-config-sigv4").write_text(config.read_text() + "    signature_version = s3v4\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_ACCESS_KEY_ID": endpoints.access_key_id,
        "AWS_SECRET_ACCESS_KEY": endpoints.secret_access_key,
        "AWS_DEFAULT_REGION": endpoints.region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_PAGER": "",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    return Cli(endpoints.http, env)


def test_s3_mb_cp_ls_presign_rm(aws, s3, tmp_path):
    bucket = unique_name("cli-bucket")
    assert aws.run("s3", "mb", f"s3://{bucket}").stdout.strip() == f"make_bucket: {bucket}"

    small = tmp_path / "small.txt"
    small.write_bytes(b"small artifact\n")
    big = tmp_path / "big.bin"
    big_data = sample_bytes(20 * MIB + 7, 3)
    big.write_bytes(big_data)
    out = aws.run("s3", "cp", "--no-progress", str(small), f"s3://{bucket}/dir/small.txt").stdout
    assert out.startswith("upload: ") and out.strip().endswith(f"small.txt to s3://{bucket}/dir/small.txt"), out
    aws.run("s3", "cp", str(big), f"s3://{bucket}/big.bin")
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(big_data)
    assert head["ETag"].endswith('-5"'), f"20 MiB in 5 MiB parts is a 5-part upload: {head['ETag']}"

    down = tmp_path / "down"
    aws.run("s3", "cp", f"s3://{bucket}/big.bin", str(down / "big.bin"))
    aws.run("s3", "cp", f"s3://{bucket}/dir/small.txt", str(down / "small.txt"))
    assert (down / "big.bin").read_bytes() == big_data
    assert (down / "small.txt").read_bytes() == b"small artifact\n"

    listed = aws.run("s3", "ls", f"s3://{bucket}/").stdout.splitlines()
    assert any(line.split()[-1] == "big.bin" and line.split()[-2] == str(len(big_data)) for line in listed), listed
    assert any(line.split() == ["PRE", "dir/"] for line in listed), listed
    recursive = aws.run("s3", "ls", "--recursive", f"s3://{bucket}").stdout
    assert [line.split()[-1] for line in recursive.splitlines()] == ["big.bin", "dir/small.txt"]
    assert bucket in aws.run("s3", "ls").stdout.split()

    sigv4 = aws.with_config(tmp_path / "aws-config-sigv4")
    for cli, marker in [(aws, "&Signature="), (sigv4, "X-Amz-Signature=")]:
        url = cli.run("s3", "presign", f"s3://{bucket}/dir/small.txt", "--expires-in", "300").stdout.strip()
        assert url.startswith(f"{aws.endpoint}/{bucket}/dir/small.txt?") and marker in url, url
        assert fetch_url(url) == (200, b"small artifact\n")
        tampered = tamper_signature(url, marker)
        status, body = fetch_url(tampered)
        assert status == 403 and b"SignatureDoesNotMatch" in body, (tampered, body)

    assert aws.run("s3", "rm", f"s3://{bucket}/dir/small.txt").stdout.strip() == f"delete: s3://{bucket}/dir/small.txt"
    assert "small.txt" not in aws.run("s3", "ls", "--recursive", f"s3://{bucket}").stdout
    missing = aws.run("s3", "cp", f"s3://{bucket}/dir/small.txt", str(down / "again.txt"), expect_ok=False)
    assert missing.returncode != 0 and "404" in missing.stderr, missing.stderr
    assert not (down / "again.txt").exists()


def test_s3api_copy_object_and_delete_objects(aws, s3):
    bucket = unique_name("cli-api")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="src key.txt", Body=b"copy me", Metadata={"build": "9"})

    # The CLI URL-encodes --copy-source itself (botocore does), so the key goes in as it is.
    copied = aws.json(
        "s3api", "copy-object", "--bucket", bucket, "--key", "copy.txt", "--copy-source", f"{bucket}/src key.txt"
    )
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"copy me").hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="copy.txt")
    assert (got["Body"].read(), got["Metadata"]) == (b"copy me", {"build": "9"})

    missing = aws.run(
        "s3api", "copy-object", "--bucket", bucket, "--key", "x", "--copy-source", f"{bucket}/nope", expect_ok=False
    )
    assert missing.returncode != 0 and "NoSuchKey" in missing.stderr, missing.stderr

    batch = {"Objects": [{"Key": "src key.txt"}, {"Key": "copy.txt"}, {"Key": "gone"}], "Quiet": False}
    deleted = aws.json("s3api", "delete-objects", "--bucket", bucket, "--delete", json.dumps(batch))
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["copy.txt", "gone", "src key.txt"]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_iot_thing_group_commands(aws, iot):
    group = unique_name("cli-group")
    thing = unique_name("cli-thing")
    iot.create_thing(thingName=thing)

    created = aws.json("iot", "create-thing-group", "--thing-group-name", group)
    assert created["thingGroupName"] == group
    assert created["thingGroupArn"].endswith(f":thinggroup/{group}")
    described = aws.json("iot", "describe-thing-group", "--thing-group-name", group)
    assert (described["thingGroupName"], described["thingGroupArn"]) == (group, created["thingGroupArn"])

    aws.run("iot", "add-thing-to-thing-group", "--thing-group-name", group, "--thing-name", thing)
    listed = aws.json("iot", "list-things-in-thing-group", "--thing-group-name", group)
    assert listed["things"] == [thing]

    missing = aws.run("iot", "describe-thing-group", "--thing-group-name", unique_name("nope"), expect_ok=False)
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr, missing.stderr
