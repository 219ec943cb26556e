// What the tests share: a live emulator started from the repository's virtualenv on
// free ports, dev tokens from it, a TCP proxy that can drop sockets, and waiting on
// conditions with a deadline (never a bare sleep).
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const REPO_DIR = path.resolve(PACKAGE_DIR, "..", "..");
/** Where `streamer` and `streamer-emulator` are: STREAMER_BIN, else the repository's .venv. */
export const BIN_DIR = process.env.STREAMER_BIN ?? path.join(REPO_DIR, ".venv", "bin");
const READY_TIMEOUT_MS = 90_000;

/**
 * Start `streamer-emulator` with dev keys (no JWT_PUBLIC_KEY) on free ports and wait
 * for its banner. Resolves with its URLs and a `stop()`.
 */
export async function startEmulator({ app = "streamer.demo:app" } = {}) {
  const stateDir = mkdtempSync(path.join(tmpdir(), "streamer-ts-"));
  const env = { ...process.env, EMULATOR_DRAIN_TIMEOUT: "1", LOG_LEVEL: "WARNING" };
  delete env.JWT_PUBLIC_KEY;
  delete env.DYNAMODB_ENDPOINT_URL;
  const child = spawn(
    path.join(BIN_DIR, "streamer-emulator"),
    ["--app", app, "--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--state-dir", stateDir],
    { env, cwd: stateDir, stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  let errors = "";
  child.stderr.setEncoding("utf8").on("data", (chunk) => {
    errors += chunk;
  });
  const urls = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the emulator was not ready within ${READY_TIMEOUT_MS} ms:\n${errors}`)), READY_TIMEOUT_MS);
    child.stdout.setEncoding("utf8").on("data", (chunk) => {
      output += chunk;
      const ws = /WebSocket API\s+(ws:\/\/\S+)/.exec(output);
      const http = /HTTP\s+(http:\/\/\S+)/.exec(output);
      if (ws && http) {
        clearTimeout(timer);
        resolve({ wsUrl: ws[1], httpUrl: http[1] });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the emulator exited with ${code} before it was ready:\n${errors}`));
    });
  });
  return {
    ...urls,
    async token(sub = "ts-user", tenant = "ts-tenant") {
      const response = await fetch(`${urls.httpUrl}/api/dev-token?sub=${encodeURIComponent(sub)}&tenant=${encodeURIComponent(tenant)}`);
      if (!response.ok) throw new Error(`dev token: HTTP ${response.status}`);
      return (await response.json()).token;
    },
    /** `streamer push ARGS… --emulator <this one>`: a real server push. */
    push(...args) {
      // The management API wants SigV4 with this emulator's dev credentials, kept in its state folder.
      const env = { ...process.env, EMULATOR_STATE_DIR: stateDir };
      delete env.WEBSOCKET_ENDPOINT;
      delete env.EMULATOR_ACCESS_KEY_ID;
      delete env.EMULATOR_SECRET_ACCESS_KEY;
      return run(path.join(BIN_DIR, "streamer"), ["push", ...args, "--emulator", urls.httpUrl], { env });
    },
    async connections() {
      const response = await fetch(`${urls.httpUrl}/api/connections`);
      return (await response.json()).connections;
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** A TCP proxy to `target` (`ws://host:port`); `drop()` cuts every socket through it. */
export async function startProxy(target) {
  const { hostname, port } = new URL(target);
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    const pair = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const forget = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", forget).on("close", forget);
    upstream.on("error", forget).on("close", forget);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `ws://127.0.0.1:${server.address().port}`,
    /** How many client sockets are open through the proxy. */
    get open() {
      return pairs.size;
    },
    drop() {
      for (const [client, upstream] of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    async close() {
      this.drop();
      server.close();
      await once(server, "close");
    },
  };
}

/** Resolve once `condition()` is truthy, checking on every event-loop turn; reject after `timeoutMs`. */
export async function waitFor(condition, { timeoutMs = 20_000, what = "the condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Run a command; resolves with { code, stdout, stderr }. */
export async function run(command, args, options = {}) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk) => (stdout += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk) => (stderr += chunk));
  const [code] = await once(child, "close");
  return { code, stdout, stderr };
}
