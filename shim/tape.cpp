// Record and replay: a tape records the ops of one step as they run (each op's inputs by slot, its
// attributes inside the closure emit() received, and for pure ops the MLX nodes they made) and
// replays them with new inputs, so a decode step costs one shim call instead of one per op, and most
// ops cost one array construction per node instead of an MLX op call. Arrays a recorded op reads
// that the step did not make and that are not declared inputs are constants of the tape (weights,
// scalars).
#include <unordered_map>

#include "internal.h"

using namespace mlxb;

namespace {

// Where a rebuilt node's input comes from: the op's inputs, arrays it captured, or earlier nodes'
// outputs (numbered across the op's nodes, in order).
struct Ref {
  enum Kind : uint8_t { input, constant, node } kind;
  int index;  // into the op's inputs, its constants, or its nodes' outputs
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
    std::optional<Nodes> nodes;  // pure ops
  };
  std::vector<Step> steps;
  std::vector<std::pair<int, mx::array>> constants;
  std::vector<int> inputs, outputs;
  int slots = 0;
  std::unordered_map<mlx_array, int> slot_of;  // while recording
  std::string unsupported;
  bool finished = false;
  int rebuilt = 0, called = 0;  // of the last run
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
  });
}

int mlx_tape_run(mlx_array* outputs, int count, mlx_tape t, const mlx_array* inputs, int input_count) {
  return guard([&] {
    Tape& tape = tape_of(t);
    if (!tape.finished || !tape.unsupported.empty()) throw ArgumentError("the tape holds no complete recording");
    if (recording != nullptr) throw ArgumentError("cannot replay while a tape records");
    if (input_count != static_cast<int>(tape.inputs.size())) {
      throw ArgumentError("the tape takes " + std::to_string(tape.inputs.size()) + " inputs, got " + std::to_string(input_count));
    }
    if (count != static_cast<int>(tape.outputs.size())) {
      throw ArgumentError("the tape makes " + std::to_string(tape.outputs.size()) + " outputs, asked for " + std::to_string(count));
    }
    // Each slot's array by pointer: constants and inputs where they are, op results in `values`.
    auto given = arrays_of(inputs, input_count);
    std::vector<const mx::array*> env(tape.slots, nullptr);
    for (const auto& [slot, value] : tape.constants) env[slot] = &value;
    for (size_t i = 0; i < given.size(); i++) env[tape.inputs[i]] = &given[i];
    std::vector<std::optional<mx::array>> values(tape.slots);
    // MLXB_TAPE_CALLS=1: every op through its function (to compare the two ways of replaying).
    static const bool slow = std::getenv("MLXB_TAPE_CALLS") != nullptr;
    tape.rebuilt = tape.called = 0;
    std::vector<const mx::array*> xs;
    Arrays made, results;
    for (const auto& step : tape.steps) {
      xs.clear();
      for (int slot : step.inputs) xs.push_back(env[slot]);
      results.clear();
      bool rebuilt = step.nodes && !slow && rebuild(*step.nodes, xs, made, results);
      if (rebuilt) {
        tape.rebuilt++;
      } else {
        tape.called++;
        Arrays args;
        args.reserve(xs.size());
        for (const auto* x : xs) args.push_back(*x);
        results = step.fn(args);
      }
      for (size_t j = 0; j < results.size(); j++) {
        int slot = step.outputs[j];
        values[slot] = std::move(results[j]);
        env[slot] = &*values[slot];
      }
    }
    for (int i = 0; i < count; i++) store(&outputs[i], *env[tape.outputs[i]]);
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
