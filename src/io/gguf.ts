// GGUF checkpoints (llama.cpp's format): the header (metadata and tensor infos) is read here; the
// tensors by MLX's load_gguf through the shim. Q4_0, Q4_1 and Q8_0 stay quantized (MLX's affine
// layout, group 32); F32, F16 and BF16 load as they are; any other type is an Error naming the tensor.
// The metadata gives an HF-style config.json (llama, qwen2, qwen3) and a tokenizer.json (gpt2
// byte-level BPE, llama SentencePiece), and llama.cpp's names map to the HF ones the graphs use. llama
// checkpoints store q/k rows permuted for llama.cpp's rotary layout; those rows are put back.
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { check, native, outPointer, outWords } from "../native/ffi.ts";
import { parseQuantConfig, type QuantConfig, quantizationFor } from "../quant/config.ts";
import { packedTriple } from "../quant/weights.ts";
import { deviceInfo } from "../native/device.ts";
import { astype, evalAll, reshape, transpose } from "../ops/core.ts";
import { Tensor } from "../tensor.ts";

export interface GgufTensorInfo {
  name: string;
  /** Row-major (the reverse of GGUF's fastest-first dims). */
  shape: number[];
  type: number;
  /** Of its bytes, from the start of the data section. */
  offset: number;
}

/** Bytes of a tensor of a type this loader reads (null for the others: refused by name later). A
 * quantized row must be whole blocks of 32. */
function tensorBytes(t: GgufTensorInfo): number | null {
  const count = t.shape.reduce((a, b) => a * b, 1);
  const perBlock: Record<number, number> = { 2: 18, 3: 20, 8: 34 };
  if (perBlock[t.type] !== undefined)
    return t.shape.at(-1)! % 32 === 0 ? (count / 32) * perBlock[t.type]! : Number.POSITIVE_INFINITY;
  const element: Record<number, number> = { 0: 4, 1: 2, 30: 2 };
  return element[t.type] === undefined ? null : count * element[t.type]!;
}

export interface GgufHeader {
  metadata: Map<string, unknown>;
  tensors: GgufTensorInfo[];
}

const TYPE_NAMES: Record<number, string> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  6: "Q5_0",
  7: "Q5_1",
  8: "Q8_0",
  9: "Q8_1",
  10: "Q2_K",
  11: "Q3_K",
  12: "Q4_K",
  13: "Q5_K",
  14: "Q6_K",
  15: "Q8_K",
  16: "IQ2_XXS",
  17: "IQ2_XS",
  18: "IQ3_XXS",
  19: "IQ1_S",
  20: "IQ4_NL",
  21: "IQ3_S",
  22: "IQ2_S",
  23: "IQ4_XS",
  24: "I8",
  25: "I16",
  26: "I32",
  27: "I64",
  28: "F64",
  29: "IQ1_M",
  30: "BF16",
  34: "TQ1_0",
  35: "TQ2_0",
  39: "MXFP4",
};
const QUANTIZED: Record<number, number> = { 2: 4, 3: 4, 8: 8 };
const DENSE = new Set([0, 1, 30]);
const ARCHITECTURES = ["llama", "qwen2", "qwen3"];

/** Reads a GGUF file's header: metadata (numbers, strings, booleans and arrays of them) and tensor infos. */
export function readGgufHeader(path: string): GgufHeader {
  const fd = openSync(path, "r");
  try {
    const size = statSync(path).size;
    let buffer = new Uint8Array(0);
    let start = 0;
    let at = 0;
    // Reads on demand: the header (a tokenizer's vocabulary included) is a few MB of a large file.
    const need = (n: number) => {
      if (at + n <= start + buffer.length) return;
      if (at + n > size) throw new Error(`${path}: not a GGUF file (the header runs past the end)`);
      const length = Math.min(size - at, Math.max(n, 4 << 20));
      buffer = new Uint8Array(length);
      readSync(fd, buffer, 0, length, at);
      start = at;
    };
    const read = {
      u32: () => {
        need(4);
        const v = new DataView(buffer.buffer).getUint32(at - start, true);
        at += 4;
        return v;
      },
      u64: () => {
        need(8);
        const v = new DataView(buffer.buffer).getBigUint64(at - start, true);
        at += 8;
        if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${path}: a count in the GGUF header is too large`);
        return Number(v);
      },
      string: () => {
        const n = read.u64();
        need(n);
        const s = new TextDecoder().decode(buffer.subarray(at - start, at - start + n));
        at += n;
        return s;
      },
    };
    need(4);
    if (new TextDecoder().decode(buffer.subarray(0, 4)) !== "GGUF")
      throw new Error(`${path}: not a GGUF file (no GGUF magic)`);
    at = 4;
    const version = read.u32();
    if (version < 2 || version > 3) throw new Error(`${path}: GGUF version ${version} is not supported (2 or 3)`);
    const tensorCount = read.u64();
    const kvCount = read.u64();
    const scalar = (type: number): unknown => {
      const sizes: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
      if (type === 8) return read.string();
      const n = sizes[type];
      if (n === undefined) throw new Error(`${path}: unknown GGUF metadata type ${type}`);
      need(n);
      const d = new DataView(buffer.buffer, buffer.byteOffset + at - start, n);
      at += n;
      switch (type) {
        case 0:
          return d.getUint8(0);
        case 1:
          return d.getInt8(0);
        case 2:
          return d.getUint16(0, true);
        case 3:
          return d.getInt16(0, true);
        case 4:
          return d.getUint32(0, true);
        case 5:
          return d.getInt32(0, true);
        case 6:
          return d.getFloat32(0, true);
        case 7:
          return d.getUint8(0) !== 0;
        case 10:
          return Number(d.getBigUint64(0, true));
        case 11:
          return Number(d.getBigInt64(0, true));
        default:
          return d.getFloat64(0, true);
      }
    };
    const metadata = new Map<string, unknown>();
    for (let i = 0; i < kvCount; i++) {
      const key = read.string();
      const type = read.u32();
      if (type === 9) {
        const inner = read.u32();
        const count = read.u64();
        const values: unknown[] = new Array(count);
        for (let j = 0; j < count; j++) values[j] = scalar(inner);
        metadata.set(key, values);
      } else {
        metadata.set(key, scalar(type));
      }
    }
    const tensors: GgufTensorInfo[] = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = read.string();
      const dims = read.u32();
      if (dims > 4) throw new Error(`${path}: tensor '${name}' has ${dims} dimensions`);
      const shape: number[] = [];
      for (let d = 0; d < dims; d++) shape.unshift(read.u64());
      const type = read.u32();
      const offset = read.u64();
      tensors.push({ name, shape, type, offset });
    }
    // Every tensor's bytes must lie inside the file: MLX's reader maps it and would fault past the end.
    const alignment = metadata.get("general.alignment") ?? 32;
    if (typeof alignment !== "number" || !Number.isSafeInteger(alignment) || alignment < 1)
      throw new Error(`${path}: general.alignment must be a positive integer`);
    const dataStart = Math.ceil(at / alignment) * alignment;
    for (const t of tensors) {
      const bytes = tensorBytes(t);
      if (bytes !== null && dataStart + t.offset + bytes > size) {
        throw new Error(
          `${path}: tensor '${t.name}' runs past the end of the file (${dataStart + t.offset + bytes} > ${size} bytes; truncated?)`,
        );
      }
    }
    return { metadata, tensors };
  } finally {
    closeSync(fd);
  }
}

/** llama.cpp's tensor name -> the HF module path the graphs read (suffix kept). */
function hfName(name: string): string | null {
  const top: Record<string, string> = {
    token_embd: "model.embed_tokens",
    output_norm: "model.norm",
    output: "lm_head",
  };
  const layer: Record<string, string> = {
    attn_norm: "input_layernorm",
    attn_q: "self_attn.q_proj",
    attn_k: "self_attn.k_proj",
    attn_v: "self_attn.v_proj",
    attn_output: "self_attn.o_proj",
    attn_q_norm: "self_attn.q_norm",
    attn_k_norm: "self_attn.k_norm",
    ffn_norm: "post_attention_layernorm",
    ffn_gate: "mlp.gate_proj",
    ffn_up: "mlp.up_proj",
    ffn_down: "mlp.down_proj",
  };
  const m = /^(?:blk\.(\d+)\.)?([a-z_]+)\.(weight|bias|scales|biases)$/.exec(name);
  if (!m) return null;
  const [, block, module, suffix] = m;
  const path =
    block === undefined
      ? top[module!]
      : layer[module!] === undefined
        ? undefined
        : `model.layers.${block}.${layer[module!]}`;
  return path === undefined ? null : `${path}.${suffix}`;
}

function metaNumber(meta: Map<string, unknown>, key: string, path: string, fallback?: number): number {
  const v = meta.get(key);
  if (typeof v === "number") return v;
  if (fallback !== undefined) return fallback;
  throw new Error(`${path}: GGUF metadata '${key}' is missing`);
}

/** The HF-style config.json of a GGUF file (its quantization block per packed module). */
function configOf(header: GgufHeader, path: string): Record<string, unknown> {
  const meta = header.metadata;
  const arch = meta.get("general.architecture");
  if (typeof arch !== "string" || !ARCHITECTURES.includes(arch)) {
    throw new Error(
      `${path}: GGUF architecture ${JSON.stringify(arch)} is not supported (supported: ${ARCHITECTURES.join(", ")})`,
    );
  }
  const embedding = header.tensors.find((t) => t.name === "token_embd.weight");
  if (!embedding) throw new Error(`${path}: no token_embd.weight tensor`);
  const heads = metaNumber(meta, `${arch}.attention.head_count`, path);
  const hidden = metaNumber(meta, `${arch}.embedding_length`, path);
  const eos = meta.get("tokenizer.ggml.eos_token_id");
  const quantization: Record<string, unknown> = {};
  for (const t of header.tensors) {
    const bits = QUANTIZED[t.type];
    const module = hfName(t.name)?.replace(/\.weight$/, "");
    if (bits !== undefined && module) quantization[module] = { group_size: 32, bits, mode: "affine" };
  }
  const config: Record<string, unknown> = {
    model_type: arch,
    hidden_size: hidden,
    num_hidden_layers: metaNumber(meta, `${arch}.block_count`, path),
    intermediate_size: metaNumber(meta, `${arch}.feed_forward_length`, path),
    num_attention_heads: heads,
    num_key_value_heads: metaNumber(meta, `${arch}.attention.head_count_kv`, path, heads),
    head_dim: metaNumber(meta, `${arch}.attention.key_length`, path, hidden / heads),
    rms_norm_eps: metaNumber(meta, `${arch}.attention.layer_norm_rms_epsilon`, path),
    rope_theta: metaNumber(meta, `${arch}.rope.freq_base`, path, 10000),
    max_position_embeddings: metaNumber(meta, `${arch}.context_length`, path),
    vocab_size: embedding.shape[0],
    tie_word_embeddings: !header.tensors.some((t) => t.name === "output.weight"),
    ...(typeof eos === "number" ? { eos_token_id: eos } : {}),
  };
  if (Object.keys(quantization).length > 0) config["quantization"] = quantization;
  return config;
}

/** A loaded GGUF file as checkpoint.ts's Checkpoint has it (less the path). */
export interface GgufCheckpoint {
  config: Record<string, unknown>;
  quantization: QuantConfig | null;
  weights: Map<string, Tensor>;
  dispose(): void;
}

/** Loads a GGUF checkpoint: an HF-style config, and the tensors under HF names (Q4_0/Q4_1/Q8_0 as
 * packed triples). */
export function loadGguf(path: string): GgufCheckpoint {
  const header = readGgufHeader(path);
  for (const t of header.tensors) {
    if (!DENSE.has(t.type) && QUANTIZED[t.type] === undefined) {
      throw new Error(
        `${path}: tensor '${t.name}' is ${TYPE_NAMES[t.type] ?? `type ${t.type}`}; supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0`,
      );
    }
  }
  const config = configOf(header, path);
  for (const t of header.tensors) {
    if (!hfName(t.name)) throw new Error(`${path}: tensor '${t.name}' has no place in a ${config["model_type"]} model`);
  }
  const quantization = parseQuantConfig(config);
  const lib = native();
  check(lib.mlx_gguf_load(outWords, Buffer.from(`${path}\0`)), () => `loadModel(${path})`);
  const handle = outPointer();
  const weights = new Map<string, Tensor>();
  const dispose = () => {
    for (const t of weights.values()) t.dispose();
    weights.clear();
  };
  try {
    const take = (name: string) => {
      check(lib.mlx_gguf_take(outWords, handle, Buffer.from(`${name}\0`)), () => `${path}: tensor '${name}'`);
      return new Tensor(outPointer(), name);
    };
    for (const t of header.tensors) {
      const names =
        QUANTIZED[t.type] === undefined
          ? [t.name]
          : [t.name, t.name.replace(/\.weight$/, ".scales"), t.name.replace(/\.weight$/, ".biases")];
      for (const name of names) weights.set(hfName(name)!, take(name));
    }
    if (config["model_type"] === "llama") unpermuteQueryKey(weights, config);
    // MLX's CPU kernels compute float16 slowly (the activations follow the scales' dtype): there the
    // float16 scales and biases become float32 (1/16 of a Q4_0 weight's bytes).
    if (deviceInfo().device === "cpu") {
      const converted: Tensor[] = [];
      for (const [key, w] of weights) {
        if (!/\.(scales|biases)$/.test(key) || w.dtype !== "float16") continue;
        const wide = astype(w, "float32");
        weights.set(key, wide);
        converted.push(wide);
        w.dispose();
      }
      evalAll(converted);
    }
    for (const key of weights.keys()) {
      if (!key.endsWith(".scales")) continue;
      const module = key.slice(0, -".scales".length);
      packedTriple(weights, module, quantizationFor(quantization, module)!);
    }
  } catch (e) {
    dispose();
    throw e;
  } finally {
    lib.mlx_gguf_free(handle);
  }
  return { config, quantization, weights, dispose };
}

/** llama.cpp's converter reorders each head's q and k rows from HF's rotate-half layout to
 * interleaved pairs (rows [0, d/2) and [d/2, d) of a head alternate); this puts them back, for the
 * packed codes, scales and biases alike (whole rows move). */
function unpermuteQueryKey(weights: Map<string, Tensor>, config: Record<string, unknown>): void {
  const layers = config["num_hidden_layers"] as number;
  for (let l = 0; l < layers; l++) {
    for (const [proj, heads] of [
      ["q_proj", config["num_attention_heads"]],
      ["k_proj", config["num_key_value_heads"]],
    ] as const) {
      for (const suffix of ["weight", "scales", "biases", "bias"]) {
        const key = `model.layers.${l}.self_attn.${proj}.${suffix}`;
        const w = weights.get(key);
        if (!w) continue;
        const [rows, ...rest] = w.shape as [number, ...number[]];
        const h = heads as number;
        // GGUF row r of a head: pair index r >> 1, half r & 1 -> HF row (r & 1) * d/2 + (r >> 1).
        using grouped = reshape(w, [h, rows / h / 2, 2, ...rest]);
        using swapped = transpose(grouped, [0, 2, 1, ...rest.map((_, i) => 3 + i)]);
        const back = reshape(swapped, [rows, ...rest]);
        w.dispose();
        weights.set(key, back);
      }
    }
  }
}
