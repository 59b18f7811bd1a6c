// Safetensors: header parsing with hard limits in TS; tensor data mapped by the shim (no copy on CPU).
import { closeSync, fstatSync, openSync, readSync, writeFileSync } from "node:fs";
import { check, native, outPointer, outWords } from "../native/ffi.ts";
import { type DType, dtypeCode, itemSize } from "../dtype.ts";
import { Tensor } from "../tensor.ts";

/** Safetensors dtype names we accept, and the MLX dtype each becomes. */
const DTYPES: Record<string, DType> = {
  BOOL: "bool",
  U8: "uint8",
  I8: "int8",
  U16: "uint16",
  I16: "int16",
  U32: "uint32",
  I32: "int32",
  U64: "uint64",
  I64: "int64",
  F16: "float16",
  BF16: "bfloat16",
  F32: "float32",
  F64: "float64",
};
const NAMES = Object.fromEntries(Object.entries(DTYPES).map(([k, v]) => [v, k])) as Record<DType, string>;

/** Same cap as the reference implementation: a larger header is refused before it is read. */
export const MAX_HEADER_BYTES = 100_000_000;
const MAX_RANK = 8;

export interface TensorEntry {
  dtype: DType;
  shape: number[];
  /** Byte offsets relative to the start of the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
  /** File offset of the data section (8 + header length). */
  dataStart: number;
}

/** Validates the header of a file of `fileSize` bytes whose first bytes are `prefix` (at least the
 * 8-byte length and the JSON header). Every error names `source` and, where known, the tensor. */
export function parseHeader(prefix: Uint8Array, fileSize: number, source: string): SafetensorsHeader {
  const fail = (why: string): never => {
    throw new Error(`${source}: invalid safetensors: ${why}`);
  };
  if (fileSize < 8 || prefix.byteLength < 8) fail(`file has ${fileSize} bytes, fewer than the 8-byte header length`);
  const length = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) fail(`header length ${length} exceeds the ${MAX_HEADER_BYTES}-byte cap`);
  const headerBytes = Number(length);
  const dataStart = 8 + headerBytes;
  if (dataStart > fileSize)
    fail(`header length ${headerBytes} runs past the end of the ${fileSize}-byte file (truncated?)`);
  if (prefix.byteLength < dataStart) fail("header not fully read");
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(prefix.subarray(8, dataStart)));
  } catch (e) {
    fail(`header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) fail("header is not a JSON object");
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) fail("__metadata__ is not an object");
      for (const [k, v] of Object.entries(raw as object))
        if (typeof v !== "string") fail(`__metadata__.${k} is not a string`);
      metadata = raw as Record<string, string>;
      continue;
    }
    const at = (why: string): never => fail(`tensor '${name}': ${why}`);
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) at("entry is not an object");
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    const mlxDtype = typeof dtype === "string" ? DTYPES[dtype] : undefined;
    if (!mlxDtype) at(`dtype ${JSON.stringify(dtype)} is not one of ${Object.keys(DTYPES).join(", ")}`);
    if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      at(`shape ${JSON.stringify(shape)} is not a list of at most ${MAX_RANK} non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      at(`data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) at(`data_offsets begin ${begin} > end ${end}`);
    if (end > dataSize) at(`data_offsets end ${end} beyond the ${dataSize}-byte data section (truncated?)`);
    const dims = shape as number[];
    const bytes = dims.reduce((a, b) => a * b, 1) * itemSize(mlxDtype!);
    if (bytes !== end - begin)
      at(`shape [${dims}] of ${dtype} needs ${bytes} bytes but data_offsets span ${end - begin}`);
    tensors.set(name, { dtype: mlxDtype!, shape: dims, begin, end });
  }
  const spans = [...tensors].filter(([, e]) => e.end > e.begin).sort((a, b) => a[1].begin - b[1].begin);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i]![1].begin < spans[i - 1]![1].end) fail(`tensors '${spans[i - 1]![0]}' and '${spans[i]![0]}' overlap`);
  }
  return { tensors, metadata, dataStart };
}

/** Reads and validates the header of a .safetensors file (reads only the header bytes). */
export function readHeader(path: string): SafetensorsHeader {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const lengthBytes = new Uint8Array(8);
    readSync(fd, lengthBytes, 0, Math.min(8, size), 0);
    const length = size >= 8 ? new DataView(lengthBytes.buffer).getBigUint64(0, true) : 0n;
    // Read no more than the cap and the file allow; parseHeader reports what is wrong.
    const want = 8 + Number(length > BigInt(MAX_HEADER_BYTES) ? 0n : length);
    const prefix = new Uint8Array(Math.min(want, size));
    readSync(fd, prefix, 0, prefix.byteLength, 0);
    return parseHeader(prefix, size, path);
  } finally {
    closeSync(fd);
  }
}

/** Loads every tensor of a .safetensors file. Tensors are views of a private file mapping (the file
 * is never modified); each keeps the mapping alive until disposed. Names are set to the keys. */
export function loadSafetensors(path: string): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const header = readHeader(path);
  const lib = native();
  const sizeOut = new BigUint64Array(1);
  check(lib.mlx_file_map_open(outWords, sizeOut, Buffer.from(`${path}\0`)), () => `loadSafetensors(${path})`);
  const map = outPointer();
  const tensors = new Map<string, Tensor>();
  try {
    for (const [name, e] of header.tensors) {
      const shape = e.shape.length > 0 ? Int32Array.from(e.shape) : null;
      check(
        lib.mlx_array_new_mapped(
          outWords,
          map,
          header.dataStart + e.begin,
          e.end - e.begin,
          shape,
          e.shape.length,
          dtypeCode(e.dtype),
        ),
        () => `${path}: tensor '${name}'`,
      );
      tensors.set(name, new Tensor(outPointer(), name));
    }
  } catch (e) {
    for (const t of tensors.values()) t.dispose();
    throw e;
  } finally {
    lib.mlx_file_map_close(map);
  }
  return { tensors, metadata: header.metadata };
}

/** Writes tensors as a .safetensors file (header padded to 8 bytes, keys in the given order). */
export function saveSafetensors(path: string, tensors: Map<string, Tensor>, metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const bytes = t.toBytes();
    header[name] = { dtype: NAMES[t.dtype], shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const jsonBytes = new Uint8Array(json.byteLength + ((8 - (json.byteLength % 8)) % 8)).fill(0x20);
  jsonBytes.set(json);
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(jsonBytes.byteLength), true);
  writeFileSync(path, Buffer.concat([head, jsonBytes, ...chunks]));
}
