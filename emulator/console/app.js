// The emulator's browser console: connect with a token, send actions, watch requests and
// notifications. It talks to the WebSocket API through @streamer/client (the package in
// clients/typescript, its built ES modules vendored in vendor/streamer-client/), and to
// the HTTP side's /health, /api/actions, /api/connections and /api/dev-token.
import { StreamerClient, StreamerConnectionError } from "./vendor/streamer-client/index.js";

const CONNECTIONS_POLL_MS = 2000;
const LOG_LIMIT = 200;
const NOTIFICATION_LIMIT = 50;
const TERMINAL = new Set(["completed", "failed", "cancelled", "answered"]);

const $ = (id) => document.getElementById(id);
const state = {
  client: null,
  actions: new Map(),
  requests: new Map(),
  connectionId: null,
  notifications: 0,
};

// -- identifiers and time -------------------------------------------------------------

function newId() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") {
    return window.crypto.randomUUID().replaceAll("-", "");
  }
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function isoDate(date) {
  return date.toISOString().slice(0, 10);
}

function daysAgo(days) {
  const date = new Date();
  date.setUTCDate(date.getUTCDate() - days);
  return date;
}

function shortTime(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text || "" : date.toLocaleTimeString();
}

// -- JSON Schema → an example payload ------------------------------------------------

function resolve(schema, root) {
  let current = schema || {};
  for (let depth = 0; current.$ref && depth < 20; depth += 1) {
    const path = current.$ref.replace(/^#\//, "").split("/");
    current = path.reduce((node, key) => (node ? node[key] : undefined), root) || {};
  }
  if (Array.isArray(current.allOf) && current.allOf.length === 1) {
    return { ...resolve(current.allOf[0], root), ...current, allOf: undefined };
  }
  const union = current.anyOf || current.oneOf;
  if (Array.isArray(union)) {
    const choice = union.find((option) => option.type !== "null") || union[0];
    return { ...resolve(choice, root), default: current.default, title: current.title };
  }
  return current;
}

function exampleString(name, schema) {
  const key = name.toLowerCase();
  if (schema.format === "date") {
    if (key.includes("start") || key.includes("from")) return isoDate(daysAgo(90));
    return isoDate(new Date());
  }
  if (schema.format === "date-time") return new Date().toISOString();
  if (schema.format === "email" || key.includes("email")) return "ada@example.com";
  if (schema.format === "uri" || key.includes("url")) return "https://example.com";
  if (key === "name" || key.endsWith("_name")) return "Ada Lovelace";
  if (key.includes("request_id")) return "";
  let text = key ? `example ${key.replaceAll("_", " ")}` : "example";
  if (schema.maxLength && text.length > schema.maxLength) text = text.slice(0, schema.maxLength);
  if (schema.minLength && text.length < schema.minLength) text = text.padEnd(schema.minLength, "x");
  return text;
}

function exampleNumber(name, schema) {
  const low = schema.minimum ?? (schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + 1 : undefined);
  const high = schema.maximum ?? (schema.exclusiveMaximum !== undefined ? schema.exclusiveMaximum - 1 : undefined);
  let value = name.toLowerCase().includes("second") ? 3 : 10;
  if (low !== undefined && value < low) value = low;
  if (high !== undefined && value > high) value = high;
  return schema.type === "integer" ? Math.round(value) : value;
}

function example(schema, root, name = "", depth = 0) {
  const node = resolve(schema, root);
  if (node.default !== undefined && node.default !== null) return node.default;
  if (Array.isArray(node.examples) && node.examples.length) return node.examples[0];
  if (node.const !== undefined) return node.const;
  if (Array.isArray(node.enum) && node.enum.length) return node.enum[0];
  if (depth > 6) return null;
  const type = Array.isArray(node.type) ? node.type.find((t) => t !== "null") : node.type;
  switch (type) {
    case "object":
    case undefined: {
      if (!node.properties) return type === "object" || depth === 0 ? {} : "example";
      const body = {};
      for (const [key, child] of Object.entries(node.properties)) {
        body[key] = example(child, root, key, depth + 1);
      }
      return body;
    }
    case "array": {
      const count = Math.max(node.minItems || 0, 3);
      const limit = node.maxItems ? Math.min(count, node.maxItems) : count;
      const items = [];
      for (let i = 1; i <= limit; i += 1) {
        const item = node.items ? resolve(node.items, root) : {};
        if (!item.type && !item.properties && !item.enum) {
          items.push(`item-${i}`);
        } else if (item.type === "object" && !item.properties) {
          items.push({ id: i, value: `item-${i}` });
        } else {
          items.push(example(item, root, name.replace(/s$/, ""), depth + 1));
        }
      }
      return items;
    }
    case "string":
      return exampleString(name, node);
    case "integer":
    case "number":
      return exampleNumber(name, node);
    case "boolean":
      return true;
    default:
      return null;
  }
}

function templateFor(action) {
  const schema = action.payload_schema || { type: "object" };
  return example(schema, schema);
}

// -- the message log -------------------------------------------------------------------

function log(direction, text) {
  const list = $("log");
  const item = document.createElement("li");
  item.className = direction === "out" ? "out" : "in";
  const arrow = document.createElement("span");
  arrow.className = "arrow";
  arrow.textContent = direction === "out" ? "→" : "←";
  arrow.setAttribute("aria-label", direction === "out" ? "sent" : "received");
  const body = document.createElement("code");
  body.textContent = text;
  item.append(arrow, body);
  list.prepend(item);
  while (list.children.length > LOG_LIMIT) list.lastChild.remove();
  $("log-count").textContent = String(list.children.length);
}

// -- notifications -------------------------------------------------------------------

function showNotification(notification) {
  const list = $("notifications");
  const item = document.createElement("li");
  item.className = "notification";
  const head = document.createElement("div");
  head.className = "notification-head";
  const topic = document.createElement("span");
  topic.className = "topic";
  topic.textContent = notification.topic ?? "(no topic)";
  const when = document.createElement("span");
  when.className = "muted small";
  when.textContent = shortTime(notification.timestamp);
  head.append(topic, when);
  const data = document.createElement("pre");
  data.className = "notification-data";
  data.textContent = JSON.stringify(notification.data, null, 2);
  item.append(head, data);
  list.prepend(item);
  while (list.children.length > NOTIFICATION_LIMIT) list.lastChild.remove();
  state.notifications += 1;
  $("notifications-count").textContent = String(state.notifications);
  $("notifications-empty").hidden = true;
}

// -- connection ------------------------------------------------------------------------

function setConnectionState(kind, text) {
  const pill = $("connection-state");
  pill.className = `pill pill-${kind}`;
  pill.textContent = text;
  const usable = kind === "open" || kind === "connecting";
  $("send").disabled = kind !== "open";
  $("disconnect").disabled = !usable;
  $("connect").disabled = usable;
}

function showConnectionId(connectionId) {
  state.connectionId = connectionId || null;
  $("connection-id").textContent = connectionId ? `Connection id: ${connectionId}` : "";
  pollConnections();
}

async function learnConnectionId(client) {
  try {
    const connectionId = await client.ping();
    if (state.client === client) showConnectionId(connectionId);
  } catch (error) {
    // The socket went away again; the next reconnect asks once more.
  }
}

async function connect() {
  if (state.client) return;
  const url = $("ws-url").value.trim();
  try {
    new URL(url);
  } catch (error) {
    setConnectionState("error", "Invalid WebSocket URL");
    return;
  }
  const token = $("token").value.trim();
  let refused = false;
  const client = new StreamerClient(url, {
    token: token || undefined,
    onFrame: log,
    onStateChange: (next) => {
      if (state.client !== client) return;
      if (next === "connecting") setConnectionState("connecting", "Connecting…");
      else if (next === "reconnecting") {
        setConnectionState("connecting", "Reconnecting…");
        showConnectionId(null);
      } else if (next === "open") {
        setConnectionState("open", "Connected");
        void learnConnectionId(client);
      } else if (next === "closed" && !refused) {
        state.client = null;
        setConnectionState("idle", "Disconnected");
        showConnectionId(null);
      }
    },
  });
  client.onNotification(showNotification);
  state.client = client;
  try {
    await client.connect();
  } catch (error) {
    refused = true;
    state.client = null;
    // A browser never sees the handshake's HTTP status: 401, 403 and 429 look alike.
    setConnectionState("error", "Refused: check the token (HTTP 401/403/429)");
    return;
  }
  resumeDetached(client);
}

async function disconnect() {
  const client = state.client;
  if (!client) return;
  state.client = null;
  setConnectionState("idle", "Disconnected");
  showConnectionId(null);
  await client.close();
}

// A request cut off by Disconnect is followed again on the next connection: its
// progress and outcome reach the new socket through `subscribe`.
function resumeDetached(client) {
  for (const request of state.requests.values()) {
    if (request.detached) follow(client, request);
  }
}

function follow(client, request) {
  request.detached = false;
  update(request, { status: request.percentage > 0 ? "running" : "queued" });
  client
    .subscribe(request.id, { onProgress: (progress) => onProgress(request, progress), signal: request.abort.signal })
    .then((result) => complete(request, result), (error) => settleError(request, error));
}

// -- requests --------------------------------------------------------------------------

function addRequest(id, action, payload) {
  const node = $("request-template").content.firstElementChild.cloneNode(true);
  node.dataset.requestId = id;
  node.querySelector(".action-name").textContent = action;
  node.querySelector(".request-id").textContent = id;
  const bar = node.querySelector("progress");
  bar.setAttribute("aria-label", `Progress of ${action} ${id}`);
  const request = {
    id,
    action,
    payload,
    node,
    async: false,
    detached: false,
    status: "sent",
    percentage: 0,
    abort: new AbortController(),
    startedAt: performance.now(),
  };
  node.querySelector(".cancel").addEventListener("click", () => request.abort.abort());
  $("requests").prepend(node);
  $("requests-empty").hidden = true;
  state.requests.set(id, request);
  render(request);
  return request;
}

function onProgress(request, progress) {
  update(request, { status: "running", percentage: progress.percentage, message: progress.message });
}

function complete(request, result) {
  if (request.async) {
    update(request, { percentage: 100 });
    finish(request, "completed", result);
  } else {
    finish(request, "answered", result);
  }
}

function settleError(request, error) {
  if (error instanceof StreamerConnectionError && request.async && !TERMINAL.has(request.status)) {
    // Disconnected while it runs: it goes on on the server; follow it on reconnect.
    request.detached = true;
    update(request, { status: "detached" });
    return;
  }
  fail(request, { code: error.code || "ERROR", message: error.message, details: error.details });
}

function update(request, changes) {
  if (TERMINAL.has(request.status)) return;
  if (changes.status) request.status = changes.status;
  if (typeof changes.percentage === "number" && changes.percentage >= request.percentage) {
    request.percentage = Math.min(100, changes.percentage);
  }
  if (typeof changes.message === "string" && changes.message) {
    request.message = changes.message;
  }
  render(request);
}

function finish(request, status, body) {
  if (TERMINAL.has(request.status)) return;
  request.status = status;
  if (status === "answered") request.percentage = 100;
  request.outcome = JSON.stringify(body, null, 2);
  request.isError = false;
  render(request);
}

function fail(request, error) {
  if (TERMINAL.has(request.status)) return;
  request.status = error.code === "CANCELLED" ? "cancelled" : "failed";
  let text = `${error.code || "ERROR"}: ${error.message || ""}`;
  if (error.details) text += `\n${JSON.stringify(error.details, null, 2)}`;
  request.outcome = text;
  request.isError = true;
  render(request);
}

function render(request) {
  const { node } = request;
  node.dataset.status = request.status;
  const badge = node.querySelector(".badge");
  badge.textContent = request.status;
  badge.className = `badge badge-${request.status}`;
  const bar = node.querySelector("progress");
  bar.value = request.percentage;
  bar.setAttribute("aria-valuetext", `${Math.round(request.percentage)}%`);
  node.querySelector(".percent").textContent = `${Math.round(request.percentage)}%`;
  node.querySelector(".progress-message").textContent = request.message || "";
  const outcome = node.querySelector(".outcome");
  if (request.outcome !== undefined) {
    outcome.hidden = false;
    outcome.textContent = request.outcome;
    outcome.classList.toggle("is-error", Boolean(request.isError));
    outcome.setAttribute("aria-label", request.isError ? "Error" : "Result");
  }
  const done = TERMINAL.has(request.status);
  node.querySelector(".cancel").hidden = !request.async || done || request.detached;
  // A sync answer or a refusal before any progress has no bar to show.
  node.classList.toggle("is-sync", done && !request.async);
  if (done && request.finishedAt === undefined) request.finishedAt = performance.now();
  node.querySelector(".elapsed").textContent = done
    ? `${((request.finishedAt - request.startedAt) / 1000).toFixed(2)} s`
    : "";
}

function clearFinished() {
  for (const [id, request] of state.requests) {
    if (TERMINAL.has(request.status)) {
      request.node.remove();
      state.requests.delete(id);
    }
  }
  $("requests-empty").hidden = $("requests").children.length > 0;
}

// -- the send form ---------------------------------------------------------------------

function selectedAction() {
  return state.actions.get($("action").value);
}

function showTemplate() {
  const action = selectedAction();
  if (!action) return;
  $("payload").value = JSON.stringify(templateFor(action), null, 2);
  $("payload-error").textContent = "";
  const mode = action.builtin ? "built-in" : action.mode;
  const info = $("action-info");
  info.replaceChildren(document.createTextNode(mode));
  if (action.description) {
    info.append(document.createTextNode(" — "));
    // `name` in a description reads as code.
    action.description.split("`").forEach((part, index) => {
      if (index % 2 === 1) {
        const code = document.createElement("code");
        code.textContent = part;
        info.append(code);
      } else {
        info.append(document.createTextNode(part));
      }
    });
  }
}

function onSend(event) {
  event.preventDefault();
  const action = $("action").value;
  let payload;
  try {
    payload = JSON.parse($("payload").value || "{}");
  } catch (error) {
    $("payload-error").textContent = `Not JSON: ${error.message}`;
    return;
  }
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    $("payload-error").textContent = "The payload must be a JSON object.";
    return;
  }
  $("payload-error").textContent = "";
  const client = state.client;
  const request = addRequest(newId(), action, payload);
  if (!client) {
    fail(request, { code: "NOT_CONNECTED", message: "not connected" });
    return;
  }
  let sending;
  try {
    sending = client.request(action, payload, {
      requestId: request.id,
      signal: request.abort.signal,
      onAcknowledged: (ack) => {
        request.async = true;
        update(request, { status: ack.status === "queued" ? "queued" : ack.status.toLowerCase() });
      },
      onProgress: (progress) => onProgress(request, progress),
    });
  } catch (error) {
    fail(request, { code: error.code || "ERROR", message: error.message, details: error.details });
    return;
  }
  sending.then((result) => complete(request, result), (error) => settleError(request, error));
}

// -- the HTTP side ---------------------------------------------------------------------

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function loadDefaults() {
  let wsUrl = `ws://${window.location.hostname || "localhost"}:3001`;
  try {
    const health = await getJson("/health");
    if (health.ws_url) {
      const advertised = new URL(health.ws_url);
      advertised.hostname = window.location.hostname || advertised.hostname;
      wsUrl = advertised.toString().replace(/\/$/, "");
    }
  } catch (error) {
    // Served from elsewhere: keep the default.
  }
  $("ws-url").value = wsUrl;
  try {
    const dev = await getJson("/api/dev-token");
    $("token").value = dev.token;
    $("token-hint").textContent = `dev token for ${dev.sub} in ${dev.tenant_id}`;
  } catch (error) {
    $("token-hint").textContent = "paste a JWT from your identity provider";
  }
}

async function loadActions() {
  const select = $("action");
  try {
    const body = await getJson("/api/actions");
    const actions = Array.isArray(body) ? body : body.actions || [];
    const groups = { app: document.createElement("optgroup"), builtin: document.createElement("optgroup") };
    groups.app.label = body.app ? `${body.app} actions` : "Actions";
    groups.builtin.label = "Built-in";
    for (const action of actions) {
      state.actions.set(action.name, action);
      const option = document.createElement("option");
      option.value = action.name;
      option.textContent = action.builtin ? action.name : `${action.name} (${action.mode})`;
      (action.builtin ? groups.builtin : groups.app).append(option);
    }
    select.append(groups.app, groups.builtin);
    if (state.actions.has("echo")) select.value = "echo";
    showTemplate();
  } catch (error) {
    $("action-info").textContent = `Could not load the actions: ${error.message}`;
  }
}

async function pollConnections() {
  try {
    const body = await getJson("/api/connections");
    const connections = Array.isArray(body) ? body : body.connections || [];
    const rows = connections.map((c) => {
      const row = document.createElement("tr");
      const owner = [c.user, c.tenant].filter(Boolean).join(" @ ");
      for (const value of [c.id, owner, shortTime(c.connectedAt)]) {
        const cell = document.createElement("td");
        cell.textContent = value || "";
        cell.title = value || "";
        row.append(cell);
      }
      row.querySelector("td").className = "mono";
      if (c.id && c.id === state.connectionId) {
        row.classList.add("mine");
        const mark = document.createElement("span");
        mark.className = "sr-only";
        mark.textContent = " (this console)";
        row.querySelector("td").append(mark);
        row.title = "This console's connection";
      }
      return row;
    });
    if (!rows.length) {
      const row = document.createElement("tr");
      const cell = document.createElement("td");
      cell.colSpan = 3;
      cell.className = "muted";
      cell.textContent = "No open connections.";
      row.append(cell);
      rows.push(row);
    }
    $("connections").replaceChildren(...rows);
    $("connections-count").textContent = String(connections.length);
  } catch (error) {
    $("connections-count").textContent = "?";
  }
}

// -- start -----------------------------------------------------------------------------

function start() {
  $("connect-form").addEventListener("submit", (event) => {
    event.preventDefault();
    void connect();
  });
  $("disconnect").addEventListener("click", () => void disconnect());
  $("send-form").addEventListener("submit", onSend);
  $("action").addEventListener("change", showTemplate);
  $("reset-payload").addEventListener("click", showTemplate);
  $("clear-requests").addEventListener("click", clearFinished);
  setConnectionState("idle", "Disconnected");
  Promise.all([loadDefaults(), loadActions()]).finally(() => {
    document.body.dataset.ready = "true";
  });
  pollConnections();
  window.setInterval(pollConnections, CONNECTIONS_POLL_MS);
}

window.streamerConsole = { templateFor, example, state };
start();
