// Tensor: an owned handle to an MLX array (lazy until evaluated or read).
import type { Pointer } from "bun:ffi";
import { checkedShape, checkHolds, DTYPES, type DType, dtypeCode, itemSize, type TensorData } from "./dtype.ts";
import { check, native, outI32, outPointer, outSize, outWords } from "./native/ffi.ts";

type HostArray =
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint32Array
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Float16Array
  | BigInt64Array
  | BigUint64Array;

// biome-ignore lint/complexity/noBannedTypes: keyed by the typed arrays' constructors
const HOST_DTYPE = new Map<Function, DType>([
  [Float32Array, "float32"],
  [Float64Array, "float64"],
  [Int32Array, "int32"],
  [Uint32Array, "uint32"],
  [Uint8Array, "uint8"],
  [Int8Array, "int8"],
  [Uint16Array, "uint16"],
  [Int16Array, "int16"],
  [Float16Array, "float16"],
  [BigInt64Array, "int64"],
  [BigUint64Array, "uint64"],
]);

/** Plain numbers as the host array closest to `dtype`, after checking that `dtype` holds each of them
 * (numbers go in as float32 only when the dtype is float32 or narrower). */
function hostArrayOf(values: unknown[], dtype: DType): HostArray {
  checkHolds(values, dtype, "Tensor.from");
  const numbers = values as number[];
  switch (dtype) {
    case "float64":
      return Float64Array.from(numbers);
    case "int32":
      return Int32Array.from(numbers);
    case "uint32":
      return Uint32Array.from(numbers);
    case "int16":
      return Int16Array.from(numbers);
    case "uint16":
      return Uint16Array.from(numbers);
    case "int8":
      return Int8Array.from(numbers);
    case "uint8":
    case "bool":
      return Uint8Array.from(numbers);
    case "int64":
      return BigInt64Array.from(numbers, (v) => BigInt(v));
    case "uint64":
      return BigUint64Array.from(numbers, (v) => BigInt(v));
    default:
      return Float32Array.from(numbers);
  }
}

const HOST_INTEGER_DTYPES = new Set<DType>(["int32", "uint32", "int16", "uint16", "int8", "uint8", "bool"]);

/** Values of an integer dtype that int32 holds (uint32 as argmax returns: indices < 2^31), read on
 * the host; null for other dtypes. */
function hostIntegers(bytes: Uint8Array, dtype: DType): ArrayLike<number> | null {
  const { buffer, byteOffset, byteLength } = bytes;
  switch (dtype) {
    case "int32":
      return new Int32Array(buffer, byteOffset, byteLength / 4);
    case "uint32":
      return new Uint32Array(buffer, byteOffset, byteLength / 4);
    case "int16":
      return new Int16Array(buffer, byteOffset, byteLength / 2);
    case "uint16":
      return new Uint16Array(buffer, byteOffset, byteLength / 2);
    case "int8":
      return new Int8Array(buffer, byteOffset, byteLength);
    case "uint8":
    case "bool":
      return bytes;
    default:
      return null;
  }
}

/** A tensor's native side: freed once, by dispose(), the finalizer, or a sweep. */
interface Cell {
  handle: Pointer;
  /** Host bytes copied in by Tensor.from (outside MLX's allocator, so counted here). */
  hostBytes: number;
  ref: WeakRef<Tensor>;
  freed: boolean;
}

/** Frees a native array and takes it out of the counts. */
function free(handle: Pointer, copiedBytes: number): void {
  native().mlx_array_free(handle);
  liveTensors--;
  hostBytes -= copiedBytes;
}

function release(cell: Cell): void {
  if (cell.freed) return;
  cell.freed = true;
  free(cell.handle, cell.hostBytes);
}

// The safety net for tensors nobody disposed: frees the native handle when the wrapper is collected.
// A synchronous loop gives finalizers no turn, so once memory (MLX's active memory + host copies) has
// grown by `finalizerBound` bytes since the last sweep, construction forces a collection and frees
// the collected tensors' handles itself. Growth, not the total: a loaded model's weights are alive.
// Tracking (a cell, a WeakRef and a finalizer registration: together more than MLX's own op) is
// deferred: a new tensor waits in `young`, held strongly, until the next check, CHECK_EVERY
// constructions later; only the ones not disposed by then get a cell. Most eager tensors die younger.
const finalizer = new FinalizationRegistry<Cell>(release);
let cells: Cell[] = [];
let young: Tensor[] = [];
let hostBytes = 0;
let madeSinceCheck = 0;
const CHECK_EVERY = 64;
let finalizerBound = 4 * 2 ** 30;
/** Memory in use after the last sweep. */
let baseline = 0;

/** Sets the bytes (MLX active memory + host copies) past which forgotten tensors are collected
 * synchronously; returns the previous bound. */
export function setFinalizerBound(bytes: number): number {
  if (!(bytes > 0)) throw new Error(`setFinalizerBound: bytes must be positive, got ${bytes}`);
  const previous = finalizerBound;
  finalizerBound = bytes;
  return previous;
}

function memoryInUse(): number {
  const active = new BigUint64Array(1);
  check(native().mlx_get_active_memory(active), "memory check");
  return Number(active[0]) + hostBytes;
}

function sweepIfOverBound(): void {
  madeSinceCheck = 0;
  // Disposed tensors leave their cells behind: drop them once they outnumber the live ones.
  if (cells.length > 2 * liveTensors + 4096) cells = cells.filter((c) => !c.freed);
  if (memoryInUse() <= baseline + finalizerBound) return;
  Bun.gc(true);
  for (const c of cells) if (c.ref.deref() === undefined) release(c);
  cells = cells.filter((c) => !c.freed);
  baseline = memoryInUse();
}

let liveTensors = 0;

/** Tensors made inside each active tidy() scope, innermost last. */
const scopes: Tensor[][] = [];

/** Tensors (at any depth of arrays and plain objects) in a value. */
function tensorsIn(value: unknown, into: Set<Tensor>): Set<Tensor> {
  if (value instanceof Tensor) into.add(value);
  else if (Array.isArray(value)) for (const v of value) tensorsIn(v, into);
  else if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) tensorsIn(v, into);
  }
  return into;
}

/** Runs `fn` and disposes every Tensor made while it ran except those it returns (in arrays or
 * plain objects too), which pass to the enclosing tidy, if any (as TF.js's tidy). `fn` must be
 * synchronous. */
export function tidy<T>(fn: () => T): T {
  const made: Tensor[] = [];
  scopes.push(made);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of made) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    for (const t of made) t.dispose();
    throw new Error("tidy: fn must be synchronous (it returned a Promise)");
  }
  const kept = tensorsIn(result, new Set());
  for (const t of made) if (!kept.has(t)) t.dispose();
  const outer = scopes[scopes.length - 1];
  if (outer) for (const t of kept) if (made.includes(t)) outer.push(t);
  return result;
}

/** Number of tensors whose native array is alive (not disposed, not collected). For leak tests. */
export function liveTensorCount(): number {
  return liveTensors;
}

export class Tensor implements TensorData {
  #handle: Pointer | null;
  /** Set once the tensor is tracked (it outlived its first check, see `young`). */
  #cell: Cell | null = null;
  /** Host bytes copied in by Tensor.from, until the cell holds them. */
  #hostBytes = 0;
  #shape: readonly number[] | undefined;
  #dtype: DType | undefined;
  /** Optional label used in error messages (a weight path, say). */
  name: string | undefined;

  /** Wraps a handle the caller owns; the Tensor takes ownership. */
  constructor(handle: Pointer, name?: string) {
    this.#handle = handle;
    this.name = name;
    liveTensors++;
    // The first young tensor also schedules a check for when this job ends, so that young tensors
    // are tracked even if no more are made.
    if (young.push(this) === 1) queueMicrotask(Tensor.#checkYoung);
    scopes[scopes.length - 1]?.push(this);
    if (++madeSinceCheck >= CHECK_EVERY) Tensor.#check();
  }

  /** Frees now every tensor that nobody disposed and nothing holds any more (rather than when the
   * collector's finalizers get a turn), so that a count of live tensors does not change later by
   * itself; returns how many were freed. For leak tests. */
  static collectForgotten(): number {
    Tensor.#check();
    Bun.gc(true);
    let freed = 0;
    for (const c of cells) {
      if (!c.freed && c.ref.deref() === undefined) {
        release(c);
        freed++;
      }
    }
    cells = cells.filter((c) => !c.freed);
    return freed;
  }

  static #checkYoung = (): void => {
    if (young.length > 0) Tensor.#check();
  };

  /** Tracks the young tensors still alive (see `young`), then sweeps if memory grew past the bound. */
  static #check(): void {
    for (const t of young) {
      if (t.#handle === null) continue;
      const cell: Cell = { handle: t.#handle, hostBytes: t.#hostBytes, ref: new WeakRef(t), freed: false };
      t.#cell = cell;
      finalizer.register(t, cell, cell);
      cells.push(cell);
    }
    young = [];
    sweepIfOverBound();
  }

  /** Creates a tensor by copying host data. Typed arrays carry their dtype; `dtype` may narrow to
   * float16/bfloat16 (the conversion runs in MLX). */
  static from(data: HostArray | number[], shape?: readonly number[], dtype?: DType): Tensor {
    if (dtype !== undefined) dtypeCode(dtype);
    const host = Array.isArray(data) ? hostArrayOf(data, dtype ?? "float32") : data;
    const hostDtype = host == null ? undefined : HOST_DTYPE.get(host.constructor);
    if (!hostDtype)
      throw new Error(
        `Tensor.from: data must be an array of numbers or a typed array, got ${host == null ? String(host) : (host.constructor?.name ?? typeof host)}`,
      );
    // A conversion on the device would wrap integers (300 as int8 is 44) and cut fractions.
    if (dtype !== undefined && dtype !== hostDtype && !Array.isArray(data)) checkHolds(host, dtype, "Tensor.from");
    const dims = checkedShape(shape ?? [host.length], "Tensor.from");
    const count = dims.reduce((a, b) => a * b, 1);
    if (count !== host.length) {
      throw new Error(`Tensor.from: shape [${dims.join(", ")}] holds ${count} elements but data has ${host.length}`);
    }
    const t = Tensor.fromBytes(new Uint8Array(host.buffer, host.byteOffset, host.byteLength), dims, hostDtype);
    if (dtype === undefined || dtype === hostDtype) return t;
    using source = t;
    return source.astype(dtype);
  }

  /** Creates a tensor from raw little-endian bytes of `dtype` (e.g. bfloat16 weights). */
  static fromBytes(bytes: Uint8Array, shape: readonly number[], dtype: DType): Tensor {
    checkedShape(shape, "Tensor.fromBytes");
    const shapeArray = Int32Array.from(shape);
    const status = native().mlx_array_new_data(
      outWords,
      bytes.byteLength > 0 ? bytes : null,
      bytes.byteLength,
      shapeArray.length > 0 ? shapeArray : null,
      shape.length,
      dtypeCode(dtype),
    );
    check(status, "Tensor.fromBytes");
    const t = new Tensor(outPointer());
    t.#hostBytes = bytes.byteLength;
    if (t.#cell) t.#cell.hostBytes = bytes.byteLength; // tracked already, when construction ran a check
    hostBytes += bytes.byteLength;
    return t;
  }

  static scalar(value: number, dtype: DType = "float32"): Tensor {
    if (dtype === "int32") {
      check(native().mlx_array_new_int(outWords, value), "Tensor.scalar");
    } else {
      check(native().mlx_array_new_float(outWords, value, dtypeCode(dtype)), "Tensor.scalar");
    }
    return new Tensor(outPointer());
  }

  /** The native handle; throws if this tensor was disposed. */
  get handle(): Pointer {
    if (this.#handle === null) throw new Error(`Tensor${this.name ? ` '${this.name}'` : ""} used after dispose()`);
    return this.#handle;
  }

  get disposed(): boolean {
    return this.#handle === null;
  }

  get shape(): readonly number[] {
    if (this.#shape === undefined) {
      const lib = native();
      check(lib.mlx_array_ndim(outI32, this.handle), "Tensor.shape");
      const dims = new Int32Array(outI32[0]!);
      if (dims.length > 0) check(lib.mlx_array_shape(dims, this.handle), "Tensor.shape");
      this.#shape = Object.freeze(Array.from(dims));
    }
    return this.#shape;
  }

  get ndim(): number {
    return this.shape.length;
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get dtype(): DType {
    if (this.#dtype === undefined) {
      check(native().mlx_array_dtype(outI32, this.handle), "Tensor.dtype");
      this.#dtype = DTYPES[outI32[0]!]!;
    }
    return this.#dtype;
  }

  get nbytes(): number {
    check(native().mlx_array_nbytes(outWords, this.handle), "Tensor.nbytes");
    return outSize();
  }

  astype(dtype: DType): Tensor {
    check(native().mlx_astype(outWords, this.handle, dtypeCode(dtype)), () => `astype(${this.describe()}, ${dtype})`);
    return new Tensor(outPointer());
  }

  /** Whether the values exist already (made from host data, or evaluated): reading them waits for nothing. */
  get available(): boolean {
    check(native().mlx_array_available(outI32, this.handle), "Tensor.available");
    return outI32[0] === 1;
  }

  /** Runs the pending computation. */
  eval(): this {
    check(native().mlx_array_eval(this.handle), () => `eval(${this.describe()})`);
    return this;
  }

  /** Copies the raw row-major bytes to the host (evaluating first). */
  toBytes(): Uint8Array {
    const bytes = new Uint8Array(this.size * itemSize(this.dtype));
    check(
      native().mlx_array_to_host(bytes.byteLength > 0 ? bytes : null, bytes.byteLength, this.handle),
      () => `toBytes(${this.describe()})`,
    );
    return bytes;
  }

  /** Values as float32 (converted in MLX for other dtypes). */
  toFloat32Array(): Float32Array {
    const dtype = this.dtype;
    if (dtype === "float32") return new Float32Array(this.toBytes().buffer);
    // Half types convert on the host (exactly): an MLX astype would queue behind whatever the stream
    // is computing, as for integers.
    if (dtype === "bfloat16") {
      const halves = new Uint16Array(this.toBytes().buffer);
      const words = Uint32Array.from(halves, (h) => h << 16);
      return new Float32Array(words.buffer);
    }
    if (dtype === "float16") return Float32Array.from(new Float16Array(this.toBytes().buffer));
    using converted = this.astype("float32");
    return new Float32Array(converted.toBytes().buffer);
  }

  /** Values as int32 (converted in MLX for other dtypes). */
  toInt32Array(): Int32Array {
    // Narrow integer types convert on the host: an MLX astype would queue behind whatever the stream
    // is computing (reading step t's token would wait for step t+1).
    const values = HOST_INTEGER_DTYPES.has(this.dtype) ? hostIntegers(this.toBytes(), this.dtype) : null;
    if (values) return Int32Array.from(values);
    using converted = this.astype("int32");
    return new Int32Array(converted.toBytes().buffer);
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new Error(`item() needs one element, ${this.describe()} has ${this.size}`);
    return this.toFloat32Array()[0]!;
  }

  /** Frees the native array now. Idempotent. */
  dispose(): void {
    if (this.#handle === null) return;
    const cell = this.#cell;
    if (cell) {
      finalizer.unregister(cell);
      release(cell);
    } else {
      free(this.#handle, this.#hostBytes);
    }
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** A short label for messages: the name when set, else the shape and dtype. */
  describe(): string {
    if (this.name) return `'${this.name}'`;
    if (this.#handle === null) return "<disposed tensor>";
    return `tensor[${this.shape.join(",")}] ${this.dtype}`;
  }
}
