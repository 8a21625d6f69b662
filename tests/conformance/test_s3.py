"""boto3 against the local cloud's S3 (path-style, the administrator's key pair
from endpoints.json): objects, ranges, listings, multipart uploads through
`upload_file`, and presigned URLs fetched with plain urllib."""

from __future__ import annotations

import datetime
import hashlib
import urllib.error
import urllib.request

import botocore.auth
import botocore.compat
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

if botocore.compat.HAS_CRT:
    import botocore.crt.auth

from support import s3_client, unique_name

MIB = 1024 * 1024


def _bucket(s3) -> str:
    name = unique_name("conf-bucket")
    s3.create_bucket(Bucket=name)
    return name


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _fetch(url: str) -> tuple[int, bytes]:
    """GET without credentials: status and body (an error status is not an exception here)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _data(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def test_put_get_head_keep_bytes_type_metadata_and_md5_etag(s3):
    bucket = _bucket(s3)
    body = b"artifact bytes"
    key = "com.example/1.0.0/a.zip"
    put = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/zip", Metadata={"build": "7"})
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'

    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/zip"
    assert got["Metadata"] == {"build": "7"}
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]

    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="missing")
    assert _error(excinfo) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket=bucket)
    assert _error(excinfo) == ("BucketAlreadyOwnedByYou", 409)
    with pytest.raises(ClientError) as excinfo:
        s3.delete_bucket(Bucket=bucket)
    assert _error(excinfo) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_range_requests_return_partial_content_or_invalid_range(s3):
    bucket = _bucket(s3)
    data = _data(2 * MIB + 11, 1)
    s3.put_object(Bucket=bucket, Key="blob", Body=data)

    first = s3.get_object(Bucket=bucket, Key="blob", Range="bytes=0-99")
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert first["ContentRange"] == f"bytes 0-99/{len(data)}"
    assert first["Body"].read() == data[:100]
    suffix = s3.get_object(Bucket=bucket, Key="blob", Range="bytes=-10")
    assert suffix["Body"].read() == data[-10:]

    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="blob", Range=f"bytes={len(data)}-")
    assert _error(excinfo) == ("InvalidRange", 416)


def test_list_objects_v2_folds_prefixes_and_pages(s3):
    bucket = _bucket(s3)
    keys = ["a", "dir/1", "dir/2", "dir/sub/3", "key with space+plus", "z"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a", "key with space+plus", "z"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["dir/"]
    under = s3.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in under["Contents"]] == ["dir/1", "dir/2"]
    assert [p["Prefix"] for p in under["CommonPrefixes"]] == ["dir/sub/"]

    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 4}))
    assert [len(p.get("Contents", [])) for p in pages] == [4, 2]
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="dir/sub/3")
    assert [o["Key"] for o in after["Contents"]] == ["key with space+plus", "z"]


def test_upload_file_goes_multipart_and_downloads_whole(s3, tmp_path):
    bucket = _bucket(s3)
    data = _data(11 * MIB + 5, 2)
    source = tmp_path / "firmware.bin"
    source.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)
    s3.upload_file(str(source), bucket, "firmware.bin", Config=config)

    head = s3.head_object(Bucket=bucket, Key="firmware.bin")
    assert head["ContentLength"] == len(data)
    parts = [data[i : i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    assert head["ETag"] == f'"{hashlib.md5(joined).hexdigest()}-3"'

    target = tmp_path / "downloaded.bin"
    s3.download_file(bucket, "firmware.bin", str(target))
    assert target.read_bytes() == data


def test_presigned_url_works_until_tampered_or_expired(s3, monkeypatch):
    bucket = _bucket(s3)
    s3.put_object(Bucket=bucket, Key="artifact.zip", Body=b"presigned body")
    s3.put_object(Bucket=bucket, Key="other.zip", Body=b"other")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "artifact.zip"}, ExpiresIn=300)
    assert _fetch(url) == (200, b"presigned body")

    marker = "X-Amz-Signature="
    at = url.index(marker) + len(marker)
    tampered = url[:at] + ("1" if url[at] == "0" else "0") + url[at + 1 :]
    status, body = _fetch(tampered)
    assert status == 403 and b"SignatureDoesNotMatch" in body
    status, body = _fetch(url.replace("artifact.zip", "other.zip"))
    assert status == 403 and b"SignatureDoesNotMatch" in body

    # Signed an hour ago for one minute: expired, without waiting for time to pass. botocore
    # signs with its own signer or, when awscrt is installed (awsiotsdk brings it), with CRT's;
    # both read the clock through `get_current_datetime`.
    an_hour_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)

    def clock(remove_tzinfo=True):
        return an_hour_ago.replace(tzinfo=None) if remove_tzinfo else an_hour_ago

    for module in (botocore.auth, botocore.crt.auth if botocore.compat.HAS_CRT else None):
        if module is not None:
            monkeypatch.setattr(module, "get_current_datetime", clock)
    expired = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "artifact.zip"}, ExpiresIn=60)
    monkeypatch.undo()
    assert "X-Amz-Date=" + an_hour_ago.strftime("%Y%m%dT%H%M%SZ") in expired
    status, body = _fetch(expired)
    assert status == 403 and b"AccessDenied" in body


def test_a_wrong_secret_is_refused(endpoints):
    wrong = s3_client(endpoints, secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as excinfo:
        wrong.list_buckets()
    assert _error(excinfo) == ("SignatureDoesNotMatch", 403)
