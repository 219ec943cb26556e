// Validate an AsyncAPI document with the official parser: `node scripts/validate-asyncapi.mjs FILE|-`.
// Prints each diagnostic; exits 1 when any is an error.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const source = process.argv[2] ?? "-";
const text = readFileSync(source === "-" ? 0 : source, "utf8");
const { document, diagnostics } = await new Parser().parse(text);
const severities = ["error", "warning", "info", "hint"];
for (const diagnostic of diagnostics) {
  const where = diagnostic.path.join(".") || "(root)";
  console.error(`${severities[diagnostic.severity] ?? diagnostic.severity} ${diagnostic.code} at ${where}: ${diagnostic.message}`);
}
if (document === undefined || diagnostics.some((diagnostic) => diagnostic.severity === 0)) process.exit(1);
console.log(`valid AsyncAPI ${document.version()}: ${document.operations().length} operations, ${document.allMessages().length} messages`);
