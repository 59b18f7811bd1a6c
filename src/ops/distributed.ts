// MLX's distributed layer: a group of processes (the ring backend over TCP for CPUs, NCCL for CUDA
// GPUs; `mlx-bun launch` starts the processes with the environment MLX reads) and the collectives a
// sharded forward needs. Collectives are lazy MLX ops like any other.
import type { Pointer } from "bun:ffi";
import { check, native, pointerFromWord } from "../native/ffi.ts";
import { call, handleOf } from "./call.ts";
import type { Tensor } from "../tensor.ts";

export const DISTRIBUTED_BACKENDS = ["any", "ring", "nccl", "mpi"] as const;
export type DistributedBackend = (typeof DISTRIBUTED_BACKENDS)[number];

const BACKEND_NAMES = new Map(DISTRIBUTED_BACKENDS.map((b) => [b, Buffer.from(`${b}\0`)]));

export class Group {
  readonly rank: number;
  readonly size: number;
  #handle: Pointer | null;

  private constructor(handle: Pointer) {
    this.#handle = handle;
    const out = new Int32Array(1);
    check(native().mlx_distributed_rank(out, handle), "Group.rank");
    this.rank = out[0]!;
    check(native().mlx_distributed_size(out, handle), "Group.size");
    this.size = out[0]!;
  }

  /** This process's group. `strict` (default true): an Error when no backend starts, rather than a
   * group of one. Under `mlx-bun launch` the ring backend finds its peers in MLX_HOSTFILE. */
  static init(options: { backend?: DistributedBackend; strict?: boolean } = {}): Group {
    const backend = options.backend ?? "any";
    const name = BACKEND_NAMES.get(backend);
    if (!name)
      throw new Error(`Group.init: backend must be one of ${DISTRIBUTED_BACKENDS.join(", ")}, got '${backend}'`);
    const out = new BigUint64Array(1);
    check(native().mlx_distributed_init(out, name, options.strict === false ? 0 : 1), () => `Group.init(${backend})`);
    return new Group(pointerFromWord(out[0]!));
  }

  get handle(): Pointer {
    if (this.#handle === null) throw new Error("Group used after dispose()");
    return this.#handle;
  }

  /** The sum of `x` over the group (every process gets it). */
  allSum(x: Tensor): Tensor {
    const h = handleOf(x, "allSum", "x");
    return call("allSum", (lib, out) => lib.mlx_distributed_all_sum(out, h, this.handle));
  }

  /** `x` of every process, concatenated along axis 0 in rank order. */
  allGather(x: Tensor): Tensor {
    const h = handleOf(x, "allGather", "x");
    return call("allGather", (lib, out) => lib.mlx_distributed_all_gather(out, h, this.handle));
  }

  dispose(): void {
    if (this.#handle === null) return;
    native().mlx_distributed_free(this.#handle);
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
