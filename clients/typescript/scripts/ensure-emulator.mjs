// Before `npm test`: the tests start the repository's emulator from its virtualenv.
// When neither STREAMER_BIN nor ../../.venv has it (a fresh clone), make the
// virtualenv with the repository's own Makefile target, as `make test` would.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const bin = process.env.STREAMER_BIN ?? path.join(REPO_DIR, ".venv", "bin");
if (!existsSync(path.join(bin, "streamer-emulator"))) {
  if (process.env.STREAMER_BIN) {
    console.error(`no streamer-emulator in STREAMER_BIN=${bin}`);
    process.exit(1);
  }
  console.error("no .venv with streamer-emulator yet: creating it (make .venv/.installed, a few minutes once)");
  const made = spawnSync("make", ["-C", REPO_DIR, ".venv/.installed"], { stdio: "inherit" });
  if (made.status !== 0) process.exit(made.status ?? 1);
}
