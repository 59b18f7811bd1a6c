// A small graph IR: nodes with id, op, inputs, attrs and an optional name (a weight path or layer
// label). Architectures are built as graphs of plain ops and named layer nodes; the rewriter matches
// layer nodes and swaps them for fused ops; the executor (run.ts) evaluates what the outputs need.

export type Attrs = Record<string, unknown>;

export interface Node {
  id: number;
  op: string;
  inputs: number[];
  attrs: Attrs;
  name?: string;
}

export interface Graph {
  /** In insertion order, which is a topological order. */
  nodes: Node[];
  /** Output name -> node id. */
  outputs: Record<string, number>;
  /** What a KV cache for this graph holds per layer: all query heads (the plain graphs repeat GQA
   * keys/values before the cache update), or only the kv heads (after gqa_cache_fix). */
  cacheHeads?: "query" | "kv";
}

/** Builds a graph; every method returns the new node's id. */
export class GraphBuilder {
  readonly nodes: Node[] = [];

  op(op: string, inputs: number[], attrs: Attrs = {}, name?: string): number {
    for (const i of inputs) {
      if (!Number.isInteger(i) || i < 0 || i >= this.nodes.length) throw new Error(`${op}: input ${i} is not an earlier node`);
    }
    const id = this.nodes.length;
    this.nodes.push(name === undefined ? { id, op, inputs, attrs } : { id, op, inputs, attrs, name });
    return id;
  }

  /** A value fed at run time (token ids, the cache, the offset). */
  input(name: string): number {
    return this.op("input", [], {}, name);
  }

  /** A weight, looked up by path in the weight map at run time. */
  param(path: string): number {
    return this.op("param", [], {}, path);
  }

  build(outputs: Record<string, number>): Graph {
    return { nodes: this.nodes, outputs };
  }
}

/** Ids of the nodes reachable from the outputs, in topological order. */
export function reachable(graph: Graph): number[] {
  const seen = new Uint8Array(graph.nodes.length);
  const stack = Object.values(graph.outputs);
  while (stack.length > 0) {
    const id = stack.pop()!;
    if (seen[id]) continue;
    seen[id] = 1;
    stack.push(...graph.nodes[id]!.inputs);
  }
  return graph.nodes.filter((n) => seen[n.id]).map((n) => n.id);
}

/** Counts of nodes by op among the reachable ones. */
export function opCounts(graph: Graph): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const id of reachable(graph)) {
    const op = graph.nodes[id]!.op;
    counts[op] = (counts[op] ?? 0) + 1;
  }
  return counts;
}
