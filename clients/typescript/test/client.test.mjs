// The client on Node (through the `ws` package) against a live emulator.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { RequestTimeout, StreamerClient, StreamerConnectionError, StreamerError } from "../dist/index.js";
import { startEmulator, startProxy, waitFor } from "./harness.mjs";

let emulator;
const clients = [];

before(async () => {
  emulator = await startEmulator();
});

after(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await emulator?.stop();
});

async function newClient(options = {}, url = emulator.wsUrl) {
  const token = options.token ?? (await emulator.token(options.sub ?? "ts-user"));
  const client = new StreamerClient(url, { ...options, token });
  clients.push(client);
  return client;
}

const REPORT = { start_date: "2026-01-01", end_date: "2026-03-31", format: "pdf", report_type: "quarterly" };

describe("requests", () => {
  test("a sync action answers its data", async () => {
    const client = await newClient();
    const data = await client.request("echo", { hello: "world" });
    assert.deepEqual(data.echo, { hello: "world" });
    assert.equal(data.action, "echo");
  });

  test("an async action reports progress, never decreasing, then resolves with its result", async () => {
    const client = await newClient();
    const seen = [];
    let acknowledged;
    const result = await client.request("generate_report", REPORT, {
      onProgress: (update) => seen.push(update.percentage),
      onAcknowledged: (ack) => (acknowledged = ack),
      requestId: "report-1",
    });
    assert.equal(acknowledged.request_id, "report-1");
    assert.equal(acknowledged.status, "queued");
    assert.ok(seen.length >= 3, `progress updates: ${seen}`);
    assert.deepEqual([...seen].sort((a, b) => a - b), seen);
    assert.equal(seen.at(-1), 100);
    assert.equal(result.format, "pdf");
    assert.match(result.url, /report-1\.pdf$/);
    const snapshot = await client.status("report-1");
    assert.equal(snapshot.status, "COMPLETED");
    assert.deepEqual(snapshot.result, result);
  });

  test("many requests share one socket", async () => {
    const sub = "ts-one-socket";
    const client = await newClient({ sub });
    const answers = await Promise.all([
      client.request("generate_report", REPORT),
      ...Array.from({ length: 5 }, (_, n) => client.request("echo", { n })),
    ]);
    assert.deepEqual(answers.slice(1).map((data) => data.echo.n), [0, 1, 2, 3, 4]);
    const mine = (await emulator.connections()).filter((c) => c.user === sub);
    assert.equal(mine.length, 1);
  });

  test("a server error rejects with a typed StreamerError carrying code and details", async () => {
    const client = await newClient();
    const error = await client.request("validate_example", { name: "a" }).then(
      () => assert.fail("resolved"),
      (caught) => caught,
    );
    assert.ok(error instanceof StreamerError);
    assert.equal(error.code, "VALIDATION_ERROR");
    assert.ok(Array.isArray(error.details) && error.details.length > 0);
    const unknown = await client.request("no_such_action", {}).catch((caught) => caught);
    assert.equal(unknown.code, "INVALID_ACTION");
  });

  test("a client-side timeout rejects with RequestTimeout", async () => {
    const client = await newClient();
    const error = await client.request("delay", { seconds: 30 }, { timeout: 200 }).catch((caught) => caught);
    assert.ok(error instanceof RequestTimeout);
    assert.equal(error.code, "TIMEOUT");
  });

  test("a message over one 32 KB frame is refused before it is sent", async () => {
    const client = await newClient();
    await assert.rejects(client.request("echo", { blob: "x".repeat(40 * 1024) }), (error) => {
      assert.equal(error.code, "PAYLOAD_TOO_LARGE");
      assert.equal(error.details.limit, 32 * 1024);
      assert.ok(error.details.size > 40 * 1024);
      return true;
    });
    await assert.rejects(client.request("echo", { blob: "x".repeat(130 * 1024) }), { code: "PAYLOAD_TOO_LARGE" });
    assert.equal(client.state, "idle", "nothing was sent, so no socket was opened");
  });

  test("a message of just under 32 KB goes in one frame and is answered", async () => {
    const client = await newClient();
    const blob = "x".repeat(31 * 1024);
    const answer = await client.request("echo", { blob });
    assert.equal(answer.echo.blob.length, blob.length);
    await client.close();
  });
});

describe("cancel", () => {
  test("an AbortSignal cancels a running request on the server", async () => {
    const client = await newClient();
    const controller = new AbortController();
    const error = await client
      .request("delay", { seconds: 30 }, { requestId: "to-abort", signal: controller.signal, onProgress: () => controller.abort() })
      .catch((caught) => caught);
    assert.ok(error instanceof StreamerError);
    assert.equal(error.code, "CANCELLED");
    assert.equal(error.details.cancelled, true);
    const snapshot = await client.status("to-abort");
    assert.equal(snapshot.status, "CANCELLED");
    assert.equal(snapshot.toError().code, "CANCELLED");
  });

  test("a signal aborted before the call sends nothing", async () => {
    const client = await newClient();
    const sent = [];
    const watched = new StreamerClient(emulator.wsUrl, {
      token: await emulator.token(),
      onFrame: (direction, text) => direction === "out" && sent.push(JSON.parse(text).action),
    });
    clients.push(watched);
    const error = await watched.request("delay", { seconds: 30 }, { signal: AbortSignal.abort() }).catch((caught) => caught);
    assert.equal(error.code, "CANCELLED");
    assert.deepEqual(sent, []);
    await client.close();
  });
});

describe("connection", () => {
  test("a bad token is rejected with UNAUTHORIZED", async () => {
    const client = new StreamerClient(emulator.wsUrl, { token: "not-a-jwt" });
    const error = await client.request("echo", {}).catch((caught) => caught);
    assert.ok(error instanceof StreamerConnectionError);
    assert.equal(error.code, "UNAUTHORIZED");
    assert.equal(error.statusCode, 401);
    assert.equal(client.state, "closed");
    assert.doesNotMatch(error.message, /not-a-jwt/);
  });

  test("a drop in the middle of a request reconnects, resumes by subscribe, and still resolves", async () => {
    const proxy = await startProxy(emulator.wsUrl);
    let tokens = 0;
    const token = await emulator.token();
    const sent = [];
    const client = await newClient(
      {
        token: async () => {
          tokens += 1;
          return token;
        },
        backoffInitialMs: 20,
        onFrame: (direction, text) => direction === "out" && sent.push(JSON.parse(text).action),
      },
      proxy.url,
    );
    const seen = [];
    let dropped = false;
    const result = await client.request("generate_report", REPORT, {
      onProgress: (update) => {
        seen.push(update.percentage);
        if (!dropped) {
          dropped = true;
          proxy.drop();
        }
      },
    });
    await proxy.close();
    assert.equal(result.format, "pdf");
    assert.equal(client.reconnects, 1);
    assert.equal(tokens, 2, "the token function is called again on reconnect");
    assert.deepEqual(sent, ["generate_report", "subscribe"]);
    assert.deepEqual([...seen].sort((a, b) => a - b), seen);
    assert.equal(seen.at(-1), 100);
  });

  test("a request sent while the socket is down waits for the reconnect", async () => {
    const proxy = await startProxy(emulator.wsUrl);
    const states = [];
    let reopened;
    const reconnected = new Promise((resolve) => (reopened = resolve));
    const onStateChange = (state) => {
      states.push(state);
      if (state === "open" && states.includes("reconnecting")) reopened();
    };
    const client = await newClient({ backoffInitialMs: 20, onStateChange }, proxy.url);
    await client.ping();
    proxy.drop();
    const answer = client.request("echo", { after: "drop" });
    await reconnected;
    assert.deepEqual((await answer).echo, { after: "drop" });
    assert.deepEqual(states, ["connecting", "open", "reconnecting", "open"]);
    await proxy.close();
  });

  test("the heartbeat pings on its interval and learns the connection id", async () => {
    let pings = 0;
    let twoPings;
    const pinged = new Promise((resolve) => (twoPings = resolve));
    const client = await newClient({
      heartbeatIntervalMs: 50,
      onFrame: (direction, text) => {
        if (direction === "out" && JSON.parse(text).action === "ping" && ++pings === 2) twoPings();
      },
    });
    await client.connect();
    await pinged;
    await waitFor(() => client.connectionId, { what: "the connection id" });
    const listed = (await emulator.connections()).map((c) => c.id);
    assert.ok(listed.includes(client.connectionId));
  });

  test("close rejects what is still waiting and ends the socket", async () => {
    const client = await newClient();
    const waiting = client.request("delay", { seconds: 30 }).catch((caught) => caught);
    await waitFor(() => client.state === "open", { what: "the socket to open" });
    await client.close();
    const error = await waiting;
    assert.ok(error instanceof StreamerConnectionError);
    assert.equal(client.state, "closed");
    await assert.rejects(client.request("echo", {}), StreamerConnectionError);
  });
});

describe("notifications", () => {
  test("onNotification receives what `streamer push` sends to this connection", async () => {
    const client = await newClient();
    const connectionId = await client.ping();
    const received = new Promise((resolve) => client.onNotification(resolve));
    const pushed = await emulator.push("--connection", connectionId, "--topic", "news", "--data", '{"hello":1}');
    assert.equal(pushed.code, 0, pushed.stderr);
    const notification = await received;
    assert.equal(notification.type, "notification");
    assert.equal(notification.topic, "news");
    assert.deepEqual(notification.data, { hello: 1 });
    assert.ok(!Number.isNaN(Date.parse(notification.timestamp)));
  });

  test("a push to a tenant reaches each of its clients once; a removed listener hears no more", async () => {
    const tenant = "ts-push-tenant";
    const tokenFor = async (sub) => (await (await fetch(`${emulator.httpUrl}/api/dev-token?sub=${sub}&tenant=${tenant}`)).json()).token;
    const ada = await newClient({ token: await tokenFor("ada") });
    const bob = await newClient({ token: await tokenFor("bob") });
    await Promise.all([ada.ping(), bob.ping()]);
    const next = (client) => new Promise((resolve) => client.onNotification((n) => resolve(n.data)));
    const seen = { ada: [], bob: [] };
    ada.onNotification((n) => seen.ada.push(n.data));
    const stop = bob.onNotification((n) => seen.bob.push(n.data));

    const first = [next(ada), next(bob)];
    const pushed = await emulator.push("--tenant", tenant, "--data", '"first"');
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.equal(JSON.parse(pushed.stdout).sent, 2);
    assert.deepEqual(await Promise.all(first), ["first", "first"]);

    stop();
    const second = [next(ada), next(bob)];
    assert.equal((await emulator.push("--tenant", tenant, "--data", '"second"')).code, 0);
    assert.deepEqual(await Promise.all(second), ["second", "second"]);
    assert.deepEqual(seen, { ada: ["first", "second"], bob: ["first"] });

    const narrowed = await emulator.push("--tenant", tenant, "--user", "ada", "--data", '"ada only"');
    assert.equal(JSON.parse(narrowed.stdout).sent, 1);
  });
});
