// A linear layer by module path over a weight map: quantizedMatmul for packed layers, else matmul.
import { add, addmm, concatenate, matmul, reshape, slice, split, transpose } from "../ops/core.ts";
import {
  type Activations,
  type QuantParams,
  quantizedMatmul,
  quantizedMatmulAdd,
  quantizedMatmulAddNorm,
  quantizedMatmulQkNormRope,
  quantizedMatmulSplit,
  quantizedMatmulSwiglu,
} from "../ops/quant.ts";
import type { Tensor } from "../tensor.ts";
import {
  qkNormRope as fastQkNormRope,
  rmsNorm as fastRmsNorm,
  type RopeOptions,
  swiglu as fastSwiglu,
} from "../ops/fast.ts";
import { type QuantConfig, quantizationFor } from "./config.ts";
import { packedTriple } from "./weights.ts";

/** A layer's tensors and quantization, resolved and checked once per weight map. */
interface Layer {
  weight: Tensor;
  scales: Tensor | undefined;
  bias: Tensor | undefined;
  quantization: QuantConfig | null;
  packed: {
    triple: { weight: Tensor; scales: Tensor; biases: Tensor | null };
    params: QuantParams & { transpose: true; activations: Activations };
  } | null;
}

const layers = new WeakMap<ReadonlyMap<string, Tensor>, Map<string, Layer>>();

/** The layer at `module`, from the cache while the map still holds the same tensors. A fused
 * layer (fuseLinears) is quantized as its first member (`paramsOf`). */
function layerOf(
  weights: ReadonlyMap<string, Tensor>,
  module: string,
  quantization: QuantConfig | null,
  paramsOf = module,
): Layer {
  let known = layers.get(weights);
  if (!known) layers.set(weights, (known = new Map()));
  const weight = weights.get(`${module}.weight`);
  const scales = weights.get(`${module}.scales`);
  const bias = weights.get(`${module}.bias`);
  const hit = known.get(module);
  if (hit && hit.weight === weight && hit.scales === scales && hit.bias === bias && hit.quantization === quantization)
    return hit;
  if (!weight) throw new Error(`linear: no weight '${module}.weight'`);
  let packed: Layer["packed"] = null;
  if (scales) {
    const params = quantizationFor(quantization, paramsOf);
    if (!params) throw new Error(`linear: '${module}' is packed but the quantization config leaves it dense`);
    const activations = quantization?.activations ?? "float";
    packed = { triple: packedTriple(weights, module, params), params: { ...params, transpose: true, activations } };
  }
  const layer = { weight, scales, bias, quantization, packed };
  known.set(module, layer);
  return layer;
}

/** y = x W^T (+ b) for the layer at `module` ("model.layers.0.self_attn.q_proj"). */
export function linear(
  x: Tensor,
  weights: ReadonlyMap<string, Tensor>,
  module: string,
  quantization: QuantConfig | null,
  paramsOf = module,
): Tensor {
  const { weight, bias, packed } = layerOf(weights, module, quantization, paramsOf);
  let y: Tensor;
  if (packed) {
    y = quantizedMatmul(x, packed.triple, packed.params);
  } else {
    using wt = transpose(weight);
    // One primitive for product and bias, as mlx.nn.Linear.
    if (bias) return addmm(bias, x, wt);
    y = matmul(x, wt);
  }
  if (!bias) return y;
  using unbiased = y;
  return add(unbiased, bias);
}

/** linear(x, ...) + addend: for a packed layer without a bias, one op (quantizedMatmulAdd: the
 * decode-time kernels add it as they write, with the same result); otherwise linear, then add. */
export function linearAdd(
  x: Tensor,
  addend: Tensor,
  weights: ReadonlyMap<string, Tensor>,
  module: string,
  quantization: QuantConfig | null,
): Tensor {
  const { bias, packed } = layerOf(weights, module, quantization);
  if (packed && !bias) {
    return quantizedMatmulAdd(x, packed.triple, addend, packed.params);
  }
  using y = linear(x, weights, module, quantization);
  return add(y, addend);
}

/** [linearAdd(x, addend, ...), rmsNorm of it with normWeight and eps]: for a packed layer without a
 * bias one op (quantizedMatmulAddNorm: on a CUDA GPU the decode-time matvec writes the norm too). */
export function linearAddNorm(
  x: Tensor,
  addend: Tensor,
  normWeight: Tensor,
  eps: number,
  weights: ReadonlyMap<string, Tensor>,
  module: string,
  quantization: QuantConfig | null,
): [Tensor, Tensor] {
  const { bias, packed } = layerOf(weights, module, quantization);
  if (packed && !bias) return quantizedMatmulAddNorm(x, packed.triple, addend, normWeight, eps, packed.params);
  const sum = linearAdd(x, addend, weights, module, quantization);
  try {
    return [sum, fastRmsNorm(sum, normWeight, eps)];
  } catch (e) {
    sum.dispose();
    throw e;
  }
}

/** swiglu(gate(x), up(x)) for an MLP's gate and up layers: for their fused packed weight without a
 * bias one op (quantizedMatmulSwiglu: on a CUDA GPU the decode-time matvec writes the swiglu of its
 * two halves), else fusedLinear's outputs through fast swiglu; the same values either way. */
export function fusedLinearSwiglu(
  x: Tensor,
  weights: ReadonlyMap<string, Tensor>,
  gate: string,
  up: string,
  quantization: QuantConfig | null,
): Tensor {
  const name = fusedName([gate, up]);
  const widths = [gate, up].map((m) => weights.get(`${m}.weight`)?.shape[0]);
  if (weights.has(`${name}.weight`) && widths[0] === widths[1]) {
    const { bias, packed } = layerOf(weights, name, quantization, gate);
    if (packed && !bias) return quantizedMatmulSwiglu(x, packed.triple, packed.params);
  }
  const [g, u] = fusedLinear(x, weights, [gate, up], quantization);
  try {
    return fastSwiglu(g!, u!);
  } finally {
    g!.dispose();
    u!.dispose();
  }
}

/** fusedLinear(x, weights, [q, k, v], quantization, shapes) for an attention's q, k and v
 * projections in their heads' shapes (q [B, Hq, 1, D], k and v [B, Hk, 1, D]), then qkNormRope of q
 * and k: [q, k, v]. One op for their fused packed weight (quantizedMatmulQkNormRope: on a CUDA GPU,
 * for one row, the matvec writes q and k normed and rotated); else the layers, then qkNormRope. */
export function fusedLinearQkNormRope(
  x: Tensor,
  weights: ReadonlyMap<string, Tensor>,
  modules: readonly [string, string, string],
  shapes: readonly [readonly number[], readonly number[], readonly number[]],
  qWeight: Tensor,
  kWeight: Tensor,
  eps: number,
  rope: RopeOptions & { offset: Tensor },
  quantization: QuantConfig | null,
): [Tensor, Tensor, Tensor] {
  const name = fusedName(modules);
  if (weights.has(`${name}.weight`)) {
    const { bias, packed } = layerOf(weights, name, quantization, modules[0]);
    if (packed && !bias)
      return quantizedMatmulQkNormRope(x, packed.triple, shapes, qWeight, kWeight, eps, rope, packed.params);
  }
  const [q, k, v] = fusedLinear(x, weights, modules, quantization, shapes);
  try {
    return [...fastQkNormRope(q!, k!, qWeight, kWeight, eps, rope), v!];
  } catch (e) {
    v!.dispose();
    throw e;
  } finally {
    q!.dispose();
    k!.dispose();
  }
}

/** The weight-map name of several layers fused into one (rows concatenated in this order). */
export function fusedName(modules: readonly string[]): string {
  return modules.join("+");
}

const PARTS = ["weight", "scales", "biases", "bias"] as const;

/** Whether `modules` can be one matmul: all present, all packed alike (same quantization, dtypes)
 * or all dense, biased alike, over the same input features. */
function fusable(
  weights: ReadonlyMap<string, Tensor>,
  modules: readonly string[],
  quantization: QuantConfig | null,
): boolean {
  const first = modules[0]!;
  const params = JSON.stringify(quantizationFor(quantization, first));
  const signature = (m: string) =>
    PARTS.map((part) => {
      const t = weights.get(`${m}.${part}`);
      return t ? `${part}:${t.dtype}:${t.shape.slice(1).join("x")}` : "";
    }).join("|");
  const reference = signature(first);
  return modules.every(
    (m) =>
      weights.has(`${m}.weight`) &&
      signature(m) === reference &&
      JSON.stringify(quantizationFor(quantization, m)) === params,
  );
}

/** Fuses the layers of each group into one weight (`fusedName`, rows concatenated) so that fusedLinear
 * runs them as one matmul; each member's tensors become row slices of the fused ones (views, so the
 * weights need not be held twice). The fused tensors and views are appended to `made` (the caller
 * disposes them); returns the member tensors replaced, by key (the caller frees or keeps them).
 * Groups that cannot be fused are left as they are. */
export function fuseLinears(
  weights: Map<string, Tensor>,
  groups: readonly (readonly string[])[],
  quantization: QuantConfig | null,
  made: Tensor[],
): Map<string, Tensor> {
  const replaced = new Map<string, Tensor>();
  for (const modules of groups) {
    const name = fusedName(modules);
    if (weights.has(`${name}.weight`) || !fusable(weights, modules, quantization)) continue;
    for (const part of PARTS) {
      const members = modules.map((m) => weights.get(`${m}.${part}`));
      if (members.some((t) => t === undefined)) continue;
      const tensors = members as Tensor[];
      const fused = concatenate(tensors, 0);
      fused.eval();
      made.push(fused);
      weights.set(`${name}.${part}`, fused);
      let row = 0;
      modules.forEach((m, i) => {
        const t = tensors[i]!;
        const view = slice(fused, [row, ...t.shape.slice(1).map(() => 0)], [row + t.shape[0]!, ...t.shape.slice(1)]);
        view.eval();
        made.push(view);
        replaced.set(`${m}.${part}`, t);
        weights.set(`${m}.${part}`, view);
        row += t.shape[0]!;
      });
    }
  }
  return replaced;
}

/** The layers `modules` over one input: one matmul over their fused weight when fuseLinears made it
 * (outputs split along the last axis), else one linear each; output i reshaped to shapes[i] where
 * given. A packed fused layer without bias is one op (quantizedMatmulSplit: for one row, one MLX node
 * for the product, the split and the reshapes). */
export function fusedLinear(
  x: Tensor,
  weights: ReadonlyMap<string, Tensor>,
  modules: readonly string[],
  quantization: QuantConfig | null,
  shapes: readonly (readonly number[] | null)[] = [],
): Tensor[] {
  const name = fusedName(modules);
  const shaped = (y: Tensor, i: number) => {
    const shape = shapes[i];
    if (!shape) return y;
    using unshaped = y;
    return reshape(unshaped, shape);
  };
  if (!weights.has(`${name}.weight`)) return modules.map((m, i) => shaped(linear(x, weights, m, quantization), i));
  const widths = modules.map((m) => weights.get(`${m}.weight`)!.shape[0]!);
  const { bias, packed } = layerOf(weights, name, quantization, modules[0]);
  if (packed && !bias) {
    const lead = x.shape.slice(0, -1);
    return quantizedMatmulSplit(
      x,
      packed.triple,
      widths.map((w, i) => shapes[i] ?? [...lead, w]),
      packed.params,
    );
  }
  using y = linear(x, weights, name, quantization, modules[0]);
  return split(y, widths, -1).map(shaped);
}
