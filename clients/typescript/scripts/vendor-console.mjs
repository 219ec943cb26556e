// Copy the built ES modules into the emulator's console (emulator/console/vendor/streamer-client/),
// so an emulator installed without npm still serves the console with this package.
// `npm run console` builds, then runs this; a test holds the copy to the build.
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const DIST = path.join(PACKAGE_DIR, "dist");
export const VENDORED = path.resolve(PACKAGE_DIR, "..", "..", "emulator", "console", "vendor", "streamer-client");

/** The files the console needs: the compiled modules, not the declarations. */
export function modules(folder) {
  return readdirSync(folder).filter((name) => name.endsWith(".js")).sort();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  rmSync(VENDORED, { recursive: true, force: true });
  mkdirSync(VENDORED, { recursive: true });
  for (const name of modules(DIST)) copyFileSync(path.join(DIST, name), path.join(VENDORED, name));
  console.log(`copied ${modules(VENDORED).join(", ")} to ${path.relative(process.cwd(), VENDORED)}`);
}
