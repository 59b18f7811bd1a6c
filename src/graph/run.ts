// The graph executor: evaluates, on demand and once each, the nodes the requested outputs need.
// Only the taken branch of an if_present runs. Tensors made during a run and not returned are
// disposed when it ends (MLX keeps what the lazy graph still needs).
import type { QuantConfig } from "../quant/config.ts";
import type { WeightMap } from "../quant/weights.ts";
import { Tensor } from "../tensor.ts";
import type { Graph, Node } from "./graph.ts";
import { type Kernel, kernels } from "./kernels.ts";

/** What flows along edges: tensors, host numbers (offsets), containers, or nothing (no cache). */
export type Value = Tensor | number | Value[] | null;

export interface RunContext {
  weights: WeightMap;
  quantization: QuantConfig | null;
  feeds: Record<string, Value>;
}

function collect(value: Value, into: Set<Tensor>): void {
  if (value instanceof Tensor) into.add(value);
  else if (Array.isArray(value)) for (const v of value) collect(v, into);
}

export function runGraph(graph: Graph, context: RunContext, table: Record<string, Kernel> = kernels): Record<string, Value> {
  const values = new Map<number, Value>();
  const made = new Set<Tensor>();
  const borrowed = new Set<Tensor>();
  for (const feed of Object.values(context.feeds)) collect(feed, borrowed);

  const evaluate = (id: number): Value => {
    if (values.has(id)) return values.get(id)!;
    const node: Node = graph.nodes[id]!;
    let result: Value;
    if (node.op === "if_present") {
      const present = evaluate(node.inputs[0]!) !== null;
      result = evaluate(node.inputs[present ? 1 : 2]!);
    } else {
      const kernel = table[node.op];
      if (!kernel) throw new Error(`graph node ${id} (${node.name ?? node.op}): no kernel for op '${node.op}'`);
      const inputs = node.inputs.map(evaluate);
      try {
        result = kernel(inputs, node, context);
      } catch (e) {
        throw new Error(`graph node ${id} ${node.op}${node.name ? ` '${node.name}'` : ""}: ${(e as Error).message}`);
      }
      // Weights reach a run only through param nodes (borrowed, like the feeds; not a loop over the
      // whole weight map each run); constants belong to the graph (made at build or rewrite time).
      if (node.op === "param") collect(result, borrowed);
      else if (node.op !== "constant") collect(result, made);
    }
    values.set(id, result);
    return result;
  };

  const outputs: Record<string, Value> = {};
  const kept = new Set<Tensor>();
  try {
    for (const [name, id] of Object.entries(graph.outputs)) {
      outputs[name] = evaluate(id);
      collect(outputs[name]!, kept);
    }
  } finally {
    for (const t of made) if (!kept.has(t) && !borrowed.has(t)) t.dispose();
  }
  return outputs;
}
