// Aiki dashboard: one WebSocket session to the server carries every request and the
// live updates (no polling). Plain JavaScript, no build step.
//
// Signing in sends the API key once to /auth/sign-in, which starts a session on the
// server and keeps the session's token (never the key) in an HttpOnly, SameSite=Strict
// cookie: the browser presents it (on the session's upgrade, on requests), and page
// script never holds the key after the form is sent. Every POST sends back the session's
// CSRF token (the aiki_csrf cookie) in x-aiki-csrf.
"use strict";

const VIEWS = ["runs-view", "run-view", "schedules-view", "workers-view", "versions-view", "limits-view"];
const RUN_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const STATUSES = ["scheduled", "queued", "running", "paused", "sleeping", "awaiting_event",
  "awaiting_retry", "awaiting_child_workflow", "stalled", "completed", "failed", "cancelled"];

class Session {
  constructor(onOpen) {
    this.onOpen = onOpen;
    this.nextId = 1;
    this.pending = new Map();
    this.handlers = new Map();
    this.delay = 250;
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.socket = new WebSocket(`${scheme}://${location.host}/api/v1/session`);
    this.socket.onopen = () => {
      this.delay = 250;
      setConnection("live", "live");
      this.onOpen();
    };
    this.socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    this.socket.onclose = async () => {
      for (const { reject } of this.pending.values()) reject(new Error("connection lost"));
      this.pending.clear();
      this.handlers.clear();
      if (this.closed) return;
      setConnection("down", "reconnecting…");
      // Refused at the upgrade (the key expired or was revoked): back to signing in.
      if ((await whoami()) === null) {
        this.close();
        showSignIn("signed out: the session ended, or its key was revoked or expired");
        return;
      }
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 5000);
    };
  }

  receive(frame) {
    if (frame.subscription !== undefined) {
      const handler = this.handlers.get(frame.subscription);
      if (handler) handler(frame);
      return;
    }
    const waiting = this.pending.get(frame.id);
    if (!waiting) return;
    this.pending.delete(frame.id);
    if (frame.error) waiting.reject(new Error(frame.error.message));
    else waiting.resolve(frame.ok);
  }

  request(op, body = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.socket.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ id, op, body }));
    });
  }

  async subscribe(body, handler) {
    const reply = await this.request("subscribe", body);
    this.handlers.set(reply.subscription, handler);
    return reply.subscription;
  }

  close() {
    this.closed = true;
    this.socket.close();
  }

  unsubscribe(subscription) {
    if (!subscription) return;
    this.handlers.delete(subscription);
    this.request("unsubscribe", { subscription }).catch(() => {});
  }
}

const $ = (selector) => document.querySelector(selector);

// A POST with the headers the server asks of a signed-in page.
function post(path, body) {
  const csrf = document.cookie.split("; ").find((c) => c.startsWith("aiki_csrf="));
  const headers = { "content-type": "application/json" };
  if (csrf) headers["x-aiki-csrf"] = csrf.slice("aiki_csrf=".length);
  return fetch(path, { method: "POST", headers, body, credentials: "same-origin" });
}

// Who the server takes this browser for: the identity, or null when it needs a key.
async function whoami() {
  const response = await post("/api/v1/whoami", "{}");
  if (response.status === 401) return null;
  if (!response.ok) throw new Error(`whoami: HTTP ${response.status}`);
  return response.json();
}

function showSignIn(message = "") {
  for (const id of VIEWS) $(`#${id}`).hidden = true;
  $("header nav").hidden = true;
  $("#identity").hidden = $("#sign-out").hidden = true;
  setConnection("down", "signed out");
  $("#sign-in-view").hidden = false;
  $("#sign-in-result").textContent = message;
}

async function start() {
  let identity;
  try {
    identity = await whoami();
  } catch (error) {
    setConnection("down", "unreachable");
    showError(error);
    return;
  }
  if (identity === null) {
    showSignIn();
    return;
  }
  $("#sign-in-view").hidden = true;
  $("header nav").hidden = false;
  if (identity.authenticated) {
    const where = identity.namespace || "every namespace";
    $("#identity").textContent = `key ${identity.prefix} (${identity.name || "unnamed"}): ${identity.role}, ${where}`;
    $("#identity").hidden = $("#sign-out").hidden = false;
  }
  session = new Session(route);
}

function setConnection(state, text) {
  const badge = $("#connection");
  badge.dataset.state = state;
  badge.textContent = text;
}

function showError(error) {
  const box = $("#error");
  box.hidden = !error;
  box.textContent = error ? String(error.message || error) : "";
}

function when(text) {
  // ISO 8601 in the browser's timezone, to the millisecond (as the CLI prints times).
  if (!text) return "-";
  const moment = new Date(text);
  const two = (n) => String(n).padStart(2, "0");
  return `${moment.getFullYear()}-${two(moment.getMonth() + 1)}-${two(moment.getDate())} ` +
    `${two(moment.getHours())}:${two(moment.getMinutes())}:${two(moment.getSeconds())}.` +
    String(moment.getMilliseconds()).padStart(3, "0");
}

function shortAddress(address, seq) {
  // A task's address ends in the 64-character hash of its input: show its start; the
  // whole address is the cell's tooltip.
  const span = document.createElement("span");
  const cut = address.lastIndexOf(":");
  const key = address.slice(cut + 1);
  span.textContent = `${key.length > 12 ? key.slice(0, 10) + "…" : key}#${seq}`;
  span.title = `${address}#${seq}`;
  span.className = "address";
  return span;
}

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const ACTIONS = {
  // Which run actions make sense for which run (the server decides; these only spare a
  // click that would be refused).
  cancel_run: (run) => !TERMINAL.has(run.status),
  pause_run: (run) => !TERMINAL.has(run.status) && run.status !== "paused",
  resume_run: (run) => run.status === "paused",
  wakeup_run: (run) => run.status === "sleeping",
  requeue_run: (run) => run.status === "running" || run.status === "stalled",
  retry_run: (run) => run.status === "failed" && !run.parent_id,  // a child: via its root
};

function took(from, to) {
  // How long between two ISO times, for people: 850 ms, 12.3 s, 4 min 10 s, 2 h 5 min.
  if (!from || !to) return "-";
  const ms = new Date(to) - new Date(from);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 60) return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function cell(row, content, className) {
  const td = row.insertCell();
  if (content instanceof Node) td.append(content);
  else td.textContent = content === undefined || content === null ? "-" : String(content);
  if (className) td.className = className;
  return td;
}

function statusBadge(status) {
  const badge = document.createElement("span");
  badge.className = "status";
  badge.dataset.status = status;
  badge.textContent = status;
  return badge;
}

function runLink(id) {
  const link = document.createElement("a");
  link.href = `#/runs/${id}`;
  link.textContent = id;
  return link;
}

function json(value) {
  return value === undefined ? "-" : JSON.stringify(value, null, 1);
}

// -- views ----------------------------------------------------------------------------------

const state = { subscription: null, cursor: null, view: null, runId: null, refresh: null };

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function filters() {
  const workflow = $("#filter-workflow").value.trim();
  const status = $("#filter-status").value;
  const search = $("#filter-search").value.trim();
  return {
    workflow: workflow || null, statuses: status ? [status] : [],
    reference_id: search && !RUN_ID.test(search) ? search : null,
  };
}

function runRow(tbody, run, atTop) {
  const row = atTop ? tbody.insertRow(0) : tbody.insertRow();
  row.dataset.runId = run.id;
  cell(row, runLink(run.id));
  cell(row, `${run.workflow}@${run.version}`);
  cell(row, statusBadge(run.status), "run-status");
  cell(row, run.reference_id, "run-reference");
  cell(row, run.attempt);
  cell(row, when(run.created_at));
  cell(row, when(run.updated_at), "run-updated");
  return row;
}

async function showRuns(more = false) {
  const tbody = $("#runs tbody");
  const wanted = filters();
  const page = await session.request("list_runs", {
    ...wanted, limit: 50, cursor: more ? state.cursor : null,
  });
  if (!more) tbody.replaceChildren();
  for (const run of page.runs) runRow(tbody, run, false);
  state.cursor = page.next_cursor;
  $("#more").hidden = !page.next_cursor;
  if (!more) {
    state.subscription = await session.subscribe({ workflow: wanted.workflow }, (frame) => {
      if (frame.resync) {
        showRuns();
        return;
      }
      for (const update of frame.updates) applyToList(tbody, update, wanted);
    });
  }
}

function applyToList(tbody, update, wanted) {
  const row = tbody.querySelector(`tr[data-run-id="${update.run_id}"]`);
  const matches = (!wanted.statuses.length || wanted.statuses.includes(update.status)) &&
    !wanted.reference_id;  // (an update names no reference ID: the list is read again)
  if (row) {
    row.querySelector(".run-status").replaceChildren(statusBadge(update.status));
    row.querySelector(".run-updated").textContent = when(update.at);
  } else if (update.previous === null && matches) {
    runRow(tbody, {
      id: update.run_id, workflow: update.workflow, version: update.version,
      status: update.status, attempt: 1, created_at: update.at, updated_at: update.at,
      reference_id: null,
    }, true);
  }
}

async function showRun(runId) {
  const details = await session.request("describe_run", { run_id: runId });
  const run = details.run;
  $("#run-title").textContent = `${run.workflow}@${run.version} · ${run.id}`;
  const fields = $("#run-fields");
  fields.replaceChildren();
  const rows = [
    ["status", statusBadge(run.status)], ["namespace", run.namespace],
    ["revision", run.revision], ["attempt", run.attempt],
    ["reference", run.reference_id], ["parent", run.parent_id ? runLink(run.parent_id) : null],
    ["created", when(run.created_at)], ["updated", when(run.updated_at)],
    ["took", TERMINAL.has(run.status) ? took(run.created_at, run.updated_at) : null],
    ["input", json(run.input)],
  ];
  if (run.status === "completed") rows.push(["output", json(run.output)]);
  if (run.error) rows.push(["error", `${run.error.type}: ${run.error.message}`]);
  if (run.wake_at) rows.push(["wakes", when(run.wake_at)]);
  if (run.priority !== 2 || run.fairness_key) {
    const fair = run.fairness_key ? `, fairness key ${run.fairness_key} (weight ${run.fairness_weight})` : "";
    rows.push(["priority", `${run.priority}${fair}`]);
  }
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    if (value instanceof Node) dd.append(value);
    else dd.textContent = value === null || value === undefined ? "-" : String(value);
    if (name === "status") dd.id = "run-status";
    fields.append(dt, dd);
  }
  $("#run-unserved").hidden = !details.unserved;
  $("#run-unserved").textContent = details.unserved ? `Waiting: ${details.unserved}.` : "";
  $("#run-gate").hidden = !details.gate;
  $("#run-gate").textContent = details.gate
    ? `Waiting at the gate since ${when(details.gate.since)}: ${details.gate.summary}.` : "";
  const waits = $("#waits tbody");
  waits.replaceChildren();
  $("#waits").hidden = $("#waits-title").hidden = details.waits.length === 0;
  for (const wait of details.waits) {
    const row = waits.insertRow();
    cell(row, wait.kind);
    cell(row, wait.kind === "child" ? runLink(wait.key) : wait.key);
    cell(row, wait.seq);
    cell(row, when(wait.until));
    cell(row, when(wait.since));
  }
  $("#send-event").hidden = TERMINAL.has(run.status);
  const tasks = $("#tasks tbody");
  tasks.replaceChildren();
  for (const task of details.tasks) {
    const row = tasks.insertRow();
    cell(row, task.name);
    cell(row, shortAddress(task.address, task.seq));
    cell(row, statusBadge(task.state));
    cell(row, task.attempts);
    const result = document.createElement("div");
    result.textContent = task.error ? task.error.message : json(task.output);
    for (const failed of task.failed_attempts) {
      const line = document.createElement("div");
      line.className = "failure";
      line.textContent = `attempt ${failed.attempt} failed ${when(failed.at)}: ` +
        (failed.error ? `${failed.error.type}: ${failed.error.message}` : "?");
      result.append(line);
    }
    cell(row, result, "task-result");
    cell(row, task.state === "running" ? "-" : took(task.created_at, task.updated_at));
    cell(row, when(task.updated_at));
  }
  for (const button of document.querySelectorAll("#run-view .actions button")) {
    button.disabled = !ACTIONS[button.dataset.action](run);
  }
  const children = await session.request("list_runs", { parent_id: run.id, limit: 100 });
  const childRows = $("#children tbody");
  childRows.replaceChildren();
  $("#children").hidden = $("#children-title").hidden = children.runs.length === 0;
  for (const child of children.runs) runRow(childRows, child, false);
  const progress = $("#progress tbody");
  progress.replaceChildren();
  $("#progress").hidden = $("#progress-title").hidden = details.progress.length === 0;
  for (const report of details.progress) {
    const row = progress.insertRow();
    cell(row, report.task);
    cell(row, shortAddress(report.address, report.seq));
    cell(row, json(report.details), "progress-details");
    cell(row, when(report.at));
  }
  const timeline = $("#timeline tbody");
  timeline.replaceChildren();
  for (const step of details.timeline) {
    const row = timeline.insertRow();
    cell(row, when(step.at));
    cell(row, step.revision);
    cell(row, step.previous);
    cell(row, statusBadge(step.status));
    cell(row, step.reason);
    cell(row, step.worker_id);
  }
}

async function showWorkers() {
  const reply = await session.request("list_workers", { include_gone: false });
  const tbody = $("#workers tbody");
  tbody.replaceChildren();
  for (const worker of reply.workers) {
    const row = tbody.insertRow();
    cell(row, worker.id);
    cell(row, !worker.alive ? "gone" : worker.connected ? "alive" : "disconnected", "worker-state");
    cell(row, `${worker.active_runs}/${worker.concurrency}`);
    cell(row, when(worker.last_seen_at));
    cell(row, worker.versions.join(", "));
  }
}

async function showLimits() {
  const reply = await session.request("list_limits", {});
  const tbody = $("#limits tbody");
  tbody.replaceChildren();
  const bound = (value) => (value === null || value === undefined ? "-" : String(value));
  for (const limit of reply.limits) {
    const row = tbody.insertRow();
    row.dataset.limit = limit.name;
    cell(row, limit.name);
    cell(row, limit.per_key, "limit-per-key");
    cell(row, bound(limit.total));
    cell(row, `${limit.declared_per_key} / ${bound(limit.declared_total)}`);
    cell(row, limit.holding, "limit-holding");
    cell(row, limit.waiting, "limit-waiting");
  }
}

async function showVersions() {
  const reply = await session.request("list_versions", {});
  const tbody = $("#versions tbody");
  tbody.replaceChildren();
  for (const version of reply.versions) {
    const row = tbody.insertRow();
    row.dataset.version = `${version.workflow}@${version.version}`;
    row.classList.toggle("unserved", Boolean(version.unserved_since));
    cell(row, `${version.workflow}@${version.version}`);
    const open = Object.entries(version.open_runs).sort()
      .map(([status, count]) => `${status} ${count}`).join(", ");
    cell(row, open || "-", "version-open");
    cell(row, version.workers.join(", ") || "-", "version-workers");
    cell(row, version.unserved_since ? when(version.unserved_since) : "-", "version-unserved");
  }
}

function scheduleButton(schedule, op, label) {
  const button = document.createElement("button");
  button.textContent = label;
  button.dataset.action = op;
  button.addEventListener("click", async () => {
    try {
      const reply = await session.request(op, { schedule_id: schedule.id });
      $("#schedule-result").textContent = `${label}: ${reply.id} is ${reply.status}`;
      await showSchedules();
    } catch (error) {
      $("#schedule-result").textContent = `${label} refused: ${error.message}`;
    }
  });
  return button;
}

async function showSchedules() {
  const reply = await session.request("list_schedules", { limit: 200 });
  const tbody = $("#schedules tbody");
  tbody.replaceChildren();
  for (const schedule of reply.schedules) {
    const row = tbody.insertRow();
    row.dataset.scheduleId = schedule.id;
    cell(row, schedule.reference_id || schedule.id);
    cell(row, `${schedule.workflow}@${schedule.version}`);
    cell(row, statusBadge(schedule.status));
    cell(row, schedule.description);
    cell(row, `${schedule.policy.overlap} / ${schedule.policy.catchup}`);
    cell(row, when(schedule.next_fire_at));
    cell(row, schedule.fired, "fired");
    cell(row, schedule.skipped, "skipped");
    cell(row, when(schedule.last_fired_at));
    const actions = document.createElement("span");
    actions.className = "actions";
    if (schedule.status === "active") actions.append(scheduleButton(schedule, "pause_schedule", "Pause"));
    if (schedule.status === "paused") actions.append(scheduleButton(schedule, "resume_schedule", "Resume"));
    if (schedule.status !== "deactivated") {
      actions.append(scheduleButton(schedule, "deactivate_schedule", "Deactivate"));
    }
    cell(row, actions);
  }
}

async function route() {
  session.unsubscribe(state.subscription);
  state.subscription = null;
  showError(null);
  const hash = location.hash || "#/runs";
  const match = hash.match(/^#\/runs\/(.+)$/);
  for (const id of VIEWS) $(`#${id}`).hidden = true;
  $("#nav-runs").classList.toggle("active", hash.startsWith("#/runs"));
  $("#nav-schedules").classList.toggle("active", hash === "#/schedules");
  $("#nav-workers").classList.toggle("active", hash === "#/workers");
  $("#nav-versions").classList.toggle("active", hash === "#/versions");
  $("#nav-limits").classList.toggle("active", hash === "#/limits");
  try {
    if (match) {
      state.runId = decodeURIComponent(match[1]);
      $("#action-result").textContent = $("#event-result").textContent = "";
      $("#run-view").hidden = false;
      await showRun(state.runId);
      const refresh = debounce(() => showRun(state.runId).catch(showError), 50);
      state.subscription = await session.subscribe(
        { run_ids: [state.runId], progress: true }, refresh);
    } else if (hash === "#/schedules") {
      $("#schedules-view").hidden = false;
      $("#schedule-result").textContent = "";
      await showSchedules();
      // A firing starts runs: their updates refresh the counts (no polling).
      const refresh = debounce(() => showSchedules().catch(showError), 200);
      state.subscription = await session.subscribe({}, refresh);
    } else if (hash === "#/versions") {
      $("#versions-view").hidden = false;
      await showVersions();
      const refresh = debounce(() => showVersions().catch(showError), 200);
      state.subscription = await session.subscribe({}, refresh);
    } else if (hash === "#/limits") {
      $("#limits-view").hidden = false;
      await showLimits();
      const refresh = debounce(() => showLimits().catch(showError), 200);
      state.subscription = await session.subscribe({}, refresh);
    } else if (hash === "#/workers") {
      $("#workers-view").hidden = false;
      await showWorkers();
      const refresh = debounce(() => showWorkers().catch(showError), 200);
      state.subscription = await session.subscribe({}, refresh);
    } else {
      $("#runs-view").hidden = false;
      await showRuns();
    }
  } catch (error) {
    showError(error);
  }
}

for (const status of STATUSES) {
  const option = document.createElement("option");
  option.value = option.textContent = status;
  $("#filter-status").append(option);
}
$("#filters").addEventListener("submit", (event) => {
  event.preventDefault();
  const search = $("#filter-search").value.trim();
  if (RUN_ID.test(search)) location.hash = `#/runs/${search}`;  // a run ID: that run
  else route();  // a reference ID (or none): the runs started with it
});
$("#send-event").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = $("#event-result");
  let payload;
  try {
    payload = JSON.parse($("#event-payload").value || "null");
  } catch (error) {
    result.textContent = `the payload is not JSON: ${error.message}`;
    return;
  }
  const body = { run_id: state.runId, name: $("#event-name").value.trim(), payload };
  const reference = $("#event-reference").value.trim();
  if (reference) body.reference_id = reference;
  try {
    const sent = await session.request("send_event", body);
    result.textContent = `sent ${sent.name} #${sent.seq}${sent.duplicate ? " (duplicate: ignored)" : ""}`;
  } catch (error) {
    result.textContent = `refused: ${error.message}`;
  }
});
$("#more").addEventListener("click", () => showRuns(true).catch(showError));
for (const button of document.querySelectorAll("#run-view .actions button")) {
  button.addEventListener("click", async () => {
    const op = button.dataset.action;
    const body = { run_id: state.runId };
    if (op === "cancel_run" || op === "pause_run") body.reason = "from the dashboard";
    try {
      const reply = await session.request(op, body);
      let said = `${button.textContent}: the run is ${reply.status} now`;
      if (reply.sleeps !== undefined) said = `${button.textContent}: ${reply.sleeps} sleep(s) cut short`;
      if (reply.affected !== undefined && op === "retry_run") {
        const children = reply.affected.length - 1;
        said = `${button.textContent}: the run is queued again` +
          (children ? `, with ${children} failed child run(s)` : "");
      }
      $("#action-result").textContent = said;
    } catch (error) {
      $("#action-result").textContent = `${button.textContent} refused: ${error.message}`;
    }
  });
}
$("#sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#api-key");
  const body = JSON.stringify({ key: input.value.trim() });
  input.value = "";  // the key is the cookie's now, not the page's
  const response = await post("/auth/sign-in", body);
  if (!response.ok) {
    const reply = await response.json().catch(() => ({}));
    $("#sign-in-result").textContent = (reply.error && reply.error.message) || `HTTP ${response.status}`;
    return;
  }
  await start();
});
$("#sign-out").addEventListener("click", async () => {
  if (session) session.close();
  session = null;
  await post("/auth/sign-out", "{}");
  showSignIn("signed out");
});
window.addEventListener("hashchange", () => { if (session) route(); });
let session = null;
start();
