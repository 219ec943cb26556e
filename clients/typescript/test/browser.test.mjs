// The same package in headless Chromium (Debian's, through playwright-core), against
// the emulator: the platform WebSocket, no `ws`, no bundler.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { once } from "node:events";
import http from "node:http";
import path from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";
import { PACKAGE_DIR, startEmulator } from "./harness.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"];
const skip = existsSync(CHROMIUM) ? false : `no ${CHROMIUM} (apt-get install chromium)`;

let emulator;
let server;
let origin;
let browser;

/** Serves `dist/` and a blank page, so the page imports the built ES modules as a browser app would. */
function staticServer() {
  return http.createServer((request, response) => {
    const url = new URL(request.url, "http://localhost");
    if (url.pathname === "/") {
      response.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>client</title>");
      return;
    }
    const file = path.join(PACKAGE_DIR, path.normalize(url.pathname));
    if (!url.pathname.startsWith("/dist/") || !file.startsWith(path.join(PACKAGE_DIR, "dist")) || !existsSync(file)) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": "text/javascript" }).end(readFileSync(file));
  });
}

before(async () => {
  if (skip) return;
  emulator = await startEmulator();
  server = staticServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  origin = `http://127.0.0.1:${server.address().port}`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});

after(async () => {
  await browser?.close();
  server?.close();
  await emulator?.stop();
});

test("in Chromium: echo, an async request with progress, abort to cancel, a notification", { skip }, async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${origin}/`);
  const token = await emulator.token("browser-user");
  const outcome = await page.evaluate(
    async ({ wsUrl, token }) => {
      const { StreamerClient, StreamerError } = await import("/dist/index.js");
      const client = new StreamerClient(wsUrl, { token });
      const echoed = await client.request("echo", { from: "chromium" });
      const progress = [];
      const report = await client.request(
        "generate_report",
        { start_date: "2026-01-01", end_date: "2026-01-31" },
        { onProgress: (update) => progress.push(update.percentage) },
      );
      const controller = new AbortController();
      const aborted = await client
        .request("delay", { seconds: 30 }, { signal: controller.signal, onProgress: () => controller.abort() })
        .catch((error) => ({ isStreamerError: error instanceof StreamerError, code: error.code }));
      const connectionId = await client.ping();
      window.notified = new Promise((resolve) => client.onNotification(resolve));
      return { echoed: echoed.echo, progress, url: report.url, aborted, connectionId };
    },
    { wsUrl: emulator.wsUrl, token },
  );
  assert.deepEqual(outcome.echoed, { from: "chromium" });
  assert.equal(outcome.progress.at(-1), 100);
  assert.deepEqual([...outcome.progress].sort((a, b) => a - b), outcome.progress);
  assert.match(outcome.url, /\.pdf$/);
  assert.deepEqual(outcome.aborted, { isStreamerError: true, code: "CANCELLED" });

  const pushed = await emulator.push("--connection", outcome.connectionId, "--topic", "news", "--data", '{"hello":1}');
  assert.equal(pushed.code, 0, pushed.stderr);
  const notification = await page.evaluate(() => window.notified);
  assert.deepEqual({ topic: notification.topic, data: notification.data }, { topic: "news", data: { hello: 1 } });
  assert.deepEqual(errors, []);
});

test("in Chromium: a refused token rejects with a typed connection error", { skip }, async () => {
  const page = await browser.newPage();
  await page.goto(`${origin}/`);
  const refused = await page.evaluate(async (wsUrl) => {
    const { StreamerClient, StreamerConnectionError } = await import("/dist/index.js");
    const client = new StreamerClient(wsUrl, { token: "not-a-jwt" });
    return client.request("echo", {}).then(
      () => "resolved",
      (error) => ({ isConnectionError: error instanceof StreamerConnectionError, state: client.state }),
    );
  }, emulator.wsUrl);
  // A browser never exposes the handshake's HTTP status, so the code cannot say 401.
  assert.deepEqual(refused, { isConnectionError: true, state: "closed" });
});
