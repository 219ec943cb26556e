// `streamer codegen typescript` makes `client.request` checked by tsc: the typed example
// compiles, the same call with a wrong payload does not.
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { before, test } from "node:test";
import { BIN_DIR, PACKAGE_DIR, REPO_DIR, run } from "./harness.mjs";

const TYPED = path.join(PACKAGE_DIR, "test", "typed");
const TSC = path.join(PACKAGE_DIR, "node_modules", "typescript", "bin", "tsc");

before(async () => {
  const out = path.join(TYPED, "actions.ts");
  const { code, stderr } = await run(path.join(BIN_DIR, "streamer"), [
    "codegen",
    "typescript",
    "--app",
    "streamer.demo:app",
    "--out",
    out,
  ]);
  assert.equal(code, 0, stderr);
});

async function check(file) {
  // One file at a time, with the strictest options the package builds with.
  const { code, stdout } = await run(
    process.execPath,
    [TSC, "--noEmit", "--pretty", "false", "--strict", "--target", "ES2022", "--module", "NodeNext", "--moduleResolution", "NodeNext", "--lib", "ES2022,DOM", "--exactOptionalPropertyTypes", path.join(TYPED, file)],
    { cwd: TYPED },
  );
  return { code, diagnostics: stdout.trim().split("\n").filter(Boolean) };
}

test("the typed example compiles against the generated Actions", async () => {
  const { code, diagnostics } = await check("report.ts");
  assert.deepEqual(diagnostics, []);
  assert.equal(code, 0);
});

test("a wrong payload fails to compile, at the call", async () => {
  const { code, diagnostics } = await check("wrong-payload.ts");
  assert.notEqual(code, 0);
  assert.equal(diagnostics.length, 1, diagnostics.join("\n"));
  assert.match(diagnostics[0], /wrong-payload\.ts\(7,\d+\): error TS2322: Type '"docx"' is not assignable to type '"pdf" \| "csv" \| "excel"/);
});

test("docs/client.md's typed snippet compiles, its marked wrong call included", async () => {
  const text = readFileSync(path.join(REPO_DIR, "docs", "client.md"), "utf8");
  const blocks = [...text.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]).filter((block) => block.includes("./actions.js"));
  assert.equal(blocks.length, 1);
  assert.match(blocks[0], /@ts-expect-error/);
  const file = path.join(TYPED, "snippet-client-md.ts");
  writeFileSync(file, blocks[0]);
  try {
    const { code, diagnostics } = await check("snippet-client-md.ts");
    assert.deepEqual(diagnostics, []);
    assert.equal(code, 0);
  } finally {
    rmSync(file, { force: true });
  }
});
