// Helpers shared by the rewriters: a mutable copy of a graph, lookups, and rewiring.
import { type Attrs, type Graph, type Node, reachable } from "../graph/graph.ts";

/** A graph being rewritten: nodes may be replaced in place, appended, or bypassed. */
export class Rewriting {
  readonly nodes: Node[];
  readonly outputs: Record<string, number>;
  cacheHeads: Graph["cacheHeads"];

  constructor(graph: Graph) {
    this.cacheHeads = graph.cacheHeads;
    this.nodes = graph.nodes.map((n) => ({ ...n, inputs: [...n.inputs], attrs: { ...n.attrs } }));
    this.outputs = { ...graph.outputs };
  }

  node(id: number): Node {
    return this.nodes[id]!;
  }

  /** The node feeding input `index` of `node`. */
  input(node: Node, index: number): Node {
    return this.nodes[node.inputs[index]!]!;
  }

  /** Replaces node `id` by a new op over new inputs (its consumers see the new value). */
  replace(id: number, op: string, inputs: number[], attrs: Attrs = {}): void {
    const old = this.nodes[id]!;
    this.nodes[id] = old.name === undefined ? { id, op, inputs, attrs } : { id, op, inputs, attrs, name: old.name };
  }

  append(op: string, inputs: number[], attrs: Attrs = {}, name?: string): number {
    const id = this.nodes.length;
    this.nodes.push(name === undefined ? { id, op, inputs, attrs } : { id, op, inputs, attrs, name });
    return id;
  }

  /** Every use of node `from` (as an input or an output) now uses `to`. */
  bypass(from: number, to: number): void {
    for (const n of this.nodes) n.inputs = n.inputs.map((i) => (i === from ? to : i));
    for (const k of Object.keys(this.outputs)) if (this.outputs[k] === from) this.outputs[k] = to;
  }

  /** Nodes with `op`, in id order (a snapshot: rewriting while iterating is safe). */
  withOp(op: string): Node[] {
    return this.nodes.filter((n) => n.op === op);
  }

  /** The rewritten graph with unreachable nodes pruned and ids renumbered. */
  finish(): Graph {
    const kept = reachable({ nodes: this.nodes, outputs: this.outputs }).map((id) => this.nodes[id]!);
    const renumber = new Map(kept.map((n, i) => [n.id, i]));
    const nodes = kept.map((n, i) => ({ ...n, id: i, inputs: n.inputs.map((x) => renumber.get(x)!) }));
    const outputs = Object.fromEntries(Object.entries(this.outputs).map(([k, v]) => [k, renumber.get(v)!]));
    return { nodes, outputs, ...(this.cacheHeads ? { cacheHeads: this.cacheHeads } : {}) };
  }
}
