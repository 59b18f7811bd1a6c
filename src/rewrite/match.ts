// Helpers shared by the rewriters: a mutable copy of a graph, typed lookups, and rewiring.
import { type Graph, type Node, type NodeOf, reachable } from "../graph/graph.ts";
import type { AttrsOf, OpName } from "../graph/ops.ts";

function makeNode<K extends OpName>(id: number, op: K, inputs: number[], attrs: AttrsOf<K>, name?: string): Node {
  return (name === undefined ? { id, op, inputs, attrs } : { id, op, inputs, attrs, name }) as Node;
}

/** A graph being rewritten: nodes may be replaced in place, appended, or bypassed. */
export class Rewriting {
  readonly nodes: Node[];
  readonly outputs: Record<string, number>;

  constructor(graph: Graph) {
    this.nodes = graph.nodes.map((n) => ({ ...n, inputs: [...n.inputs] }) as Node);
    this.outputs = { ...graph.outputs };
  }

  node(id: number): Node {
    return this.nodes[id]!;
  }

  /** The node feeding input `index` of `node`. */
  input(node: Node, index: number): Node {
    return this.nodes[node.inputs[index]!]!;
  }

  /** Replaces node `id` by a new op over new inputs (its consumers see the new value; its name stays). */
  replace<K extends OpName>(id: number, op: K, inputs: number[], attrs: AttrsOf<K>): void {
    this.nodes[id] = makeNode(id, op, inputs, attrs, this.nodes[id]!.name);
  }

  append<K extends OpName>(op: K, inputs: number[], attrs: AttrsOf<K>, name?: string): number {
    const id = this.nodes.length;
    this.nodes.push(makeNode(id, op, inputs, attrs, name));
    return id;
  }

  /** Every use of node `from` (as an input or an output) now uses `to`. */
  bypass(from: number, to: number): void {
    for (const n of this.nodes) n.inputs = n.inputs.map((i) => (i === from ? to : i));
    for (const k of Object.keys(this.outputs)) if (this.outputs[k] === from) this.outputs[k] = to;
  }

  /** How many times each node's value is used (as an input, counted per input, or as an output);
   * with `live`, only by nodes the outputs still reach (not by nodes an earlier rewrite replaced). */
  useCounts(live = false): number[] {
    const uses = this.nodes.map(() => 0);
    const users = live
      ? reachable({ nodes: this.nodes, outputs: this.outputs }).map((id) => this.nodes[id]!)
      : this.nodes;
    for (const n of users) for (const i of n.inputs) uses[i]!++;
    for (const id of Object.values(this.outputs)) uses[id]!++;
    return uses;
  }

  /** Nodes with `op`, in id order (a snapshot: rewriting while iterating is safe). */
  withOp<K extends OpName>(op: K): NodeOf<K>[] {
    return this.nodes.filter((n): n is NodeOf<K> & Node => n.op === op);
  }

  /** The node feeding `id` through a GQA repeat, if any: the kv-head tensor before the repeat. */
  unrepeated(id: number): number {
    const n = this.node(id);
    return n.op === "repeat_interleave" ? n.inputs[0]! : id;
  }

  /** The attention_weights node of an attention_output (through an inference-time dropout), or
   * null when it has none or the dropout drops. */
  weightsOf(output: NodeOf<"attention_output">): NodeOf<"attention_weights"> | null {
    let weights = this.input(output as Node, 0);
    if (weights.op === "dropout") {
      if (weights.attrs.rate > 0) return null;
      weights = this.input(weights, 0);
    }
    return weights.op === "attention_weights" ? weights : null;
  }

  /** The rewritten graph with unreachable nodes pruned and ids renumbered. */
  finish(): Graph {
    const kept = reachable({ nodes: this.nodes, outputs: this.outputs }).map((id) => this.nodes[id]!);
    const renumber = new Map(kept.map((n, i) => [n.id, i]));
    const nodes = kept.map((n, i) => ({ ...n, id: i, inputs: n.inputs.map((x) => renumber.get(x)!) }) as Node);
    const outputs = Object.fromEntries(Object.entries(this.outputs).map(([k, v]) => [k, renumber.get(v)!]));
    return { nodes, outputs };
  }
}
