// The same call with a wrong payload: `tsc --noEmit` must refuse it.
import { StreamerClient } from "@streamer/client";
import type { Actions } from "./actions.js";

export async function wrongReport(url: string, token: string): Promise<void> {
  const client = new StreamerClient<Actions>(url, { token });
  await client.request("generate_report", { start_date: "2026-01-01", end_date: "2026-01-31", format: "docx" });
}
