// Record and replay: a tape records the ops of one step as they run (each op's inputs by slot, its
// attributes inside the closure emit() received, and for pure ops the MLX nodes they made) and
// replays them with new inputs, so a decode step costs one shim call instead of one per op, and most
// ops cost one array construction per node instead of an MLX op call. Each run of consecutive pure
// ops is merged into one plan when the recording ends: one shape check and one pass over its nodes
// instead of one per op. Arrays a recorded op reads that the step did not make and that are not
// declared inputs are constants of the tape (weights, scalars).
#include <algorithm>
#include <unordered_map>

#include "internal.h"

using namespace mlxb;

namespace {

// Where a rebuilt node's input comes from: the op's inputs, arrays it captured, or earlier nodes'
// outputs (numbered across the op's nodes, in order).
struct Ref {
  enum Kind : uint8_t { input, constant, node } kind;
  int index; // into the op's inputs, its constants, or its nodes' outputs
};

// The MLX nodes one pure op made, in dependency order, with their primitives, shapes and dtypes:
// rebuilt by constructing arrays directly (no op-level shape inference or checks), as MLX's compile
// replays its tape. Valid while the op's inputs have the recorded shapes and dtypes.
struct Nodes {
  struct Node {
    std::shared_ptr<mx::Primitive> primitive;
    std::vector<Ref> inputs;
    std::vector<mx::Shape> shapes;
    std::vector<mx::Dtype> dtypes;
  };
  std::vector<Node> nodes;
  std::vector<mx::array> constants;
  std::vector<Ref> outputs;
  std::vector<mx::Shape> input_shapes;
  std::vector<mx::Dtype> input_dtypes;
  int node_outputs = 0;
};

// The nodes behind `results` down to `xs` (by identity); evaluated arrays and arrays without a
// primitive are constants.
Nodes nodes_of(const Arrays& xs, const Arrays& results) {
  Nodes plan;
  std::unordered_map<std::uintptr_t, Ref> known;
  for (size_t i = 0; i < xs.size(); i++) {
    known.emplace(xs[i].id(), Ref{Ref::input, static_cast<int>(i)});
    plan.input_shapes.push_back(xs[i].shape());
    plan.input_dtypes.push_back(xs[i].dtype());
  }
  // Iterative post-order walk: a node is emitted after its inputs.
  std::vector<std::pair<mx::array, bool>> stack;
  for (auto it = results.rbegin(); it != results.rend(); ++it) stack.emplace_back(*it, false);
  while (!stack.empty()) {
    auto [a, expanded] = stack.back();
    stack.pop_back();
    if (known.count(a.id()) != 0) continue;
    if (!a.has_primitive() || a.status() != mx::array::Status::unscheduled) {
      known.emplace(a.id(), Ref{Ref::constant, static_cast<int>(plan.constants.size())});
      plan.constants.push_back(a);
      continue;
    }
    if (!expanded) {
      stack.emplace_back(a, true);
      for (auto in = a.inputs().rbegin(); in != a.inputs().rend(); ++in) {
        if (known.count(in->id()) == 0) stack.emplace_back(*in, false);
      }
      continue;
    }
    Nodes::Node node{a.primitive_ptr(), {}, {}, {}};
    for (const auto& in : a.inputs()) node.inputs.push_back(known.at(in.id()));
    for (const auto& out : a.outputs()) {
      node.shapes.push_back(out.shape());
      node.dtypes.push_back(out.dtype());
      known.emplace(out.id(), Ref{Ref::node, plan.node_outputs++});
    }
    plan.nodes.push_back(std::move(node));
  }
  for (const auto& r : results) plan.outputs.push_back(known.at(r.id()));
  return plan;
}

// The op's results rebuilt from its nodes over its inputs `xs` (pointers: no reference counting),
// appended to `results`; false (nothing appended) when the inputs' shapes or dtypes differ from the
// recorded ones. `made` is scratch space for the nodes' outputs.
bool rebuild(const Nodes& plan, const std::vector<const mx::array*>& xs, Arrays& made, Arrays& results) {
  for (size_t i = 0; i < xs.size(); i++) {
    if (xs[i]->dtype() != plan.input_dtypes[i] || xs[i]->shape() != plan.input_shapes[i]) return false;
  }
  made.clear();
  auto value = [&](const Ref& r) -> const mx::array& {
    if (r.kind == Ref::input) return *xs[r.index];
    if (r.kind == Ref::constant) return plan.constants[r.index];
    return made[r.index];
  };
  for (const auto& node : plan.nodes) {
    Arrays inputs;
    inputs.reserve(node.inputs.size());
    for (const auto& r : node.inputs) inputs.push_back(value(r));
    if (node.shapes.size() == 1) {
      made.emplace_back(node.shapes[0], node.dtypes[0], node.primitive, std::move(inputs));
    } else {
      for (auto& out : mx::array::make_arrays(node.shapes, node.dtypes, node.primitive, std::move(inputs))) made.push_back(std::move(out));
    }
  }
  for (const auto& r : plan.outputs) results.push_back(value(r));
  return true;
}

} // namespace

struct mlxb::Tape {
  struct Step {
    OpFn fn;
    std::vector<int> inputs, outputs;
    std::optional<Nodes> nodes; // pure ops
  };
  // What a replay runs: consecutive pure steps merged into one plan (one shape check and one pass
  // over their nodes), or one step that is not pure. Steps [first, last) of `steps`.
  struct Segment {
    size_t first, last;
    std::vector<int> inputs, outputs; // slots read from before the segment, and read after it
    std::optional<Nodes> nodes;       // the merged plan of pure steps
  };
  std::vector<Step> steps;
  std::vector<Segment> segments;
  std::vector<std::pair<int, mx::array>> constants;
  std::vector<int> inputs, outputs;
  int slots = 0;
  std::unordered_map<mlx_array, int> slot_of; // while recording
  std::string unsupported;
  bool finished = false;
  int rebuilt = 0, called = 0; // steps, of the last run
  // The step captured as one CUDA graph (step graphs, CUDA build), or why not.
  std::shared_ptr<StepGraph> graph;
  std::string capture_failure;
  // A run's working space, kept between runs (allocated afresh, it cost a fifth of a replay on the CPU)
  // and emptied after each: each slot's array by pointer (`env`: constants and inputs where they are,
  // results in `values`), the arrays a segment reads (`xs`), its nodes' outputs (`made`), its results.
  struct Scratch {
    std::vector<const mx::array*> env, xs;
    std::vector<std::optional<mx::array>> values;
    Arrays made, results;
  } scratch;
};

thread_local mlxb::Tape* mlxb::recording = nullptr;

namespace {

Tape& tape_of(mlx_tape t) {
  if (t == nullptr) throw ArgumentError("tape argument is null");
  return *static_cast<Tape*>(t);
}

int slot_for(Tape& t, mlx_array h) {
  auto it = t.slot_of.find(h);
  if (it != t.slot_of.end()) return it->second;
  int slot = t.slots++;
  t.constants.emplace_back(slot, *static_cast<mx::array*>(h));
  t.slot_of.emplace(h, slot);
  return slot;
}

// Steps [first, last) (all pure) as one plan: their nodes in order, an input of a step that an
// earlier step of the range made read from that step's node, other inputs becoming the segment's.
// Outputs: the slots the range makes that `needed` says are read after it.
Tape::Segment merged(const Tape& t, size_t first, size_t last, const std::vector<bool>& needed) {
  Tape::Segment seg{first, last, {}, {}, Nodes{}};
  Nodes& plan = *seg.nodes;
  std::unordered_map<int, Ref> made;        // slot -> where the merged plan has it
  std::unordered_map<int, int> input_index; // slot -> index among the segment's inputs
  for (size_t s = first; s < last; s++) {
    const auto& step = t.steps[s];
    const Nodes& nodes = *step.nodes;
    std::vector<Ref> from_input; // the step's input i, in the merged plan
    for (size_t i = 0; i < step.inputs.size(); i++) {
      int slot = step.inputs[i];
      if (auto it = made.find(slot); it != made.end()) {
        from_input.push_back(it->second);
        continue;
      }
      auto [it, added] = input_index.emplace(slot, static_cast<int>(seg.inputs.size()));
      if (added) {
        seg.inputs.push_back(slot);
        plan.input_shapes.push_back(nodes.input_shapes[i]);
        plan.input_dtypes.push_back(nodes.input_dtypes[i]);
      }
      from_input.push_back(Ref{Ref::input, it->second});
    }
    int constant_base = static_cast<int>(plan.constants.size()), node_base = plan.node_outputs;
    auto remap = [&](const Ref& r) -> Ref {
      if (r.kind == Ref::input) return from_input[r.index];
      if (r.kind == Ref::constant) return Ref{Ref::constant, r.index + constant_base};
      return Ref{Ref::node, r.index + node_base};
    };
    plan.constants.insert(plan.constants.end(), nodes.constants.begin(), nodes.constants.end());
    for (const auto& node : nodes.nodes) {
      Nodes::Node copy = node;
      for (auto& r : copy.inputs) r = remap(r);
      plan.nodes.push_back(std::move(copy));
    }
    plan.node_outputs += nodes.node_outputs;
    for (size_t j = 0; j < step.outputs.size(); j++) made[step.outputs[j]] = remap(nodes.outputs[j]);
  }
  for (size_t s = first; s < last; s++) {
    for (int slot : t.steps[s].outputs) {
      if (!needed[slot]) continue;
      seg.outputs.push_back(slot);
      plan.outputs.push_back(made.at(slot));
    }
  }
  return seg;
}

// The recording's segments: runs of pure steps merged, other steps alone. Built from the end, so
// that what later segments read is known when a run is merged.
std::vector<Tape::Segment> segments_of(const Tape& t) {
  std::vector<bool> needed(t.slots, false); // read by the segments made so far or the outputs
  for (int slot : t.outputs) needed[slot] = true;
  std::vector<Tape::Segment> reversed;
  size_t end = t.steps.size(); // where the segment made last begins
  for (size_t s = end; s-- > 0;) {
    const auto& step = t.steps[s];
    if (step.nodes && s > 0 && t.steps[s - 1].nodes) continue; // not the start of a run
    reversed.push_back(step.nodes ? merged(t, s, end, needed) : Tape::Segment{s, s + 1, step.inputs, step.outputs, std::nullopt});
    for (int slot : reversed.back().inputs) needed[slot] = true;
    end = s;
  }
  return {reversed.rbegin(), reversed.rend()};
}

// The checks of a replay: a complete recording, not while recording, and the counts.
void check_run(const Tape& tape, int count, int input_count) {
  if (!tape.finished || !tape.unsupported.empty()) throw ArgumentError("the tape holds no complete recording");
  if (recording != nullptr) throw ArgumentError("cannot replay while a tape records");
  if (input_count != static_cast<int>(tape.inputs.size())) {
    throw ArgumentError("the tape takes " + std::to_string(tape.inputs.size()) + " inputs, got " + std::to_string(input_count));
  }
  if (count != static_cast<int>(tape.outputs.size())) {
    throw ArgumentError("the tape makes " + std::to_string(tape.outputs.size()) + " outputs, asked for " + std::to_string(count));
  }
}

// One replay: the step's `count` outputs from `given` (its inputs, in order).
Arrays run(Tape& tape, int count, const Arrays& given) {
  check_run(tape, count, static_cast<int>(given.size()));
  auto& [env, xs, values, made, results] = tape.scratch;
  // The run's arrays are let go at the end (they live on in the graph made), also on an error.
  struct Release {
    Tape::Scratch& s;
    ~Release() {
      for (auto& v : s.values) v.reset();
      s.made.clear(), s.results.clear();
    }
  } release{tape.scratch};
  env.assign(tape.slots, nullptr);
  values.resize(tape.slots);
  for (const auto& [slot, value] : tape.constants) env[slot] = &value;
  for (size_t i = 0; i < given.size(); i++) env[tape.inputs[i]] = &given[i];
  auto read = [&](const std::vector<int>& slots) {
    xs.clear();
    for (int slot : slots) xs.push_back(env[slot]);
    results.clear();
  };
  auto keep = [&](const std::vector<int>& slots) {
    for (size_t j = 0; j < results.size(); j++) {
      values[slots[j]] = std::move(results[j]);
      env[slots[j]] = &*values[slots[j]];
    }
  };
  // MLXB_TAPE_CALLS=1: every op through its function (to compare the two ways of replaying).
  static const bool slow = std::getenv("MLXB_TAPE_CALLS") != nullptr;
  tape.rebuilt = tape.called = 0;
  for (const auto& seg : tape.segments) {
    if (seg.nodes && !slow) {
      read(seg.inputs);
      if (rebuild(*seg.nodes, xs, made, results)) {
        tape.rebuilt += static_cast<int>(seg.last - seg.first);
        keep(seg.outputs);
        continue;
      }
    }
    // Step by step: rebuilt where its inputs' shapes hold, else its function called.
    for (size_t s = seg.first; s < seg.last; s++) {
      const auto& step = tape.steps[s];
      read(step.inputs);
      if (step.nodes && !slow && rebuild(*step.nodes, xs, made, results)) {
        tape.rebuilt++;
      } else {
        tape.called++;
        Arrays args;
        args.reserve(xs.size());
        for (const auto* x : xs) args.push_back(*x);
        results = step.fn(args);
      }
      keep(step.outputs);
    }
  }
  Arrays out;
  out.reserve(count);
  for (int i = 0; i < count; i++) out.push_back(*env[tape.outputs[i]]);
  return out;
}

} // namespace

void mlxb::record(const std::vector<mlx_array>& inputs, const Arrays& xs, const std::vector<mlx_array>& outputs, const Arrays& results, OpFn fn, bool pure) {
  Tape& t = *recording;
  Tape::Step step{std::move(fn), {}, {}, pure ? std::optional<Nodes>(nodes_of(xs, results)) : std::nullopt};
  for (auto h : inputs) step.inputs.push_back(slot_for(t, h));
  for (auto h : outputs) {
    int slot = t.slots++;
    t.slot_of[h] = slot;
    step.outputs.push_back(slot);
  }
  t.steps.push_back(std::move(step));
}

void mlxb::record_unsupported(const std::string& why) {
  if (recording != nullptr && recording->unsupported.empty()) recording->unsupported = why;
}

void mlxb::forget_handle(mlx_array h) {
  recording->slot_of.erase(h);
}

extern "C" {

int mlx_tape_record_begin(mlx_tape* out) {
  return guard([&] {
    if (out == nullptr) throw ArgumentError("out-pointer is null");
    if (recording != nullptr) throw ArgumentError("a tape is already recording");
    recording = new Tape();
    *out = recording;
  });
}

int mlx_tape_input(mlx_tape t, mlx_array a) {
  return guard([&] {
    Tape& tape = tape_of(t);
    arr(a, "a");
    if (recording != &tape) throw ArgumentError("inputs are declared while the tape records");
    if (tape.slot_of.count(a) != 0) throw ArgumentError("the array is already part of the recording");
    int slot = tape.slots++;
    tape.slot_of.emplace(a, slot);
    tape.inputs.push_back(slot);
  });
}

int mlx_tape_record_end(mlx_tape t, const mlx_array* outputs, int count) {
  return guard([&] {
    Tape& tape = tape_of(t);
    if (recording != &tape) throw ArgumentError("this tape is not recording");
    recording = nullptr;
    tape.finished = true;
    if (!tape.unsupported.empty()) throw ArgumentError("the step cannot be replayed: " + tape.unsupported);
    for (const auto& out : arrays_of(outputs, count)) (void)out;
    for (int i = 0; i < count; i++) {
      auto it = tape.slot_of.find(outputs[i]);
      if (it == tape.slot_of.end()) throw ArgumentError("output " + std::to_string(i) + " was not made by the recorded step");
      tape.outputs.push_back(it->second);
    }
    tape.slot_of.clear();
    tape.segments = segments_of(tape);
  });
}

int mlx_tape_run(mlx_array* outputs, int count, mlx_tape t, const mlx_array* inputs, int input_count) {
  return guard([&] {
    Tape& tape = tape_of(t);
    auto results = run(tape, count, arrays_of(inputs, input_count));
    for (int i = 0; i < count; i++) store(&outputs[i], results[i]);
  });
}

int mlx_tape_capture(mlx_array* outputs, int count, mlx_tape t, const mlx_array* inputs, int input_count, int* captured) {
  return guard([&] {
    Tape& tape = tape_of(t);
    if (captured == nullptr) throw ArgumentError("out-pointer is null");
#ifdef MLXB_CUDA
    auto given = arrays_of(inputs, input_count);
    check_run(tape, count, input_count);
    Arrays results;
    tape.graph.reset();
    tape.capture_failure.clear();
    tape.graph = capture_step(
        given,
        [&](const Arrays& xs, int& cache_ops) {
          auto r = run(tape, count, xs);
          cache_ops = tape.called;
          return r;
        },
        results, tape.capture_failure);
    *captured = tape.graph ? 1 : 0;
    for (int i = 0; i < count; i++) store(&outputs[i], results[i]);
#else
    (void)outputs, (void)count, (void)inputs, (void)input_count;
    throw ArgumentError("a step is captured as a CUDA graph on MLX's CUDA backend only");
#endif
  });
}

int mlx_tape_launch(mlx_array* outputs, int count, mlx_tape t, const mlx_array* inputs, int input_count) {
  return guard([&] {
    Tape& tape = tape_of(t);
    if (!tape.graph) throw ArgumentError("the tape holds no captured step");
    check_run(tape, count, input_count);
#ifdef MLXB_CUDA
    auto results = launch_step(tape.graph, arrays_of(inputs, input_count));
    for (int i = 0; i < count; i++) store(&outputs[i], results[i]);
#else
    (void)outputs, (void)inputs;
#endif
  });
}

int mlx_tape_release_capture(mlx_tape t) {
  return guard([&] { tape_of(t).graph.reset(); });
}

const char* mlx_tape_capture_failure(mlx_tape t) {
  return t == nullptr ? "" : static_cast<Tape*>(t)->capture_failure.c_str();
}

int mlx_tape_input_pure(int* out, mlx_tape t, int index) {
  return guard([&] {
    if (out == nullptr) throw ArgumentError("out-pointer is null");
    const Tape& tape = tape_of(t);
    if (!tape.finished) throw ArgumentError("the tape holds no complete recording");
    if (index < 0 || index >= static_cast<int>(tape.inputs.size()))
      throw ArgumentError("input " + std::to_string(index) + " out of range for a tape of " + std::to_string(tape.inputs.size()) + " inputs");
    const int slot = tape.inputs[index];
    *out = 0;
    for (const auto& step : tape.steps) {
      if (step.nodes && std::find(step.inputs.begin(), step.inputs.end(), slot) != step.inputs.end()) *out = 1;
    }
  });
}

int mlx_tape_last_run(int* rebuilt, int* called, mlx_tape t) {
  return guard([&] {
    if (rebuilt == nullptr || called == nullptr) throw ArgumentError("out-pointer is null");
    const Tape& tape = tape_of(t);
    *rebuilt = tape.rebuilt, *called = tape.called;
  });
}

int mlx_tape_free(mlx_tape t) {
  auto* tape = static_cast<Tape*>(t);
  if (recording == tape) recording = nullptr;
  delete tape;
  return 0;
}

} // extern "C"
