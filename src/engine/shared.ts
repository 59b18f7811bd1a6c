// The decode engines a model shares between its generations, one per graph and replay setting:
// concurrent generate calls on one model decode as one batch, and a step recorded for one call is
// replayed by the next. Made on first use; disposed with the model (Model.dependents).
import type { Graph } from "../graph/graph.ts";
import type { Model } from "../models/index.ts";
import type { Engine } from "./engine.ts";

const engines = new WeakMap<Model, Map<Graph, Map<boolean, Engine>>>();

/** The model's engine for `graph` and `replay`, made by `make` the first time. */
export function engineFor(model: Model, graph: Graph, replay: boolean, make: () => Engine): Engine {
  let byGraph = engines.get(model);
  if (!byGraph) engines.set(model, (byGraph = new Map()));
  let byReplay = byGraph.get(graph);
  if (!byReplay) byGraph.set(graph, (byReplay = new Map()));
  let engine = byReplay.get(replay);
  if (!engine) {
    const made = make();
    byReplay.set(replay, made);
    model.dependents.add({
      dispose() {
        byReplay!.delete(replay);
        made.dispose();
      },
    });
    engine = made;
  }
  return engine;
}
