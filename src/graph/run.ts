// The graph executor: runs the nodes the outputs need, in topological order (the plan is resolved
// once per graph), through one backend's kernel table. Tensors made during a run and not returned
// are disposed when it ends (MLX keeps what the lazy graph still needs); weights and feeds are
// borrowed.
import type { TensorData } from "../dtype.ts";
import { type Graph, reachable } from "./graph.ts";
import type { BackendTypes, Kernel, KernelTable, RunContext, Value } from "./ops.ts";

const plans = new WeakMap<Graph, number[]>();

function planOf(graph: Graph): number[] {
  let plan = plans.get(graph);
  if (!plan) plans.set(graph, (plan = reachable(graph)));
  return plan;
}

function isTensor<T>(v: Value<T>): v is T {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function collect<T>(value: Value<T> | undefined, into: T[]): void {
  if (value === undefined) return;
  if (isTensor(value)) into.push(value);
  else if (Array.isArray(value)) for (const v of value as readonly Value<T>[]) collect(v, into);
}

export function runGraph<B extends BackendTypes>(
  graph: Graph,
  kernels: KernelTable<B>,
  context: RunContext<B>,
): Record<string, Value<B["tensor"]>> {
  type T = B["tensor"];
  const values: Value<T>[] = new Array(graph.nodes.length);
  const made: T[] = [];
  const borrowed: T[] = [];
  const outputs: Record<string, Value<T>> = {};
  try {
    for (const id of planOf(graph)) {
      const node = graph.nodes[id]!;
      const inputs = node.inputs.map((i) => values[i]!);
      const kernel = kernels[node.op] as Kernel<unknown, B>;
      let result: Value<T>;
      try {
        result = kernel(inputs, node.attrs, context);
      } catch (e) {
        throw new Error(`graph node ${id} ${node.op}${node.name ? ` '${node.name}'` : ""}: ${(e as Error).message}`);
      }
      values[id] = result;
      // Weights and feeds belong to the caller; everything else a kernel returns is this run's.
      collect(result, node.op === "param" || node.op === "input" ? borrowed : made);
    }
    for (const [name, id] of Object.entries(graph.outputs)) outputs[name] = values[id]!;
  } finally {
    for (const v of Object.values(outputs)) collect(v, borrowed);
    const kept = new Set<T>(borrowed);
    for (const t of made) if (!kept.has(t)) (t as TensorData).dispose();
  }
  return outputs;
}
