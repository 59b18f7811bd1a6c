// One rank of test/distributed.test.ts's tensor-parallel check (or a single process when MLX_RANK is
// unset): the prompt's logits and 12 greedy tokens of the model in argv[2], as one JSON line.
import { forward, generateText, Group, loadModel, Tensor, Tokenizer } from "../../src/index.ts";

const dir = process.argv[2]!;
const group = process.env["MLX_RANK"] === undefined ? undefined : Group.init({ backend: "ring" });
const model = loadModel(dir, { backend: "mlx", group });
const prompt = [3, 17, 42, 99, 7, 250, 18, 64];
using ids = Tensor.from(Int32Array.from(prompt), [1, prompt.length]);
using logits = forward(model, ids, { logits: "all" });
const { tokens } = await generateText(model, Tokenizer.fromDir(dir), prompt, { maxTokens: 12, ignoreEos: true });
// Bytes of the weights the model holds: all of them, and the projections' (sharded across ranks).
const held = [...model.checkpoint.weights].map(([key, t]) => ({ projection: /_proj\./.test(key), bytes: t.nbytes }));
const bytes = held.reduce((n, w) => n + w.bytes, 0);
const projectionBytes = held.reduce((n, w) => n + (w.projection ? w.bytes : 0), 0);
console.log(
  JSON.stringify({
    rank: group?.rank ?? 0,
    size: group?.size ?? 1,
    heads: model.config.heads,
    tokens,
    logits: Array.from(logits.toFloat32Array()),
    bytes,
    projectionBytes,
  }),
);
model.dispose();
group?.dispose();
