// The JavaScript snippets of the README and docs/client.md run against a live emulator
// (their localhost URLs pointed at it), as a reader would run them against `make run`.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { PACKAGE_DIR, REPO_DIR, run, startEmulator } from "./harness.mjs";

const SNIPPETS = path.join(PACKAGE_DIR, "test", ".snippets");
let emulator;

before(async () => {
  emulator = await startEmulator();
  mkdirSync(SNIPPETS, { recursive: true });
});

after(async () => {
  rmSync(SNIPPETS, { recursive: true, force: true });
  await emulator?.stop();
});

/** The ```js blocks of a Markdown file that use the package. */
export function snippets(file, language = "js") {
  const text = readFileSync(path.join(REPO_DIR, file), "utf8");
  const blocks = [...text.matchAll(new RegExp("```" + language + "\\n([\\s\\S]*?)```", "g"))].map((match) => match[1]);
  return blocks.filter((block) => block.includes('from "@streamer/client"'));
}

async function runSnippet(name, source) {
  // Inside the package, so `@streamer/client` resolves to it (a package may import itself).
  const file = path.join(SNIPPETS, `${name}.mjs`);
  const pointed = source.replaceAll("ws://localhost:3001", emulator.wsUrl).replaceAll("http://localhost:3002", emulator.httpUrl);
  writeFileSync(file, pointed);
  return run(process.execPath, [file], { cwd: SNIPPETS });
}

test("the README's front-end example runs: progress printed, then the report's URL", async () => {
  const [example, ...others] = snippets("README.md");
  assert.ok(example, "no JavaScript example in the README");
  assert.deepEqual(others, []);
  assert.ok(example.trim().split("\n").length <= 12, "the README example stays short");
  const { code, stdout, stderr } = await runSnippet("readme", example);
  assert.equal(code, 0, stderr);
  const lines = stdout.trim().split("\n");
  assert.ok(lines.some((line) => /^\d+(\.\d+)?% Querying data/.test(line)), stdout);
  assert.ok(lines.includes("100% Report ready"), stdout);
  assert.match(lines.at(-1), /^https:\/\/reports\.example\.com\/.+\.pdf$/);
});

test("docs/client.md's example runs", async () => {
  const blocks = snippets("docs/client.md");
  assert.ok(blocks.length >= 1);
  for (const [index, block] of blocks.entries()) {
    const { code, stderr } = await runSnippet(`client-md-${index}`, block);
    assert.equal(code, 0, stderr);
  }
});
