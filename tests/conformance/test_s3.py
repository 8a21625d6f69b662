"""boto3 against the local cloud's S3 (path-style, the administrator's key pair
from endpoints.json): objects, ranges, listings, multipart uploads through
`upload_file`, presigned URLs fetched with plain urllib, CopyObject,
DeleteObjects and stored checksums."""

from __future__ import annotations

import base64
import datetime
import hashlib
import zlib

import botocore.auth
import botocore.compat
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

if botocore.compat.HAS_CRT:
    import botocore.crt.auth

from support import fetch_url, s3_client, sample_bytes, tamper_signature, unique_name

MIB = 1024 * 1024


def _bucket(s3) -> str:
    name = unique_name("conf-bucket")
    s3.create_bucket(Bucket=name)
    return name


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


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
    data = sample_bytes(2 * MIB + 11, 1)
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
    data = sample_bytes(11 * MIB + 5, 2)
    source = tmp_path / "firmware.bin"
    source.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)
    s3.upload_file(str(source), bucket, "firmware.bin", Config=config)

    head = s3.head_object(Bucket=bucket, Key="firmware.bin")
    assert head["ContentLength"] == len(data)
    parts = [data[i : i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    assert head["ETag"] == f'"{hashlib.md5(joined).hexdigest()}-3"'
    # s3transfer asks for CRC32 per part; the object keeps the COMPOSITE checksum of the parts.
    checked = s3.head_object(Bucket=bucket, Key="firmware.bin", ChecksumMode="ENABLED")
    part_crcs = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
    composite = base64.b64encode(zlib.crc32(part_crcs).to_bytes(4, "big")).decode()
    assert (checked["ChecksumCRC32"], checked["ChecksumType"]) == (f"{composite}-3", "COMPOSITE")

    target = tmp_path / "downloaded.bin"
    s3.download_file(bucket, "firmware.bin", str(target))
    assert target.read_bytes() == data


def test_presigned_url_works_until_tampered_or_expired(s3, monkeypatch):
    bucket = _bucket(s3)
    s3.put_object(Bucket=bucket, Key="artifact.zip", Body=b"presigned body")
    s3.put_object(Bucket=bucket, Key="other.zip", Body=b"other")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "artifact.zip"}, ExpiresIn=300)
    assert fetch_url(url) == (200, b"presigned body")

    status, body = fetch_url(tamper_signature(url))
    assert status == 403 and b"SignatureDoesNotMatch" in body
    status, body = fetch_url(url.replace("artifact.zip", "other.zip"))
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
    status, body = fetch_url(expired)
    assert status == 403 and b"AccessDenied" in body


def test_a_wrong_secret_is_refused(endpoints):
    wrong = s3_client(endpoints, secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as excinfo:
        wrong.list_buckets()
    assert _error(excinfo) == ("SignatureDoesNotMatch", 403)


def test_copy_object_within_and_across_buckets_keeps_or_replaces_metadata(s3):
    source, target = _bucket(s3), _bucket(s3)
    key = "dir/a b+c é.txt"
    body = b"artifact v1"
    s3.put_object(Bucket=source, Key=key, Body=body, ContentType="text/plain", Metadata={"build": "7"})
    etag = f'"{hashlib.md5(body).hexdigest()}"'

    # botocore URL-encodes CopySource, given as a dict or as a `bucket/key` string.
    same = s3.copy_object(Bucket=source, Key="copy", CopySource={"Bucket": source, "Key": key})
    assert same["CopyObjectResult"]["ETag"] == etag
    got = s3.get_object(Bucket=source, Key="copy")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (body, "text/plain", {"build": "7"})

    s3.copy_object(
        Bucket=target,
        Key="released.txt",
        CopySource=f"{source}/{key}",
        MetadataDirective="REPLACE",
        ContentType="application/x-artifact",
        Metadata={"stage": "released"},
    )
    got = s3.get_object(Bucket=target, Key="released.txt")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (
        body,
        "application/x-artifact",
        {"stage": "released"},
    )

    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=target, Key="released.txt", CopySource={"Bucket": source, "Key": "missing"})
    assert _error(excinfo) == ("NoSuchKey", 404)
    assert s3.get_object(Bucket=target, Key="released.txt")["Body"].read() == body, "the target is untouched"
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=source, Key="copy", CopySource={"Bucket": source, "Key": "copy"})
    assert _error(excinfo) == ("InvalidRequest", 400)


def test_delete_objects_reports_each_key_honours_quiet_and_refuses_malformed_xml(s3):
    bucket = _bucket(s3)
    for key in ["a", "b c", "d", "keep"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")

    out = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "a"}, {"Key": "b c"}, {"Key": "never-there"}, {"Key": "d", "VersionId": "v7"}]},
    )
    assert sorted(d["Key"] for d in out["Deleted"]) == ["a", "b c", "never-there"]
    assert [(e["Key"], e["Code"]) for e in out["Errors"]] == [("d", "NoSuchVersion")]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "d"}], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["keep"]

    # The body is cut short after botocore serialized it, before it is signed.
    def truncate(request, **_):
        request.data = b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>keep</Key>'
        if "Content-Length" in request.headers:
            del request.headers["Content-Length"]

    s3.meta.events.register("before-sign.s3.DeleteObjects", truncate)
    try:
        with pytest.raises(ClientError) as excinfo:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "keep"}]})
    finally:
        s3.meta.events.unregister("before-sign.s3.DeleteObjects", truncate)
    assert _error(excinfo) == ("MalformedXML", 400)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["keep"]


def test_checksums_are_verified_kept_and_returned_in_checksum_mode(s3):
    bucket = _bucket(s3)
    body = b"firmware image"
    sha256 = base64.b64encode(hashlib.sha256(body).digest()).decode()
    crc32 = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()

    put = s3.put_object(Bucket=bucket, Key="fw", Body=body, ChecksumSHA256=sha256)
    assert put["ChecksumSHA256"] == sha256
    head = s3.head_object(Bucket=bucket, Key="fw", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha256
    assert "ChecksumSHA256" not in s3.head_object(Bucket=bucket, Key="fw")
    got = s3.get_object(Bucket=bucket, Key="fw", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == sha256 and got["Body"].read() == body

    # botocore sends CRC32 by default; it is kept, and botocore checks it on the way back.
    s3.put_object(Bucket=bucket, Key="default", Body=body)
    assert s3.head_object(Bucket=bucket, Key="default", ChecksumMode="ENABLED")["ChecksumCRC32"] == crc32
    assert s3.get_object(Bucket=bucket, Key="default", ChecksumMode="ENABLED")["Body"].read() == body

    # CRC32C (botocore computes it with awscrt, which awsiotsdk brings).
    put = s3.put_object(Bucket=bucket, Key="crc32c", Body=body, ChecksumAlgorithm="CRC32C")
    assert put["ChecksumCRC32C"]
    head = s3.head_object(Bucket=bucket, Key="crc32c", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32C"], head["ChecksumType"]) == (put["ChecksumCRC32C"], "FULL_OBJECT")

    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="fw", Body=b"tampered", ChecksumSHA256=wrong)
    assert _error(excinfo) == ("BadDigest", 400)
    wrong_md5 = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="fw", Body=b"tampered", ContentMD5=wrong_md5)
    assert _error(excinfo) == ("BadDigest", 400)
    assert s3.get_object(Bucket=bucket, Key="fw")["Body"].read() == body, "a refused body replaces nothing"
