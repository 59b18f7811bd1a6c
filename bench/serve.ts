// Server load: N concurrent streaming clients (1, 4, 16), each asking for one 32-token completion,
// against `mlx-bun serve` and `mlx_lm.server` on this machine with the same checkpoint (the default
// model): aggregate generated tokens/s and p50/p99 time to first token. Each server runs in a child
// process; the clients run here.
import { join } from "node:path";
import { DEFAULT_MODEL_DIR } from "../src/models/index.ts";
import { PEER_PYTHON } from "./peer.ts";
import { table } from "./stats.ts";

const ROOT = join(import.meta.dir, "..");
const CLIENTS = [1, 4, 16];
const MAX_TOKENS = 32;

async function waitFor(url: string, child: ReturnType<typeof Bun.spawn>): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}) before answering ${url}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {}
    await Bun.sleep(100);
  }
  throw new Error(`no answer from ${url}`);
}

/** One client: a streamed completion; its time to first token and tokens generated. */
async function client(base: string, i: number, start: number): Promise<{ ttft: number; tokens: number }> {
  const response = await fetch(`${base}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "default-model", prompt: `Client ${i}: the ship sailed`, max_tokens: MAX_TOKENS, temperature: 0, stream: true,
      logit_bias: { "0": -100 }, stream_options: { include_usage: true },
    }),
  });
  if (!response.ok) throw new Error(`${base}: ${response.status} ${await response.text()}`);
  let ttft = 0;
  let tokens = 0;
  let usage = 0;
  let buffer = "";
  const decoder = new TextDecoder();
  for await (const bytes of response.body!) {
    buffer += decoder.decode(bytes, { stream: true });
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop()!;
    for (const event of events) {
      // Only data lines (a server may also send comments or other fields).
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data) as { choices: { text?: string }[]; usage?: { completion_tokens: number } };
      if (chunk.choices[0]?.text) {
        tokens++;
        if (!ttft) ttft = performance.now() - start;
      }
      if (chunk.usage) usage = chunk.usage.completion_tokens;
    }
  }
  return { ttft, tokens: usage || tokens };
}

function percentile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function load(base: string, n: number) {
  const start = performance.now();
  const runs = await Promise.all(Array.from({ length: n }, (_, i) => client(base, i, start)));
  const seconds = (performance.now() - start) / 1000;
  const ttfts = runs.map((r) => r.ttft);
  return { tokensPerSecond: runs.reduce((s, r) => s + r.tokens, 0) / seconds, ttftP50: percentile(ttfts, 0.5), ttftP99: percentile(ttfts, 0.99), tokens: runs.reduce((s, r) => s + r.tokens, 0) };
}

export async function run(): Promise<Record<string, unknown>> {
  const servers = [
    { name: "mlx-bun serve", port: 18431, command: [process.execPath, join(ROOT, "src", "bin.ts"), "serve", "--model", DEFAULT_MODEL_DIR, "--backend", "mlx", "--port", "18431", "--max-concurrent", "16"] },
    { name: "mlx_lm.server", port: 18432, command: [PEER_PYTHON, "-m", "mlx_lm", "server", "--model", DEFAULT_MODEL_DIR, "--port", "18432", "--log-level", "ERROR"] },
  ];
  const results: Record<string, unknown> = {};
  const rows: (string | number)[][] = [];
  for (const s of servers) {
    const child = Bun.spawn(s.command, { stdout: "ignore", stderr: "ignore" });
    const base = `http://127.0.0.1:${s.port}`;
    try {
      await waitFor(`${base}/v1/models`, child);
      await load(base, 2); // warm-up
      for (const n of CLIENTS) {
        const r = await load(base, n);
        rows.push([s.name, n, r.tokensPerSecond, r.ttftP50, r.ttftP99, r.tokens]);
        results[`${s.name} x${n}`] = r;
      }
    } finally {
      child.kill();
      await child.exited;
    }
  }
  table(`Concurrent streaming clients, ${MAX_TOKENS}-token completions each, default model (aggregate tokens/s, time to first token in ms)`, ["server", "clients", "tokens/s", "TTFT p50", "TTFT p99", "tokens"], rows);
  return results;
}
