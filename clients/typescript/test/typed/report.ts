// A typed use of the client: it must compile (`tsc --noEmit`) against the generated Actions.
import { StreamerClient, StreamerError } from "@streamer/client";
import type { Actions } from "./actions.js";

export async function monthlyReport(url: string, token: string): Promise<string> {
  const client = new StreamerClient<Actions>(url, { token });
  try {
    const report = await client.request(
      "generate_report",
      { start_date: "2026-01-01", end_date: "2026-01-31", format: "csv" },
      { onProgress: (update) => console.log(`${update.percentage}% ${update.message}`) },
    );
    const size: number = report.size_bytes;
    const echoed = await client.request("echo", { anything: [1, 2, 3] });
    console.log(size, echoed);
    return report.url;
  } catch (error) {
    if (error instanceof StreamerError && error.code === "VALIDATION_ERROR") return "";
    throw error;
  } finally {
    await client.close();
  }
}
