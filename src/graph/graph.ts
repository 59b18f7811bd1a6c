// A small graph IR: nodes with id, op, inputs, typed attrs and an optional name (a layer label for
// messages). Architectures are built as graphs of plain ops and layer nodes; the rewriter matches
// layer nodes and swaps them for fused ops; the executor (run.ts) evaluates what the outputs need.
// Ops, their attributes and kernels are defined once, in ops.ts.
import { type AttrsOf, type InputNamesOf, OPS, type OpName } from "./ops.ts";

export type { OpName } from "./ops.ts";

/** A node of op K. */
export interface NodeOf<K extends OpName> {
  id: number;
  op: K;
  inputs: number[];
  attrs: AttrsOf<K>;
  name?: string;
}

/** Any node: a union discriminated by `op`, so `node.op === "rms_norm"` types `node.attrs`. */
export type Node = { [K in OpName]: NodeOf<K> }[OpName];

export interface Graph {
  /** Built graphs list nodes in a topological order; rewritten ones are renumbered into one. */
  readonly nodes: readonly Node[];
  /** Output name -> node id. */
  readonly outputs: Readonly<Record<string, number>>;
}

/** Node ids for an op's inputs: one per name; a name ending in "?" may be left out; a single name
 * starting with "..." takes any number. */
type InputIds<N extends readonly string[]> = N extends readonly [`...${string}`]
  ? number[]
  : N extends readonly [...infer Required extends string[], `${string}?`]
    ? InputIds<Required> | [...{ [I in keyof Required]: number }, number]
    : { [I in keyof N]: number };

/** Arguments of a builder method: inputs, then attrs (optional for ops without any), then a name. */
type BuilderArgs<K extends OpName> =
  Record<never, never> extends AttrsOf<K>
    ? [inputs: InputIds<InputNamesOf<K>>, attrs?: AttrsOf<K>, name?: string]
    : [inputs: InputIds<InputNamesOf<K>>, attrs: AttrsOf<K>, name?: string];

/** A typed method per op: `b.rms_norm([x, weight], { eps, shift }, "model.norm")`. */
export type OpMethods = { [K in OpName]: (...args: BuilderArgs<K>) => number };

/** Builds a graph; every op method returns the new node's id. */
export class GraphBuilder {
  readonly nodes: Node[] = [];
  /** One method per op in ops.ts. */
  readonly ops: OpMethods;

  constructor() {
    const methods: Record<string, (inputs: number[], attrs?: object, name?: string) => number> = {};
    for (const op of Object.keys(OPS) as OpName[])
      methods[op] = (inputs, attrs, name) => this.#append(op, inputs, attrs ?? {}, name);
    this.ops = methods as unknown as OpMethods;
  }

  #append(op: OpName, inputs: number[], attrs: object, name?: string): number {
    const names = OPS[op].inputs as readonly string[];
    const required = names.filter((n) => !n.endsWith("?")).length;
    const variadic = names.length === 1 && names[0]!.startsWith("...");
    if (!variadic && (inputs.length < required || inputs.length > names.length)) {
      throw new Error(
        `${op}: ${inputs.length} inputs given, expected ${required === names.length ? required : `${required} to ${names.length}`} (${names.join(", ")})`,
      );
    }
    for (const i of inputs) {
      if (!Number.isInteger(i) || i < 0 || i >= this.nodes.length)
        throw new Error(`${op}: input ${i} is not an earlier node`);
    }
    const id = this.nodes.length;
    const node = { id, op, inputs: [...inputs], attrs, ...(name === undefined ? {} : { name }) } as Node;
    this.nodes.push(node);
    return id;
  }

  /** A value fed at run time (token ids, positions, the offset, the key mask). */
  input(feed: string): number {
    return this.ops.input([], { feed }, feed);
  }

  /** A weight, looked up by path in the weight map at run time. */
  param(path: string): number {
    return this.ops.param([], { path }, path);
  }

  build(outputs: Record<string, number>): Graph {
    return { nodes: this.nodes, outputs };
  }
}

/** Ids of the nodes reachable from the outputs, in a topological order (every node after its
 * inputs; a rewriter may append a node that an earlier one consumes). */
export function reachable(graph: Graph): number[] {
  const state = new Uint8Array(graph.nodes.length); // 0 new, 1 inputs pending, 2 placed
  const order: number[] = [];
  const stack: number[] = [];
  for (const root of Object.values(graph.outputs)) {
    stack.push(root);
    while (stack.length > 0) {
      const id = stack[stack.length - 1]!;
      if (state[id] === 2) {
        stack.pop();
      } else if (state[id] === 1) {
        state[id] = 2;
        order.push(id);
        stack.pop();
      } else {
        state[id] = 1;
        for (const input of graph.nodes[id]!.inputs) {
          if (state[input] === 1) throw new Error(`graph: node ${input} feeds itself (a cycle)`);
          if (state[input] === 0) stack.push(input);
        }
      }
    }
  }
  return order;
}

/** Counts of nodes by op among the reachable ones. */
export function opCounts(graph: Graph): Partial<Record<OpName, number>> {
  const counts: Partial<Record<OpName, number>> = {};
  for (const id of reachable(graph)) {
    const op = graph.nodes[id]!.op;
    counts[op] = (counts[op] ?? 0) + 1;
  }
  return counts;
}
