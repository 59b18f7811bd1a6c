// Server load: N concurrent streaming clients (1, 8, 16), each asking for one 32-token sampled
// completion (temperature 0.7, top-p 0.9, its own seed), against `mlx-bun serve` and `mlx_lm.server`
// on this machine with the same checkpoint (the default model, or MLXB_BENCH_SERVE_MODEL: a name as
// decode.ts takes): aggregate generated tokens/s (the median of 5 rounds: one client's round is a
// single completion, a tenth of a second on a CPU, and one round moved the 8-client ratio by 15%)
// and p50/p99 time to first token over the rounds' clients, after a warm-up round of the same count.
// Then, for mlx-bun,
// a late request: one client's time to first token alone, and while 15 others decode. Each server
// runs in a child process; the clients run here.
import { basename, join } from "node:path";
import { DEFAULT_MODEL_DIR } from "../src/models/index.ts";
import { benchModel } from "./decode.ts";
import { PEER_PYTHON } from "./peer.ts";
import { table } from "./stats.ts";

const ROOT = join(import.meta.dir, "..");
const CLIENTS = [1, 8, 16];
const MAX_TOKENS = 32;
const ROUNDS = 5;

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
/** The model name each server takes: ours its directory's name, mlx_lm.server its path. */
const names = new Map<string, string>();

async function client(
  base: string,
  i: number,
  start: number,
  maxTokens = MAX_TOKENS,
): Promise<{ ttft: number; tokens: number }> {
  const response = await fetch(`${base}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: names.get(base),
      prompt: `Client ${i}: the ship sailed`,
      max_tokens: maxTokens,
      temperature: 0.7,
      top_p: 0.9,
      seed: i,
      stream: true,
      logit_bias: { "0": -100 },
      stream_options: { include_usage: true },
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
      const data = event
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trim())
        .join("");
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

/** One round of n concurrent clients: aggregate tokens/s, each client's time to first token. */
async function load(base: string, n: number): Promise<{ tokensPerSecond: number; ttfts: number[]; tokens: number }> {
  const start = performance.now();
  const runs = await Promise.all(Array.from({ length: n }, (_, i) => client(base, i, start)));
  const seconds = (performance.now() - start) / 1000;
  const tokens = runs.reduce((s, r) => s + r.tokens, 0);
  return { tokensPerSecond: tokens / seconds, ttfts: runs.map((r) => r.ttft), tokens };
}

/** ROUNDS rounds of n clients: the median aggregate tokens/s, time to first token over all clients. */
async function rounds(base: string, n: number) {
  const done: Awaited<ReturnType<typeof load>>[] = [];
  for (let r = 0; r < ROUNDS; r++) done.push(await load(base, n));
  const ttfts = done.flatMap((d) => d.ttfts);
  return {
    tokensPerSecond: percentile(
      done.map((d) => d.tokensPerSecond),
      0.5,
    ),
    ttftP50: percentile(ttfts, 0.5),
    ttftP99: percentile(ttfts, 0.99),
    tokens: done[0]!.tokens,
  };
}

/** A request arriving while `others` clients decode long completions: its time to first token, and
 * alone (median of 3 each). */
async function lateArrival(base: string, others: number): Promise<{ alone: number; busy: number }> {
  const alone: number[] = [];
  for (let r = 0; r < 3; r++) alone.push((await client(base, 100 + r, performance.now(), 4)).ttft);
  const busy: number[] = [];
  for (let r = 0; r < 3; r++) {
    const background = Array.from({ length: others }, (_, i) => client(base, 200 + i, performance.now(), 160));
    await Bun.sleep(1500);
    busy.push((await client(base, 300 + r, performance.now(), 4)).ttft);
    await Promise.all(background);
  }
  return { alone: percentile(alone, 0.5), busy: percentile(busy, 0.5) };
}

const MODEL_DIR = process.env.MLXB_BENCH_SERVE_MODEL
  ? benchModel(process.env.MLXB_BENCH_SERVE_MODEL)
  : DEFAULT_MODEL_DIR;
const MODEL_ID = basename(MODEL_DIR);

export async function run(): Promise<Record<string, unknown>> {
  const servers = [
    {
      name: "mlx-bun serve",
      port: 18431,
      command: [
        process.execPath,
        join(ROOT, "src", "bin.ts"),
        "serve",
        "--model",
        MODEL_DIR,
        "--backend",
        "mlx",
        "--port",
        "18431",
        "--max-concurrent",
        "16",
      ],
    },
    {
      name: "mlx_lm.server",
      port: 18432,
      command: [PEER_PYTHON, "-m", "mlx_lm", "server", "--model", MODEL_DIR, "--port", "18432", "--log-level", "ERROR"],
    },
  ];
  const results: Record<string, unknown> = {};
  const rows: (string | number)[][] = [];
  for (const s of servers) {
    const child = Bun.spawn(s.command, { stdout: "ignore", stderr: "ignore" });
    const base = `http://127.0.0.1:${s.port}`;
    names.set(base, s.name === "mlx-bun serve" ? MODEL_ID : MODEL_DIR);
    try {
      await waitFor(`${base}/v1/models`, child);
      for (const n of CLIENTS) {
        // A warm-up round at each count first: a server records each batch shape's step once for
        // its life (so does mlx_lm.server's compiled sampling); the measured rounds follow.
        await load(base, n);
        const r = await rounds(base, n);
        rows.push([s.name, n, r.tokensPerSecond, r.ttftP50, r.ttftP99, r.tokens]);
        results[`${s.name} x${n}`] = r;
      }
      if (s.name === "mlx-bun serve") results["late arrival"] = await lateArrival(base, 15);
    } finally {
      child.kill();
      await child.exited;
    }
  }
  table(
    `Concurrent streaming clients, ${MAX_TOKENS}-token sampled completions each, ${MODEL_ID} (aggregate tokens/s: median of ${ROUNDS} rounds; time to first token in ms)`,
    ["server", "clients", "tokens/s", "TTFT p50", "TTFT p99", "tokens a round"],
    rows,
  );
  const late = results["late arrival"] as { alone: number; busy: number } | undefined;
  if (late)
    table(
      "mlx-bun serve: a 4-token request's time to first token (ms, median of 3)",
      ["alone", "while 15 others decode", "ratio"],
      [[late.alone, late.busy, late.busy / late.alone]],
    );
  return results;
}
