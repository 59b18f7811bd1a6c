// Speculative decoding on this machine: the default model as the target and its first 2 layers as
// the draft (made by mlx-lm, bench/peers/make_draft.py), greedy, 64 tokens: tokens/s of plain
// decoding and of speculative decoding with 2 and 4 draft tokens, the share of tokens that came from
// the draft, side by side with mlx-lm's stream_generate(draft_model=...).
import { existsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generate } from "../src/engine/generate.ts";
import { DEFAULT_MODEL_DIR, loadModel } from "../src/models/index.ts";
import { type SpeculativeStats, speculativeGenerate } from "../src/engine/speculative.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { PEER_PYTHON, runPeer } from "./peer.ts";
import { summarize, table } from "./stats.ts";

const ROOT = join(import.meta.dir, "..");
const DRAFTS = [2, 4];
const MAX_TOKENS = 64;
const REPS = 3;
const PROMPT = "The history of the city";

export async function run(): Promise<Record<string, unknown>> {
  const draftDir = join(ROOT, ".cache", "models", "default-draft-2-layers");
  if (!existsSync(join(draftDir, "config.json"))) {
    const made = Bun.spawnSync(
      [PEER_PYTHON, join(import.meta.dir, "peers", "make_draft.py"), DEFAULT_MODEL_DIR, draftDir, "2"],
      { stderr: "pipe" },
    );
    if (made.exitCode !== 0) throw new Error(`make_draft.py failed: ${made.stderr}`);
  }
  const target = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
  const draft = loadModel(draftDir, { backend: "mlx" });
  const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
  const timed = async (it: () => AsyncGenerator<unknown>) => {
    const start = performance.now();
    let n = 0;
    for await (const _ of it()) n++;
    return n / ((performance.now() - start) / 1000);
  };
  const options = { maxTokens: MAX_TOKENS, ignoreEos: true };
  await timed(() => generate(target, tokenizer, PROMPT, options));
  const plainRates: number[] = [];
  for (let r = 0; r < REPS; r++) plainRates.push(await timed(() => generate(target, tokenizer, PROMPT, options)));
  const plain = summarize(plainRates);
  const ours: Record<number, { rate: number; accepted: number }> = {};
  for (const k of DRAFTS) {
    const rates: number[] = [];
    let stats: Partial<SpeculativeStats> = {};
    for (let r = 0; r <= REPS; r++) {
      stats = {};
      const rate = await timed(() =>
        speculativeGenerate(target, draft, tokenizer, PROMPT, { ...options, numDraftTokens: k }, stats),
      );
      if (r > 0) rates.push(rate);
    }
    ours[k] = { rate: summarize(rates).median, accepted: stats.acceptedTokens! / stats.generatedTokens! };
  }
  target.dispose();
  draft.dispose();
  const spec = join(tmpdir(), `mlxb-spec-${process.pid}.json`);
  writeFileSync(spec, JSON.stringify({ prompt: PROMPT, max_tokens: MAX_TOKENS, drafts: DRAFTS, reps: REPS }));
  const peer = runPeer("speculative.py", [DEFAULT_MODEL_DIR, draftDir, spec]) as Record<string, unknown>;
  const peerPlain = summarize(peer["plain"] as number[]).median;
  const rows: (string | number)[][] = [["plain", plain.median, "-", peerPlain, "-"]];
  for (const k of DRAFTS) {
    const p = peer[String(k)] as { tokens_per_second: number[]; from_draft: number };
    rows.push([`draft k=${k}`, ours[k]!.rate, ours[k]!.accepted, summarize(p.tokens_per_second).median, p.from_draft]);
  }
  table(
    `Speculative decoding, default model + its first 2 layers as draft, greedy, ${MAX_TOKENS} tokens (tokens/s; share of tokens from the draft)`,
    ["decoding", "mlx-bun", "from draft", "mlx-lm", "from draft"],
    rows,
  );
  return { ours, plain, peer };
}
