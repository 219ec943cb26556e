// The emulator's browser console: connect with a token, send actions, watch requests.
// Plain JavaScript, no build step. Talks to the WebSocket API and the HTTP side's
// /health, /api/actions, /api/connections and /api/dev-token.
"use strict";

(() => {
  const HEARTBEAT_MS = 5 * 60 * 1000; // half of API Gateway's 10-minute idle timeout
  const CONNECTIONS_POLL_MS = 2000;
  const LOG_LIMIT = 200;
  const TERMINAL = new Set(["completed", "failed", "cancelled", "answered"]);

  const $ = (id) => document.getElementById(id);
  const state = {
    socket: null,
    actions: new Map(),
    requests: new Map(),
    heartbeat: null,
    pings: new Set(),
    connectionId: null,
  };

  // -- identifiers and time -----------------------------------------------------------

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

  // -- the message log -----------------------------------------------------------------

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

  // -- connection ----------------------------------------------------------------------

  function setConnectionState(kind, text) {
    const pill = $("connection-state");
    pill.className = `pill pill-${kind}`;
    pill.textContent = text;
    const open = kind === "open";
    $("send").disabled = !open;
    $("disconnect").disabled = !(open || kind === "connecting");
    $("connect").disabled = open || kind === "connecting";
  }

  function socketUrl() {
    const url = new URL($("ws-url").value.trim());
    const token = $("token").value.trim();
    if (token) url.searchParams.set("Authorization", token);
    return url.toString();
  }

  function connect() {
    if (state.socket) return;
    let url;
    try {
      url = socketUrl();
    } catch (error) {
      setConnectionState("error", "Invalid WebSocket URL");
      return;
    }
    setConnectionState("connecting", "Connecting…");
    const socket = new WebSocket(url);
    state.socket = socket;
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      setConnectionState("open", "Connected");
      sendFrame({ id: pingId(), action: "ping", payload: {} });
      state.heartbeat = window.setInterval(
        () => sendFrame({ id: pingId(), action: "ping", payload: {} }),
        HEARTBEAT_MS,
      );
      resumePending();
    });
    socket.addEventListener("message", (event) => onFrame(event.data));
    socket.addEventListener("close", (event) => {
      window.clearInterval(state.heartbeat);
      state.heartbeat = null;
      if (state.socket === socket) state.socket = null;
      state.connectionId = null;
      $("connection-id").textContent = "";
      if (!opened) {
        setConnectionState("error", "Refused: check the token (HTTP 401/403/429)");
      } else {
        const reason = event.reason ? `: ${event.reason}` : "";
        setConnectionState("idle", `Disconnected (${event.code}${reason})`);
      }
      pollConnections();
    });
  }

  function disconnect() {
    if (state.socket) state.socket.close(1000, "console disconnect");
  }

  function pingId() {
    const id = `ping-${newId()}`;
    state.pings.add(id);
    return id;
  }

  function sendFrame(frame) {
    if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return false;
    const text = JSON.stringify(frame);
    state.socket.send(text);
    log("out", text);
    return true;
  }

  // After a reconnect, ask for every unfinished async request again so its progress
  // and outcome reach this new connection.
  function resumePending() {
    for (const request of state.requests.values()) {
      if (request.async && !TERMINAL.has(request.status)) {
        const id = `resume-${newId()}`;
        state.requests.set(id, { alias: request.id });
        sendFrame({ id, action: "subscribe", payload: { request_id: request.id } });
      }
    }
  }

  // -- incoming messages ---------------------------------------------------------------

  function onFrame(text) {
    log("in", text);
    let message;
    try {
      message = JSON.parse(text);
    } catch (error) {
      return;
    }
    const id = message.request_id;
    if (id && state.pings.has(id)) {
      state.pings.delete(id);
      if (message.data && message.data.connection_id) {
        state.connectionId = message.data.connection_id;
        $("connection-id").textContent = `Connection id: ${state.connectionId}`;
        pollConnections();
      }
      return;
    }
    let request = id ? state.requests.get(id) : undefined;
    if (request && request.alias) {
      state.requests.delete(id);
      request = state.requests.get(request.alias);
      if (request && message.type === "response") {
        applySnapshot(request, message.data || {});
        return;
      }
    }
    if (!request) return;
    switch (message.type) {
      case "response":
        if (request.async) {
          applySnapshot(request, message.data || {});
        } else {
          finish(request, "answered", message.data);
        }
        break;
      case "acknowledgment":
        request.async = true;
        update(request, { status: message.status === "queued" ? "queued" : message.status });
        break;
      case "progress":
        update(request, {
          status: "running",
          percentage: message.percentage,
          message: message.message,
        });
        break;
      case "complete":
        update(request, { percentage: 100 });
        finish(request, "completed", message.result);
        break;
      case "error":
        fail(request, message.error || {});
        break;
      default:
        break;
    }
  }

  function applySnapshot(request, data) {
    const status = String(data.status || "").toLowerCase();
    if (data.progress !== undefined) {
      update(request, { percentage: data.progress, message: data.message });
    }
    if (status === "completed") {
      update(request, { percentage: 100 });
      finish(request, "completed", data.result);
    } else if (status === "failed" || status === "cancelled") {
      fail(request, data.error || { code: status.toUpperCase(), message: `request ${status}` });
    } else if (status) {
      update(request, { status: status === "processing" ? "running" : status });
    }
  }

  // -- requests ------------------------------------------------------------------------

  function addRequest(id, action, payload) {
    const node = $("request-template").content.firstElementChild.cloneNode(true);
    node.dataset.requestId = id;
    node.querySelector(".action-name").textContent = action;
    node.querySelector(".request-id").textContent = id;
    const bar = node.querySelector("progress");
    bar.setAttribute("aria-label", `Progress of ${action} ${id}`);
    const cancel = node.querySelector(".cancel");
    cancel.addEventListener("click", () => {
      sendFrame({ id: `cancel-${newId()}`, action: "cancel", payload: { request_id: id } });
    });
    $("requests").prepend(node);
    $("requests-empty").hidden = true;
    const request = {
      id,
      action,
      payload,
      node,
      async: false,
      status: "sent",
      percentage: 0,
      startedAt: performance.now(),
    };
    state.requests.set(id, request);
    render(request);
    return request;
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
    node.querySelector(".cancel").hidden = !request.async || done;
    // A sync answer or a refusal before any progress has no bar to show.
    node.classList.toggle("is-sync", done && !request.async);
    if (done && request.finishedAt === undefined) request.finishedAt = performance.now();
    node.querySelector(".elapsed").textContent = done
      ? `${((request.finishedAt - request.startedAt) / 1000).toFixed(2)} s`
      : "";
  }

  function clearFinished() {
    for (const [id, request] of state.requests) {
      if (request.node && TERMINAL.has(request.status)) {
        request.node.remove();
        state.requests.delete(id);
      }
    }
    $("requests-empty").hidden = $("requests").children.length > 0;
  }

  // -- the send form -------------------------------------------------------------------

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
    const id = newId();
    const request = addRequest(id, action, payload);
    if (!sendFrame({ id, action, payload })) fail(request, { code: "NOT_CONNECTED", message: "not connected" });
  }

  // -- the HTTP side -------------------------------------------------------------------

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

  // -- start ---------------------------------------------------------------------------

  function start() {
    $("connect-form").addEventListener("submit", (event) => {
      event.preventDefault();
      connect();
    });
    $("disconnect").addEventListener("click", disconnect);
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

  window.streamerConsole = { templateFor, example };
  start();
})();
