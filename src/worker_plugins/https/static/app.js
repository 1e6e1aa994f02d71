// The worker console: the jobs the caller may read, and one job's record and live output.
//
// Everything goes through the JSON API under /v1/ on this origin (the page's CSP allows no
// other). State-changing calls send JSON with the X-Worker-Client header: the server refuses
// a POST that cannot prove it came from here. Text is always inserted as text, never as HTML.
"use strict";

const LIST_POLL_MS = 2000;
const PAGE_SIZE = 50;
const OUTPUT_MAX_CHARS = 2 * 1024 * 1024; // older output is trimmed from the page beyond this

const $ = (id) => document.getElementById(id);

// ---- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    init.headers["X-Worker-Client"] = "console";
    init.body = JSON.stringify(body || {});
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// ---- small helpers ---------------------------------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function stateName(state) {
  return (state || "JOB_STATE_UNSPECIFIED").replace("JOB_STATE_", "").toLowerCase();
}

function shortId(id) {
  return id.slice(0, 12);
}

function age(seconds) {
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function exitText(job) {
  if (job.exitCode !== undefined) return String(job.exitCode);
  if (job.signal !== undefined) return `signal ${job.signal}`;
  return "";
}

function when(seconds) {
  return seconds === undefined ? "" : new Date(seconds * 1000).toLocaleString();
}

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = error.message || String(error);
  box.hidden = false;
}

function stateBadge(node, job) {
  const name = stateName(job.state);
  node.textContent = job.endReason && job.endReason !== "END_REASON_UNSPECIFIED"
    ? `${name} (${job.endReason.replace("END_REASON_", "").toLowerCase()})`
    : name;
  node.className = `state state-${name}`;
  node.dataset.state = name;
}

// ---- the list of jobs ------------------------------------------------------------------------

const list = {
  tokens: [""], // page tokens: tokens[i] starts page i
  page: 0,
  next: "",
  timer: null,
};

function listQuery() {
  const params = new URLSearchParams();
  const state = $("filter-state").value;
  if (state) params.append("state", state);
  const owner = $("filter-owner").value.trim();
  if (owner) params.set("owner", owner);
  const name = $("filter-name").value.trim();
  if (name) params.set("name", name);
  const label = $("filter-label").value.trim();
  if (label) params.append("label", label);
  params.set("page_size", String(PAGE_SIZE));
  const token = list.tokens[list.page];
  if (token) params.set("page_token", token);
  return params;
}

function jobRow(job) {
  const row = el("tr");
  row.dataset.jobId = job.id;
  const link = el("a", shortId(job.id));
  link.href = `#/jobs/${job.id}`;
  const idCell = el("td");
  idCell.appendChild(el("code")).appendChild(link);
  row.appendChild(idCell);
  const stateCell = el("td");
  stateBadge(stateCell.appendChild(el("span")), job);
  row.appendChild(stateCell);
  row.appendChild(el("td", job.owner));
  row.appendChild(el("td", (job.spec && job.spec.name) || ""));
  const labels = el("td");
  for (const [key, value] of Object.entries((job.spec && job.spec.labels) || {})) {
    labels.appendChild(el("span", `${key}=${value}`, "label"));
  }
  row.appendChild(labels);
  row.appendChild(el("td", exitText(job)));
  row.appendChild(el("td", age(job.createdAt)));
  return row;
}

async function loadList() {
  try {
    const data = await api("GET", `/v1/jobs?${listQuery()}`);
    const body = $("jobs").tBodies[0];
    body.replaceChildren(...data.jobs.map(jobRow));
    $("list-empty").hidden = data.jobs.length > 0;
    list.next = data.nextPageToken || "";
    $("page-older").disabled = !list.next;
    $("page-newer").disabled = list.page === 0;
    $("page-number").textContent = `page ${list.page + 1}`;
    showError(null);
  } catch (error) {
    showError(error);
  }
}

function startList() {
  stopList();
  loadList();
  // Polling keeps the page current: new jobs appear, states and exits change in place.
  list.timer = setInterval(loadList, LIST_POLL_MS);
}

function stopList() {
  if (list.timer !== null) clearInterval(list.timer);
  list.timer = null;
}

// ---- one job ---------------------------------------------------------------------------------

const view = {
  id: null,
  job: null,
  events: null,
  output: null,
  decoders: {},
  chars: 0,
};

function closeStreams() {
  for (const source of [view.events, view.output]) if (source) source.close();
  view.events = view.output = null;
}

function renderRecord(job) {
  view.job = job;
  $("job-id").textContent = job.id;
  stateBadge($("job-state"), job);
  const spec = job.spec || {};
  const fields = [
    ["owner", job.owner],
    ["name", spec.name],
    ["command", [spec.command, ...(spec.args || [])].join(" ")],
    ["labels", Object.entries(spec.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")],
    ["created", when(job.createdAt)],
    ["started", when(job.startedAt)],
    ["ended", when(job.endedAt)],
    ["exit", exitText(job)],
    ["message", job.message],
  ];
  const record = $("job-record");
  record.replaceChildren();
  for (const [name, value] of fields) {
    if (value === undefined || value === null || value === "") continue;
    record.appendChild(el("dt", name));
    const dd = record.appendChild(el("dd", value));
    dd.dataset.field = name;
  }
  const state = stateName(job.state);
  const active = ["running", "paused", "stopping", "queued", "held", "pending"].includes(state);
  $("action-stop").disabled = !active || state === "stopping";
  $("action-pause").disabled = state !== "running";
  $("action-resume").disabled = state !== "paused";
}

function appendOutput(stream, bytes) {
  if (!view.decoders[stream]) view.decoders[stream] = new TextDecoder("utf-8");
  const text = view.decoders[stream].decode(bytes, { stream: true });
  if (!text) return;
  const pre = $("output");
  const span = el("span", text, stream === "STREAM_STDERR" ? "stderr" : "stdout");
  pre.appendChild(span);
  view.chars += text.length;
  while (view.chars > OUTPUT_MAX_CHARS && pre.firstChild) {
    view.chars -= pre.firstChild.textContent.length;
    pre.removeChild(pre.firstChild);
  }
  pre.scrollTop = pre.scrollHeight;
}

function decodeBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function followOutput(id) {
  // The browser resumes a broken stream by itself with Last-Event-ID (each event's id is the
  // position after its bytes): nothing is repeated or lost.
  const source = new EventSource(`/v1/jobs/${encodeURIComponent(id)}/output?follow=true`);
  view.output = source;
  $("output-status").textContent = "(following)";
  source.addEventListener("output", (event) => {
    const chunk = JSON.parse(event.data);
    appendOutput(chunk.stream, decodeBase64(chunk.data));
  });
  source.addEventListener("end", () => {
    source.close();
    $("output-status").textContent = "(complete)";
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) $("output-status").textContent = "(disconnected)";
    else $("output-status").textContent = "(reconnecting)";
  };
}

function followEvents(id) {
  const source = new EventSource(`/v1/jobs/${encodeURIComponent(id)}/events`);
  view.events = source;
  source.addEventListener("job", (event) => {
    if (view.id === id) renderRecord(JSON.parse(event.data));
  });
  source.addEventListener("end", () => source.close());
}

async function openJob(id) {
  closeStreams();
  view.id = id;
  view.decoders = {};
  view.chars = 0;
  $("output").replaceChildren();
  $("job-record").replaceChildren();
  $("job-id").textContent = id;
  $("job-state").textContent = "";
  $("output-status").textContent = "";
  try {
    const data = await api("GET", `/v1/jobs/${encodeURIComponent(id)}`);
    if (view.id !== id) return;
    renderRecord(data.job);
    showError(null);
    followEvents(data.job.id);
    followOutput(data.job.id);
  } catch (error) {
    showError(error.status === 404 ? new Error(`No such job: ${id}`) : error);
  }
}

async function act(action) {
  if (!view.job) return;
  const id = view.job.id;
  const button = $(`action-${action}`);
  button.disabled = true;
  try {
    const data = await api("POST", `/v1/jobs/${encodeURIComponent(id)}/${action}`, {});
    if (view.id === id) renderRecord(data.job);
    showError(null);
  } catch (error) {
    showError(error);
    if (view.job) renderRecord(view.job);
  }
}

// ---- routing ---------------------------------------------------------------------------------

function route() {
  const match = /^#\/jobs\/([^/]+)$/.exec(location.hash);
  showError(null);
  if (match) {
    stopList();
    $("list-view").hidden = true;
    $("job-view").hidden = false;
    openJob(decodeURIComponent(match[1]));
  } else {
    closeStreams();
    view.id = view.job = null;
    $("job-view").hidden = true;
    $("list-view").hidden = false;
    startList();
  }
}

function init() {
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    list.tokens = [""];
    list.page = 0;
    loadList();
  });
  $("page-older").addEventListener("click", () => {
    if (!list.next) return;
    list.tokens[list.page + 1] = list.next;
    list.page += 1;
    loadList();
  });
  $("page-newer").addEventListener("click", () => {
    if (list.page === 0) return;
    list.page -= 1;
    loadList();
  });
  for (const action of ["stop", "pause", "resume"]) {
    $(`action-${action}`).addEventListener("click", () => act(action));
  }
  window.addEventListener("hashchange", route);
  api("GET", "/v1/me")
    .then((me) => { $("whoami").textContent = `signed in as ${me.name}`; })
    .catch(showError);
  route();
}

document.addEventListener("DOMContentLoaded", init);
