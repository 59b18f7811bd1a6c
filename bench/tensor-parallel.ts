// Tensor parallelism: decode tokens/s of one model in one process vs as N ranks of one MLX group
// (`mlx-bun launch -n N --backend B`), greedy, same prompt; and whether the ranks' tokens equal the
// single process's. MLXB_TP_RANKS (default 2), MLXB_TP_BACKEND (default nccl on a GPU, else ring),
// MLXB_BENCH_MODELS as for `decode` (default: default). Run as `--rank DIR`, this file is one rank
// (or the single process when MLX_RANK is unset) and prints one JSON line.
import { join } from "node:path";
import { deviceInfo, generate, type GenerationStats, Group, loadModel, Tokenizer } from "../src/index.ts";
import { benchModel } from "./decode.ts";
import { summarize, table } from "./stats.ts";

const PROMPT = Array.from({ length: 128 }, (_, i) => (i * 37) % 1000);
const TOKENS = 32;
const REPEATS = 3;

interface RankResult {
  rank: number;
  size: number;
  decode: number[];
  tokens: number[];
}

async function rank(dir: string, backend: "ring" | "nccl"): Promise<RankResult> {
  const group = process.env["MLX_RANK"] === undefined ? undefined : Group.init({ backend });
  const model = loadModel(dir, { backend: "mlx", group });
  const tokenizer = Tokenizer.fromDir(dir);
  const decode: number[] = [];
  let tokens: number[] = [];
  for (let r = 0; r <= REPEATS; r++) {
    const stats: Partial<GenerationStats> = {};
    tokens = [];
    for await (const chunk of generate(
      model,
      tokenizer,
      PROMPT,
      { maxTokens: TOKENS, ignoreEos: true, temperature: 0 },
      stats,
    ))
      tokens.push(chunk.token);
    if (r > 0) decode.push((stats.generatedTokens! - 1) / stats.decodeSeconds!);
  }
  model.dispose();
  const result = { rank: group?.rank ?? 0, size: group?.size ?? 1, decode, tokens };
  group?.dispose();
  return result;
}

function runRanks(command: string[]): RankResult[] {
  const done = Bun.spawnSync(command, { stdout: "pipe", stderr: "pipe" });
  if (done.exitCode !== 0)
    throw new Error(
      `bench tensor-parallel: ${command.join(" ")} failed (${done.exitCode}): ${done.stderr.toString().slice(-2000)}`,
    );
  return done.stdout
    .toString()
    .trim()
    .split("\n")
    .filter((l) => l.includes("{"))
    .map((l) => JSON.parse(l.replace(/^\[\d+\] /, "")) as RankResult);
}

export function run(): Record<string, unknown> {
  const ranks = Number(process.env.MLXB_TP_RANKS ?? 2);
  const backend = (process.env.MLXB_TP_BACKEND ?? (deviceInfo().device === "gpu" ? "nccl" : "ring")) as "ring" | "nccl";
  const models = (process.env.MLXB_BENCH_MODELS ?? "default").split(",").map((m) => m.trim());
  const bin = join(import.meta.dir, "..", "src", "bin.ts");
  const rows: (string | number)[][] = [];
  const results: Record<string, unknown> = { ranks, backend };
  for (const name of models) {
    const dir = benchModel(name);
    const self = [process.execPath, import.meta.path, "--rank", dir, backend];
    const [single] = runRanks(self);
    const group = runRanks([process.execPath, bin, "launch", "-n", String(ranks), "--backend", backend, "--", ...self]);
    const one = summarize(single!.decode);
    const many = summarize(group.find((r) => r.rank === 0)!.decode);
    // Leading greedy tokens every rank shares with the single process (bf16 near-ties may part later).
    const leading = (tokens: number[]) => {
      const at = tokens.findIndex((t, i) => t !== single!.tokens[i]);
      return at < 0 ? tokens.length : at;
    };
    const same = Math.min(...group.map((r) => leading(r.tokens)));
    rows.push([name, one.median, many.median, many.median / one.median, `${same}/${TOKENS}`, one.spread, many.spread]);
    results[name] = { single, group };
  }
  table(
    `Tensor parallel decode (${backend}, ${ranks} ranks vs one process; ${PROMPT.length}-token prompt + ${TOKENS}, greedy, median of ${REPEATS})`,
    ["model", "1 process tok/s", `${ranks} ranks tok/s`, "ratio", "same leading tokens", "spread 1", `spread ${ranks}`],
    rows,
  );
  return results;
}

if (import.meta.main && process.argv[2] === "--rank")
  console.log(JSON.stringify(await rank(process.argv[3]!, process.argv[4] as "ring" | "nccl")));
