// The auditor's dashboard: sign-in through the Cognito user pool (InitiateAuth,
// USER_PASSWORD_AUTH), then the read-only panels, refreshed every few seconds.
// Plain JavaScript, no framework; every text goes in through textContent, never as HTML.
"use strict";

const TOKEN_KEY = "dashboard.idToken";
const REFRESH_MS = 3000;
const PANELS = ["fleet", "telemetry", "shadows", "anomalies", "deployments", "alarms", "checklist"];
const SVG_NS = "http://www.w3.org/2000/svg";

let timer = null;

function $(id) {
  return document.getElementById(id);
}

// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function time(value) {
  if (value === null || value === undefined || value === "") return "";
  // Seconds or milliseconds since the epoch.
  const ms = typeof value === "number" && value < 1e11 ? value * 1000 : Number(value);
  if (!Number.isFinite(ms)) return String(value);
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function compact(value) {
  if (value === undefined || value === null) return "";
  return JSON.stringify(value, null, 1);
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

function empty(text) {
  return el("p", { class: "empty" }, text);
}

// --- sign-in ---------------------------------------------------------------

async function cognito(operation, body) {
  const response = await fetch("/", {
    method: "POST",
    headers: {
      "Content-Type": "application/x-amz-json-1.1",
      "X-Amz-Target": "AWSCognitoIdentityProviderService." + operation,
    },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(answer.message || answer.Message || "sign-in failed (" + response.status + ")");
    error.code = answer.__type;
    throw error;
  }
  return answer;
}

async function signIn(event) {
  event.preventDefault();
  const error = $("sign-in-error");
  error.hidden = true;
  try {
    const config = await fetch("config.json").then(async (r) => {
      const body = await r.json();
      if (!r.ok) throw new Error("Sign-in is not set up: " + body.message);
      return body;
    });
    const answer = await cognito("InitiateAuth", {
      AuthFlow: "USER_PASSWORD_AUTH",
      ClientId: config.clientId,
      AuthParameters: { USERNAME: $("username").value, PASSWORD: $("password").value },
    });
    if (answer.ChallengeName) {
      throw new Error(
        "This user must choose a new password first (" + answer.ChallengeName + "): ask the operator to set a permanent one."
      );
    }
    sessionStorage.setItem(TOKEN_KEY, answer.AuthenticationResult.IdToken);
    $("password").value = "";
    start();
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (timer) clearTimeout(timer);
  timer = null;
  $("panels").hidden = true;
  $("session").hidden = true;
  $("sign-in").hidden = false;
  const error = $("sign-in-error");
  error.textContent = message || "";
  error.hidden = !message;
}

// --- the API ---------------------------------------------------------------

class Unauthorized extends Error {}

async function api(panel) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch("api/" + panel, { headers: { Authorization: "Bearer " + token } });
  if (response.status === 401) throw new Unauthorized("Your session has ended: sign in again.");
  if (!response.ok) throw new Error(panel + ": HTTP " + response.status);
  return response.json();
}

// An audit's evidence file, fetched with the token (a plain link would carry none) and shown as
// text under the checklist.
async function showEvidence(href, title) {
  const viewer = $("panel-evidence");
  viewer.hidden = false;
  $("evidence-title").textContent = title;
  const text = $("evidence-text");
  text.textContent = "loading…";
  try {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const response = await fetch("api/evidence/" + href, { headers: { Authorization: "Bearer " + token } });
    if (response.status === 401) throw new Unauthorized("Your session has ended: sign in again.");
    const body = await response.text();
    if (!response.ok) throw new Error(href + ": HTTP " + response.status);
    let shown = body;
    if ((response.headers.get("content-type") || "").startsWith("application/json")) {
      try {
        shown = JSON.stringify(JSON.parse(body), null, 2);
      } catch (_) {
        shown = body;
      }
    }
    text.textContent = shown;
    viewer.dataset.href = href;
  } catch (e) {
    if (e instanceof Unauthorized) return signOut(e.message);
    text.textContent = e.message;
  }
}

function evidenceLink(e) {
  if (!e.href) return e.title;
  // A link to a page elsewhere opens there; the audit's own files open in the viewer.
  if (/^https?:/i.test(e.href)) return el("a", { href: e.href, target: "_blank", rel: "noopener noreferrer" }, e.title);
  const link = el("a", { href: "#evidence", "data-href": e.href, class: "evidence-link" }, e.title);
  link.addEventListener("click", (event) => {
    event.preventDefault();
    showEvidence(e.href, e.title);
  });
  return link;
}

function show(panel, content) {
  const body = document.querySelector("#panel-" + panel + " .body");
  body.replaceChildren(content);
  body.parentElement.dataset.refreshed = String(Date.now());
}

async function refresh() {
  try {
    const whoami = await api("whoami");
    $("whoami").textContent = whoami.username;
    await Promise.all(
      PANELS.map(async (panel) => {
        try {
          show(panel, RENDER[panel](await api(panel)));
        } catch (e) {
          if (e instanceof Unauthorized) throw e;
          show(panel, el("p", { class: "error" }, e.message));
        }
      })
    );
    $("refreshed").textContent = new Date().toISOString().slice(11, 19) + " UTC";
    timer = setTimeout(refresh, REFRESH_MS);
  } catch (e) {
    if (e instanceof Unauthorized) {
      signOut(e.message);
    } else {
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }
}

function start() {
  $("sign-in").hidden = true;
  $("session").hidden = false;
  $("panels").hidden = false;
  refresh();
}

// --- panels ----------------------------------------------------------------

function fleet(data) {
  if (!data.things.length) return empty("No things registered.");
  const rows = data.things.map((t) => {
    const certificates = t.certificates.map((c) =>
      el("div", { class: c.daysLeft < 30 ? "expiring" : "" }, c.id.slice(0, 10) + "… " + c.status + ", expires " + time(c.notAfter) + " (" + c.daysLeft + " days)")
    );
    const core = t.core;
    const components = core
      ? core.components.map((c) => el("div", {}, c.name + " " + c.version + " ", el("span", { class: c.state }, c.state)))
      : "not a Greengrass core device";
    return el(
      "tr",
      { "data-thing": t.thing },
      el("td", {}, t.thing),
      el(
        "td",
        { class: "connection " + (t.connected ? "connected" : "disconnected") },
        t.connected ? "connected" : "disconnected",
        t.connectivityAt ? el("div", { class: "empty" }, "since " + time(t.connectivityAt)) : null,
        t.disconnectReason ? el("div", { class: "empty" }, t.disconnectReason) : null
      ),
      el("td", { class: "core-status" }, core ? el("span", { class: core.status }, core.status) : "—"),
      el("td", { class: "components" }, components),
      el("td", { class: "certificates" }, certificates.length ? certificates : "no certificate")
    );
  });
  return table(["Thing", "Connection", "Core", "Components", "Certificates"], rows);
}

function chart(thing, field, points) {
  const width = 240;
  const height = 60;
  const values = points.map((p) => p[1]);
  const min = Math.min(...values);
  const max = Math.max(...values);
  const t0 = points[0][0];
  const t1 = points[points.length - 1][0];
  const x = (t) => (t1 === t0 ? width / 2 : ((t - t0) / (t1 - t0)) * (width - 4) + 2);
  const y = (v) => (max === min ? height / 2 : height - 2 - ((v - min) / (max - min)) * (height - 4));
  const graph = svg("svg", { width, height, viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": field + " of " + thing });
  graph.append(svg("line", { x1: 0, y1: height - 1, x2: width, y2: height - 1 }));
  graph.append(svg("polyline", { points: points.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ") }));
  const last = values[values.length - 1];
  return el(
    "div",
    { class: "chart", "data-thing": thing, "data-field": field, "data-points": points.length },
    el("div", { class: "label" }, el("span", {}, field), el("span", { class: "last-value" }, String(last))),
    graph,
    el("div", { class: "label" }, el("span", {}, "min " + min), el("span", {}, "max " + max))
  );
}

function telemetry(data) {
  const pumps = Object.keys(data.pumps);
  if (!pumps.length) return empty("No telemetry received since the local cloud started.");
  return el(
    "div",
    {},
    pumps.map((thing) => {
      const readings = data.pumps[thing];
      const fields = new Set();
      for (const r of readings) {
        for (const [k, v] of Object.entries(r)) if (typeof v === "number" && k !== "ts" && k !== "seq") fields.add(k);
      }
      const charts = [...fields].sort().map((field) =>
        chart(thing, field, readings.filter((r) => typeof r[field] === "number").map((r) => [r.ts, r[field]]))
      );
      return el(
        "div",
        { class: "pump", "data-thing": thing },
        el("h3", {}, thing + " (" + readings.length + " readings, last " + time(readings[readings.length - 1].ts) + ")"),
        el("div", { class: "charts" }, charts)
      );
    })
  );
}

function shadows(data) {
  if (!data.shadows.length) return empty("No thing has a " + data.shadow + " shadow.");
  const rows = data.shadows.map((s) =>
    el(
      "tr",
      { "data-thing": s.thing },
      el("td", {}, s.thing),
      el("td", { class: "version" }, String(s.version)),
      el("td", { class: "desired" }, el("pre", {}, compact(s.desired))),
      el("td", { class: "reported" }, el("pre", {}, compact(s.reported))),
      el("td", { class: "delta" }, el("pre", {}, compact(s.delta)))
    )
  );
  return table(["Thing", "Version", "Desired", "Reported", "Delta"], rows);
}

function anomalies(data) {
  const events = data.events.length
    ? table(
        ["Time", "Pump", "Kind", "Detector", "State", "Severity", "Reason"],
        data.events.map((e) =>
          el(
            "tr",
            { "data-id": e.id },
            el("td", {}, time(e.ts)),
            el("td", {}, e.thing),
            el("td", {}, e.kind),
            el("td", {}, e.detector),
            el("td", { class: e.active ? "active-anomaly" : "" }, e.active ? "raised" : "cleared"),
            el("td", {}, typeof e.severity === "number" ? e.severity.toFixed(2) : ""),
            el("td", {}, e.reason)
          )
        )
      )
    : empty("No anomaly events since the local cloud started.");
  let incidents;
  if (data.incidentsError) {
    incidents = empty("Table " + data.incidentsTable + ": " + data.incidentsError);
  } else if (!data.incidents.length) {
    incidents = empty("No incidents in " + data.incidentsTable + ".");
  } else {
    const columns = [...new Set(data.incidents.flatMap((i) => Object.keys(i)))].sort();
    incidents = table(
      columns,
      data.incidents.map((i) => el("tr", {}, columns.map((c) => el("td", {}, typeof i[c] === "object" ? compact(i[c]) : i[c]))))
    );
  }
  return el("div", {}, el("h3", {}, "Anomaly events"), events, el("h3", {}, "Incidents (" + data.incidentsTable + ")"), incidents);
}

function timeline(steps) {
  return el("ol", { class: "timeline" }, steps.map((s) => el("li", {}, el("span", { class: s.status }, s.status), " " + time(s.at))));
}

function deployments(data) {
  const list = data.deployments.length
    ? table(
        ["Deployment", "Target", "Revision", "Status", "Components", "Created"],
        data.deployments.map((d) =>
          el(
            "tr",
            { "data-deployment": d.deploymentId },
            el("td", {}, d.deploymentName || d.deploymentId, el("div", { class: "empty" }, d.deploymentId)),
            el("td", {}, d.targetArn),
            el("td", {}, String(d.revision), d.isLatestForTarget ? " (latest)" : ""),
            el("td", { class: "status" }, el("span", { class: d.status }, d.status)),
            el("td", {}, d.components.map((c) => el("div", {}, c.name + " " + c.version))),
            el("td", {}, time(d.created))
          )
        )
      )
    : empty("No Greengrass deployments.");
  const jobs = data.jobs.length
    ? table(
        ["Job", "Status", "Executions"],
        data.jobs.map((j) =>
          el(
            "tr",
            { "data-job": j.jobId },
            el("td", {}, j.jobId, j.namespace ? el("div", { class: "empty" }, j.namespace) : null),
            el("td", {}, el("span", { class: j.status }, j.status)),
            el(
              "td",
              {},
              j.executions.length
                ? j.executions.map((e) => el("div", { class: "execution", "data-thing": e.thing }, el("strong", {}, e.thing + ": "), timeline(e.timeline)))
                : "no executions"
            )
          )
        )
      )
    : empty("No jobs.");
  return el("div", {}, el("h3", {}, "Greengrass deployments"), list, el("h3", {}, "Jobs"), jobs);
}

function alarms(data) {
  if (data.error) return el("p", { class: "error" }, data.error);
  if (!data.alarms.length) return empty("No alarms.");
  return table(
    ["Alarm", "State", "Reason", "Since"],
    data.alarms.map((a) =>
      el(
        "tr",
        { "data-alarm": a.name },
        el("td", {}, a.name, el("div", { class: "empty" }, (a.namespace || "") + " " + (a.metric || ""))),
        el("td", { class: "state state-" + a.state }, a.state),
        el("td", {}, a.reason || ""),
        el("td", {}, time(a.updated))
      )
    )
  );
}

function checklist(data) {
  if (!data.audit) return el("p", { class: "empty", id: "no-audit" }, data.message);
  return table(
    ["Line", "Section", "Subject", "Met", "Evidence"],
    data.lines.map((line) =>
      el(
        "tr",
        { "data-line": line.id },
        el("td", {}, String(line.id)),
        el("td", {}, line.section),
        el("td", {}, line.subject),
        el("td", { class: line.met ? "met-yes" : "met-no" }, line.met ? "Y" : "N"),
        el(
          "td",
          {},
          line.evidence.map((e) => el("div", {}, evidenceLink(e)))
        )
      )
    )
  );
}

const RENDER = { fleet, telemetry, shadows, anomalies, deployments, alarms, checklist };

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut(""));
  if (sessionStorage.getItem(TOKEN_KEY)) start();
});
