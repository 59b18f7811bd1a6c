// The demo: until model loading lands, it runs each fast op on random inputs and prints the result.
import { deviceInfo, fast, ops, Tensor } from "./index.ts";

function random(shape: number[]): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 12.9898) * 0.5;
  return Tensor.from(data, shape);
}

function show(label: string, t: Tensor): void {
  const values = Array.from(t.toFloat32Array().slice(0, 4), (v) => v.toFixed(4)).join(", ");
  console.log(`${label.padEnd(34)} [${t.shape.join(",")}] ${t.dtype}  ${values}, ...`);
}

const { device, mlxVersion } = deviceInfo();
console.log(`mlx-bun on MLX ${mlxVersion} (${device})`);
using x = random([1, 8, 64]);
using w = random([64]);
using b = random([64]);
using q = random([1, 8, 8, 64]);
using kv = random([1, 2, 8, 64]);
using norm = fast.rmsNorm(x, w, 1e-5);
using ln = fast.layerNorm(x, w, b, 1e-5);
using roped = fast.rope(q, { dims: 64, base: 10000, offset: 3 });
using attention = fast.scaledDotProductAttention(roped, kv, kv, { scale: 1 / 8, mask: "causal" });
using gated = fast.swiglu(x, norm);
using next = ops.argmax(attention, -1);
show("rms_norm", norm);
show("layer_norm (weight+bias)", ln);
show("rope (offset 3)", roped);
show("sdpa (causal, GQA 8q/2kv heads)", attention);
show("swiglu", gated);
show("argmax", next);
