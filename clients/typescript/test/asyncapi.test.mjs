// `streamer asyncapi` and the emulator's /asyncapi.json pass the official AsyncAPI parser.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";
import { Parser } from "@asyncapi/parser";
import { BIN_DIR, run, startEmulator } from "./harness.mjs";

const ERROR = 0;
const WARNING = 1;
let emulator;

before(async () => {
  emulator = await startEmulator();
});

after(async () => {
  await emulator?.stop();
});

async function parse(text) {
  const { document, diagnostics } = await new Parser().parse(text);
  const problems = diagnostics
    .filter((diagnostic) => diagnostic.severity === ERROR || diagnostic.severity === WARNING)
    .map((diagnostic) => `${diagnostic.code} at ${diagnostic.path.join(".")}: ${diagnostic.message}`);
  return { document, problems };
}

test("streamer asyncapi prints a document the AsyncAPI parser accepts without errors or warnings", async () => {
  const { code, stdout, stderr } = await run(path.join(BIN_DIR, "streamer"), ["asyncapi", "--app", "streamer.demo:app"]);
  assert.equal(code, 0, stderr);
  const { document, problems } = await parse(stdout);
  assert.deepEqual(problems, []);
  assert.equal(document.version(), "3.0.0");
  const operations = new Map(document.operations().all().map((operation) => [operation.id(), operation]));
  for (const name of ["echo", "generate_report", "ping", "status", "subscribe", "cancel"]) {
    assert.ok(operations.has(name), `operation ${name}`);
  }
  const report = operations.get("generate_report");
  assert.ok(report.isReceive());
  const replies = report.reply().messages().all().map((message) => message.id());
  assert.deepEqual(replies, ["acknowledgment", "progress", "generate_report.complete", "error"]);
  const types = new Set(document.allMessages().all().map((message) => message.payload().properties()?.type?.const()));
  for (const type of ["response", "acknowledgment", "progress", "complete", "error"]) assert.ok(types.has(type), type);
  const schemes = document.securitySchemes().all().map((scheme) => scheme.type());
  assert.deepEqual(schemes.sort(), ["http", "httpApiKey"]);
});

test("the emulator serves its app's document at /asyncapi.json, and the parser accepts it", async () => {
  const response = await fetch(`${emulator.httpUrl}/asyncapi.json`);
  assert.equal(response.status, 200);
  const text = await response.text();
  const { document, problems } = await parse(text);
  assert.deepEqual(problems, []);
  const local = document.servers().get("local");
  assert.equal(local.protocol(), "ws");
  assert.ok(local.host().endsWith(`:${new URL(emulator.wsUrl).port}`), local.host());
});

test("the parser is a real check: a document with a dangling reference is refused", async () => {
  const { stdout } = await run(path.join(BIN_DIR, "streamer"), ["asyncapi"]);
  const broken = JSON.parse(stdout);
  broken.operations.echo.messages = [{ $ref: "#/channels/api/messages/no_such_message" }];
  const { problems } = await parse(JSON.stringify(broken));
  assert.ok(problems.length > 0);
});
