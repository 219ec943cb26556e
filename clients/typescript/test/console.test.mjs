// The emulator's console serves this package: its vendored copy is the current build.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { DIST, VENDORED, modules } from "../scripts/vendor-console.mjs";

test("emulator/console/vendor/streamer-client is the build of src/ (else run `npm run console`)", () => {
  assert.deepEqual(modules(VENDORED), modules(DIST));
  for (const name of modules(DIST)) {
    const built = readFileSync(path.join(DIST, name), "utf8");
    const vendored = readFileSync(path.join(VENDORED, name), "utf8");
    assert.equal(vendored, built, `${name} differs from the build: run \`npm run console\` in clients/typescript`);
  }
});
