#!/usr/bin/env python3
# A custom runtime for the Lambda test: polls the Runtime API and acts on the event's "action".
# Standard library only. VERSION is replaced when the test packages it.
import datetime
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request

VERSION = "@VERSION@"
RUNTIME = "http://%s/2018-06-01/runtime" % os.environ["AWS_LAMBDA_RUNTIME_API"]


def post(path, body, headers=None):
    request = urllib.request.Request(RUNTIME + path, data=json.dumps(body).encode(), method="POST")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    urllib.request.urlopen(request).read()


def publish(topic, body):
    """HTTP Publish to the local cloud, signed (SigV4) with the function's role credentials."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    host = endpoint.split("://", 1)[1].rstrip("/")
    path = "/topics/" + topic
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    region = os.environ["AWS_REGION"]
    scope = "%s/%s/iotdata/aws4_request" % (day, region)
    headers = {"host": host, "x-amz-date": amz_date, "x-amz-security-token": os.environ["AWS_SESSION_TOKEN"]}
    names = sorted(headers)
    canonical = "\n".join(
        ["POST", path, "", "".join("%s:%s\n" % (n, headers[n]) for n in names), ";".join(names),
         hashlib.sha256(body).hexdigest()]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (day, region, "iotdata", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(endpoint.rstrip("/") + path, data=body, method="POST")
    for name in names:
        if name != "host":
            request.add_header(name, headers[name])
    request.add_header(
        "Authorization",
        "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
        % (os.environ["AWS_ACCESS_KEY_ID"], scope, ";".join(names), signature),
    )
    try:
        return urllib.request.urlopen(request).status
    except urllib.error.HTTPError as e:
        return e.code


NAMES = ["GREETING", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
         "AWS_REGION", "AWS_DEFAULT_REGION", "_HANDLER", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_ENDPOINT_URL"]

while True:
    with urllib.request.urlopen(RUNTIME + "/invocation/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        context = {
            "arn": r.headers["Lambda-Runtime-Invoked-Function-Arn"],
            "deadline": int(r.headers["Lambda-Runtime-Deadline-Ms"]),
            "trace": r.headers["Lambda-Runtime-Trace-Id"],
        }
        event = json.loads(r.read())
    action = event.get("action")
    if action == "crash":
        sys.exit(3)
    if action == "sleep":
        time.sleep(event["seconds"])
    if action == "fail":
        post("/invocation/%s/error" % request_id, {"errorMessage": "asked to fail", "errorType": "Pump.Failure"},
             {"Lambda-Runtime-Function-Error-Type": "Pump.Failure"})
        continue
    result = {"version": VERSION, "pid": os.getpid(), "event": event, "context": context}
    if action == "env":
        result["env"] = {name: os.environ.get(name) for name in NAMES}
        result["cwd"] = os.getcwd() == os.environ.get("LAMBDA_TASK_ROOT")
        result["credentials"] = all(os.environ.get(n) for n in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                               "AWS_SESSION_TOKEN", "AWS_LAMBDA_RUNTIME_API"])
        result["allowed"] = publish("lambda/probe", b"{}")
        result["denied"] = publish("forbidden/probe", b"{}")
    if action == "publish":
        result["published"] = publish(event["topic"], json.dumps(event).encode())
    post("/invocation/%s/response" % request_id, result)
