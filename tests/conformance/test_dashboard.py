"""The auditors' dashboard (`/dashboard/` on the local cloud) in a real headless Chromium (Debian's
`chromium` and `chromium-driver`), driven with Selenium: sign-in through the Cognito user pool
is refused with a wrong password and the page says so; signed in, each panel shows what the
deployment holds — a thing connected over MQTT with its certificate, a `pump` shadow's version
and desired value, a CloudWatch alarm's state, a Greengrass deployment and its job, telemetry
published over MQTT drawn as a chart, the audit's checklist with its evidence links — and the
JSON API refuses requests without a token or with a forged one (401). A screenshot of each panel
is kept under `target/screenshots/dashboard/` as a test artifact. Every wait is a WebDriverWait
on what the page shows, with a deadline."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
from awscrt import mqtt
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from support import EVENT_TIMEOUT_S, ConnectionEvents, boto_client, connect_device, provision_device, unique_name

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("DASHBOARD_SCREENSHOT_DIR", REPO_ROOT / "target" / "screenshots" / "dashboard"))
PASSWORD = "Auditor-password-7"
# The page refreshes every 3 s; a panel must show a change within a few refreshes.
PAGE_DEADLINE_S = 20.0
PACKAGES = "chromium and chromium-driver (Debian: apt-get install chromium chromium-driver; scripts/test.sh installs them as root)"


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(f"the dashboard's browser tests need {PACKAGES}; not found on PATH", pytrace=False)
    return chromium, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = _browser_binaries()
    options = Options()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI: Chromium's sandbox needs an unprivileged user
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
        "--no-proxy-server",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(argument)
    # The given driver: Selenium Manager must not look for (or download) another.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def auditors(endpoints):
    """The pool and client the dashboard trusts by default (`auditors`/`dashboard`, as
    `provision auditors` names them) and an auditor with a permanent password."""
    cognito = boto_client(endpoints, "cognito-idp")
    pool_id = cognito.create_user_pool(PoolName="auditors")["UserPool"]["Id"]
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName="dashboard", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
    )["UserPoolClient"]["ClientId"]
    cognito.admin_create_user(UserPoolId=pool_id, Username="auditor", MessageAction="SUPPRESS")
    cognito.admin_set_user_password(UserPoolId=pool_id, Username="auditor", Password=PASSWORD, Permanent=True)
    yield pool_id, client_id
    cognito.delete_user_pool(UserPoolId=pool_id)


def _wait(browser, condition, what: str, timeout: float = PAGE_DEADLINE_S):
    """Waits until `condition(browser)` is truthy; a stale element (the panel was redrawn) is retried."""

    def check(driver):
        try:
            return condition(driver)
        except StaleElementReferenceException:
            return False

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(check, message=f"the page did not show {what}")


def _text(browser, css: str) -> str:
    found = browser.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def _screenshot(browser, panel: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    element = browser.find_element(By.ID, f"panel-{panel}")
    browser.execute_script("arguments[0].scrollIntoView()", element)
    assert element.screenshot(str(SCREENSHOTS / f"{panel}.png")), f"screenshot of {panel}"


def _sign_in(browser, endpoints, password: str) -> None:
    browser.get(f"{endpoints.http}/dashboard/")
    _wait(browser, lambda d: d.find_element(By.ID, "sign-in-form").is_displayed(), "the sign-in form")
    for field, value in (("username", "auditor"), ("password", password)):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "sign-in-button").click()


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def _telemetry_policy(endpoints) -> str:
    thing = "${iot:Connection.Thing.ThingName}"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": endpoints.arn(f"client/{thing}")},
                {"Effect": "Allow", "Action": "iot:Publish", "Resource": endpoints.arn(f"topic/dt/pump/{thing}/*")},
            ],
        }
    )


def test_a_wrong_password_is_refused_on_the_page(browser, endpoints, auditors):
    _sign_in(browser, endpoints, "Not-the-password-1")
    error = _wait(
        browser,
        lambda d: d.find_element(By.ID, "sign-in-error") if d.find_element(By.ID, "sign-in-error").is_displayed() else None,
        "the sign-in error",
    )
    assert error.text == "Incorrect username or password."
    assert not browser.find_element(By.ID, "panels").is_displayed()


def test_the_api_refuses_requests_without_a_valid_token(endpoints, auditors):
    pool_id, client_id = auditors
    base = f"{endpoints.http}/dashboard/api"
    assert _get(f"{base}/fleet") == 401
    assert _get(f"{base}/fleet", "not.a.token") == 401
    # A token signed by another key (here an HMAC one, as a forger would make) with the right claims.
    now = int(time.time())
    claims = {"iss": f"{endpoints.http}/{pool_id}", "aud": client_id, "token_use": "id", "sub": "x",
              "cognito:username": "auditor", "iat": now, "exp": now + 3600}
    forged = jwt.encode(claims, "guessed-secret-of-at-least-32-bytes!", algorithm="HS256")
    assert _get(f"{base}/fleet", forged) == 401
    # The real one, to show the refusals are about the token.
    cognito = boto_client(endpoints, "cognito-idp")
    token = cognito.initiate_auth(
        AuthFlow="USER_PASSWORD_AUTH", ClientId=client_id, AuthParameters={"USERNAME": "auditor", "PASSWORD": PASSWORD}
    )["AuthenticationResult"]["IdToken"]
    assert _get(f"{base}/fleet", token) == 200
    header, payload, signature = token.split(".")
    tampered = jwt.utils.base64url_encode(json.dumps(dict(jwt.decode(token, options={"verify_signature": False}), sub="y")).encode())
    assert _get(f"{base}/fleet", f"{header}.{tampered.decode()}.{signature}") == 401


def test_each_panel_shows_what_the_deployment_holds(browser, endpoints, auditors, local_cloud, iot, iot_data, tmp_path):
    # What the deployment holds: a connected thing that publishes telemetry, its pump shadow,
    # an alarm, a deployment to its group, and an audit's checklist.
    device = provision_device(iot, endpoints, tmp_path / "pump", prefix="dash-pump", policy_document=_telemetry_policy(endpoints))
    group = unique_name("dash-cores")
    iot.create_thing_group(thingGroupName=group)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=device.thing_name)
    connection = connect_device(endpoints, device, ConnectionEvents())
    try:
        _fill_and_check(browser, endpoints, local_cloud, device, group, connection, iot_data)
    finally:
        connection.disconnect().result(timeout=EVENT_TIMEOUT_S)


def _fill_and_check(browser, endpoints, local_cloud, device, group, connection, iot_data):
    thing = device.thing_name
    for version, speed in ((1, 1200), (2, 1350)):
        state = {"state": {"desired": {"mode": "manual", "speedRpm": speed}}}
        iot_data.update_thing_shadow(thingName=thing, shadowName="pump", payload=json.dumps(state).encode())
    cloudwatch = boto_client(endpoints, "cloudwatch")
    alarm = unique_name("dash-alarm")
    namespace = unique_name("Dashboard")
    cloudwatch.put_metric_alarm(
        AlarmName=alarm, Namespace=namespace, MetricName="rpm", Statistic="Maximum", Period=10,
        EvaluationPeriods=1, Threshold=50.0, ComparisonOperator="GreaterThanThreshold", TreatMissingData="missing",
    )
    cloudwatch.put_metric_data(Namespace=namespace, MetricData=[{"MetricName": "rpm", "Value": 90.0}])
    gg = boto_client(endpoints, "greengrassv2")
    component = f"com.example.{unique_name('dash')}"
    recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": component, "ComponentVersion": "1.0.0",
              "ComponentPublisher": "Example", "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "true"}}]}
    gg.create_component_version(inlineRecipe=json.dumps(recipe).encode())
    deployment = gg.create_deployment(
        targetArn=endpoints.arn(f"thinggroup/{group}"), deploymentName=unique_name("dash-deploy"),
        components={component: {"componentVersion": "1.0.0"}},
    )

    local_cloud.checklist.unlink(missing_ok=True)
    _sign_in(browser, endpoints, PASSWORD)
    _wait(browser, lambda d: d.find_element(By.ID, "whoami").text == "auditor", "the signed-in user")

    # The checklist before any audit.
    _wait(browser, lambda d: _text(d, "#panel-checklist #no-audit") == "no audit yet", "'no audit yet'")

    # Fleet: the thing, connected, with its certificate's expiry.
    row = f"#panel-fleet tr[data-thing='{thing}']"
    _wait(browser, lambda d: _text(d, f"{row} td.connection").startswith("connected"), f"{thing} connected")
    assert device.certificate_id[:10] in _text(browser, f"{row} td.certificates")
    assert "2049-12-31" in _text(browser, f"{row} td.certificates")
    _screenshot(browser, "fleet")

    # Telemetry published over MQTT, drawn as a chart per measurement.
    now_ms = int(time.time() * 1000)
    readings = [{"ts": now_ms + i * 1000, "seq": i, "flow_m3h": 40.0 + i, "running": True} for i in range(5)]
    batch = json.dumps({"v": 1, "thing": thing, "readings": readings}).encode()
    published, _ = connection.publish(f"dt/pump/{thing}/telemetry", batch, mqtt.QoS.AT_LEAST_ONCE)
    published.result(timeout=EVENT_TIMEOUT_S)
    chart = f"#panel-telemetry .chart[data-thing='{thing}'][data-field='flow_m3h']"
    _wait(browser, lambda d: _text(d, f"{chart} .last-value") == "44", "the flow chart's last value")
    assert browser.find_element(By.CSS_SELECTOR, chart).get_attribute("data-points") == "5"
    points = browser.find_element(By.CSS_SELECTOR, f"{chart} polyline").get_attribute("points").split()
    assert len(points) == 5 and float(points[0].split(",")[1]) > float(points[-1].split(",")[1]), "a rising line"
    _screenshot(browser, "telemetry")

    # The pump shadow: version 2 with the desired speed last set.
    shadow = f"#panel-shadows tr[data-thing='{thing}']"
    _wait(browser, lambda d: _text(d, f"{shadow} td.version") == "2", "the shadow's version")
    assert '"speedRpm": 1350' in _text(browser, f"{shadow} td.desired")
    assert '"speedRpm": 1350' in _text(browser, f"{shadow} td.delta"), "nothing reported: all desired is delta"
    _screenshot(browser, "shadows")

    # The alarm in ALARM.
    alarm_row = f"#panel-alarms tr[data-alarm='{alarm}']"
    _wait(browser, lambda d: _text(d, f"{alarm_row} td.state") == "ALARM", "the alarm's state")
    assert "Threshold Crossed" in _text(browser, alarm_row)
    _screenshot(browser, "alarms")

    # The deployment, and its job queued for the thing.
    deployment_row = f"#panel-deployments tr[data-deployment='{deployment['deploymentId']}']"
    _wait(browser, lambda d: _text(d, f"{deployment_row} td.status") == "ACTIVE", "the deployment")
    execution = f"#panel-deployments tr[data-job='{deployment['iotJobId']}'] .execution[data-thing='{thing}']"
    _wait(browser, lambda d: "QUEUED" in _text(d, execution), "the deployment job's execution")
    _screenshot(browser, "deployments")

    # Anomalies: an event published over MQTT.
    event = {"v": 1, "id": unique_name("anomaly"), "ts": now_ms, "reading_seq": 4, "detector": "rules",
             "kind": "cavitation", "active": True, "severity": 0.8, "reason": "suction pressure low", "features": {}}
    published, _ = connection.publish(f"dt/pump/{thing}/anomalies", json.dumps(event).encode(), mqtt.QoS.AT_LEAST_ONCE)
    published.result(timeout=EVENT_TIMEOUT_S)
    _wait(browser, lambda d: "suction pressure low" in _text(d, f"#panel-anomalies tr[data-id='{event['id']}']"), "the anomaly")
    _screenshot(browser, "anomalies")

    # An audit's checklist appears with its evidence links.
    local_cloud.checklist.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        {"id": "SEC-1", "section": "Security", "subject": "Devices use mutual TLS", "met": True,
         "evidence": [{"title": "policy audit", "href": "evidence/policy-audit.json"}]},
        {"id": "OPS-2", "section": "Operational excellence", "subject": "Alarms have runbooks", "met": False, "evidence": []},
    ]
    local_cloud.checklist.write_text("".join(json.dumps(line) + "\n" for line in lines))
    _wait(browser, lambda d: _text(d, "#panel-checklist tr[data-line='SEC-1'] td.met-yes") == "Y", "the checklist")
    assert _text(browser, "#panel-checklist tr[data-line='OPS-2'] td.met-no") == "N"
    link = browser.find_element(By.CSS_SELECTOR, "#panel-checklist tr[data-line='SEC-1'] a")
    assert link.text == "policy audit" and link.get_attribute("data-href") == "evidence/policy-audit.json"
    _screenshot(browser, "checklist")
    # Its evidence opens in the page, fetched with the viewer's token: only files the audit's
    # manifest lists, by a plain relative path.
    audit_dir = local_cloud.checklist.parent
    (audit_dir / "evidence").mkdir(exist_ok=True)
    (audit_dir / "evidence" / "policy-audit.json").write_text(json.dumps({"findings": [], "policies": ["dash-policy"]}))
    (audit_dir / "manifest.json").write_text(json.dumps({"sha256": {"evidence/policy-audit.json": "0" * 64}}))
    link.click()
    _wait(browser, lambda d: '"dash-policy"' in _text(d, "#evidence-text"), "the evidence file in the page")
    assert _text(browser, "#evidence-title") == "policy audit"
    _screenshot(browser, "evidence")
    token = browser.execute_script("return sessionStorage.getItem('dashboard.idToken')")
    for path, status in [("evidence/policy-audit.json", 200), ("../manifest.json", 400), ("%2Fetc%2Fpasswd", 404),
                         ("evidence/missing.json", 404)]:
        request = urllib.request.Request(f"{endpoints.http}/dashboard/api/evidence/{path}",
                                         headers={"Authorization": f"Bearer {token}"})
        assert _status(request) == status, path
    assert _status(urllib.request.Request(f"{endpoints.http}/dashboard/api/evidence/evidence/policy-audit.json")) == 401
    for name in ["evidence/policy-audit.json", "manifest.json"]:
        (audit_dir / name).unlink()
    local_cloud.checklist.unlink()

    # Signing out forgets the token.
    browser.find_element(By.ID, "sign-out").click()
    _wait(browser, lambda d: d.find_element(By.ID, "sign-in-form").is_displayed(), "the sign-in form again")
    assert browser.execute_script("return sessionStorage.getItem('dashboard.idToken')") is None


def _status(request: urllib.request.Request) -> int:
    """The HTTP status the local cloud answers `request` with."""
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_page_and_api_are_read_only(endpoints, auditors):
    request = urllib.request.Request(f"{endpoints.http}/dashboard/api/fleet", data=b"{}", method="POST")
    assert _status(request) == 405
    with urllib.request.urlopen(f"{endpoints.http}/dashboard/", timeout=10) as response:
        csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
