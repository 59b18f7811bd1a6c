// Record and replay: a tape records the ops of one step as they run (each op's inputs by slot, its
// attributes inside the closure emit() received) and replays them with new inputs, so a decode step
// costs one shim call instead of one per op. Arrays a recorded op reads that the step did not make
// and that are not declared inputs are constants of the tape (weights, scalars).
#include <unordered_map>

#include "internal.h"

using namespace mlxb;

struct mlxb::Tape {
  struct Step {
    OpFn fn;
    std::vector<int> inputs, outputs;
  };
  std::vector<Step> steps;
  std::vector<std::pair<int, mx::array>> constants;
  std::vector<int> inputs, outputs;
  int slots = 0;
  std::unordered_map<mlx_array, int> slot_of;  // while recording
  std::string unsupported;
  bool finished = false;
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

void mlxb::record(const std::vector<mlx_array>& inputs, const std::vector<mlx_array>& outputs, OpFn fn) {
  Tape& t = *recording;
  Tape::Step step{std::move(fn), {}, {}};
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
    const Tape& tape = tape_of(t);
    if (!tape.finished || !tape.unsupported.empty()) throw ArgumentError("the tape holds no complete recording");
    if (recording != nullptr) throw ArgumentError("cannot replay while a tape records");
    if (input_count != static_cast<int>(tape.inputs.size())) {
      throw ArgumentError("the tape takes " + std::to_string(tape.inputs.size()) + " inputs, got " + std::to_string(input_count));
    }
    if (count != static_cast<int>(tape.outputs.size())) {
      throw ArgumentError("the tape makes " + std::to_string(tape.outputs.size()) + " outputs, asked for " + std::to_string(count));
    }
    std::vector<std::optional<mx::array>> env(tape.slots);
    for (const auto& [slot, value] : tape.constants) env[slot] = value;
    auto given = arrays_of(inputs, input_count);
    for (size_t i = 0; i < given.size(); i++) env[tape.inputs[i]] = given[i];
    Arrays xs;
    for (const auto& step : tape.steps) {
      xs.clear();
      for (int slot : step.inputs) xs.push_back(*env[slot]);
      auto results = step.fn(xs);
      for (size_t j = 0; j < results.size(); j++) env[step.outputs[j]] = std::move(results[j]);
    }
    for (int i = 0; i < count; i++) store(&outputs[i], *env[tape.outputs[i]]);
  });
}

int mlx_tape_free(mlx_tape t) {
  auto* tape = static_cast<Tape*>(t);
  if (recording == tape) recording = nullptr;
  delete tape;
  return 0;
}

} // extern "C"
