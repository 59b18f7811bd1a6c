// A decode step launched as one CUDA graph of its own, without MLX's per-kernel encoding (step graphs).
//
// MLX's CUDA backend encodes every kernel of a step anew: it adds a node to a new cudaGraph_t, finds
// its dependencies through a map of the buffers it touches, and at each commit updates a cached
// executable from that graph and launches it (mlx/backend/cuda/device.cpp). On a small model that
// host work, a few microseconds a kernel, is the step's time (docs/performance.md). Here one step of
// a recorded tape is captured: run once as usual, with MLX's encoder held to one graph for the whole
// step, whose copy (with its edges) is kept and instantiated once; every buffer the step touches is
// kept alive (MLX's temporaries of that commit: every node's inputs; the kernels' own temporaries;
// the step's results), so the executable stays valid. Later steps copy their inputs into the
// captured step's input buffers, set the parameters that change with the position (the decode
// attention's cache write: `CacheSlots`, kv.cpp), launch the executable, and copy its results out:
// one MLX node (StepOutputs) and a handful of driver calls a step.
//
// Two of MLX's encoder functions are interposed (the shim is loaded before libmlx.so, whose calls to
// them go through its PLT): `needs_commit` (no commit in the middle of a captured step) and
// `commit_impl` (the graph copied before MLX launches and drops it). Both call MLX's own otherwise. The
// encoder's members are read in MLX 0.32.4's layout (include/mlx/backend/cuda/device.h), checked
// against the driver's count of the graph's nodes before they are used.
//
// CUDA build only (zig build -Dcuda=true).
#include <dlfcn.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>

#include "cuda.h"
#include "mlx/primitives.h"
#include "mlx/version.h"

using namespace mlxb;

namespace {

// CUDA_KERNEL_NODE_PARAMS_v2 (the driver's cuda.h).
struct KernelNodeParams {
  CUfunc_st* func;
  unsigned grid_x, grid_y, grid_z, block_x, block_y, block_z, smem;
  void** params;
  void** extra;
  void* kern;
  void* ctx;
};

/** The driver's graph and copy entry points used here. */
struct Driver {
  int (*clone)(void** clone, void* graph);
  int (*find_in_clone)(void** node, void* original, void* clone);
  int (*add_dependencies)(void* graph, void* const* from, void* const* to, const void* edge_data, size_t count);
  int (*get_nodes)(void* graph, void** nodes, size_t* count);
  int (*instantiate)(void** exec, void* graph, unsigned long long flags);
  int (*launch)(void* exec, void* stream);
  int (*set_kernel_params)(void* exec, void* node, const KernelNodeParams* params);
  int (*exec_destroy)(void* exec);
  int (*graph_destroy)(void* graph);
  int (*copy)(uintptr_t dst, uintptr_t src, size_t bytes, void* stream);
  int (*synchronize)(void* stream);
  int (*add_kernel_node)(void** node, void* graph, void* const* dependencies, size_t count, const void* params);
  int (*node_type)(void* node, int* type);
  int (*kernel_node_params)(void* node, KernelNodeParams* params);
  bool ok = false;
};

// CUgraphEdgeData, and the values of a programmatic edge (the driver's cuda.h).
struct EdgeData {
  unsigned char from_port, to_port, type, reserved[5];
};
constexpr EdgeData PROGRAMMATIC_EDGE{1 /* CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC */, 0, 1 /* CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC */, {}};
constexpr int NODE_KERNEL = 0; // CU_GRAPH_NODE_TYPE_KERNEL

template <typename F>
bool bind(const char* name, F& fn) {
  fn = reinterpret_cast<F>(driver_symbol(name));
  return fn != nullptr;
}

const Driver& driver() {
  static const Driver d = [] {
    Driver g;
    g.ok = bind("cuGraphClone", g.clone) && bind("cuGraphNodeFindInClone", g.find_in_clone) && bind("cuGraphAddDependencies_v2", g.add_dependencies) &&
           bind("cuGraphGetNodes", g.get_nodes) && bind("cuGraphInstantiateWithFlags", g.instantiate) && bind("cuGraphLaunch", g.launch) &&
           bind("cuGraphExecKernelNodeSetParams_v2", g.set_kernel_params) && bind("cuGraphExecDestroy", g.exec_destroy) &&
           bind("cuGraphDestroy", g.graph_destroy) && bind("cuMemcpyAsync", g.copy) && bind("cuStreamSynchronize", g.synchronize) &&
           bind("cuGraphAddKernelNode_v2", g.add_kernel_node) && bind("cuGraphNodeGetType", g.node_type) &&
           bind("cuGraphKernelNodeGetParams_v2", g.kernel_node_params);
    return g;
  }();
  return d;
}

// The members of MLX 0.32.4's cu::CommandEncoder read here, in its order (the class's first members);
// capture_step refuses another release (mx::version()).
constexpr const char* ENCODER_LAYOUT_VERSION = "0.32.4";
struct GraphNodeMirror {
  void* node;
  std::string node_type, id;
};
struct EncoderMembers {
  void* device;
  void* stream;
  void* graph;
  std::shared_ptr<void> worker;
  int node_count;
  bool in_concurrent;
  std::vector<void*> from_nodes, to_nodes;
  std::string graph_nodes_key, graph_deps_key;
  std::vector<GraphNodeMirror> concurrent_nodes;
  std::vector<std::shared_ptr<mx::array::Data>> temporaries;
};

// The offsets MLX 0.32.4's commit_impl and needs_commit read these at (libmlx.so's x86-64 code).
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Winvalid-offsetof"
static_assert(offsetof(EncoderMembers, graph) == 0x10 && offsetof(EncoderMembers, node_count) == 0x28 && offsetof(EncoderMembers, from_nodes) == 0x30 &&
              offsetof(EncoderMembers, to_nodes) == 0x48 && offsetof(EncoderMembers, temporaries) == 0xb8);
#pragma clang diagnostic pop

// The kernel node the driver made last on this thread (cuGraphAddKernelNode_v2 below).
thread_local void* made_node = nullptr;

/** A step being captured (on the thread evaluating it). */
struct Capture {
  void* encoder;
  void* graph = nullptr; // the copy of the step's graph, with its edges
  std::vector<std::shared_ptr<mx::array::Data>> kept_data;
  Arrays kept;
  std::vector<std::pair<void*, std::shared_ptr<NodeUpdater>>> nodes; // the node in MLX's graph, then in the copy
  int commits = 0, cache_writes = 0;
  std::string failure;
};
thread_local Capture* capturing = nullptr;

void fail(Capture& c, const std::string& why) {
  if (c.failure.empty()) c.failure = why;
}

/** MLXB_STEP_GRAPH_TRACE=1: each capture's graph and outcome on stderr, and each launch waited for
 * and checked there (a GPU run's triage: a fault then names the launch that made it). */
bool tracing() {
  static const bool on = env_is("MLXB_STEP_GRAPH_TRACE", "1");
  return on;
}

/** Whether the edge from -> to of a captured step is made programmatic: both kernel nodes, `to` a
 * kernel that waits for its upstream kernels (cuda.h's WAIT_FOR_UPSTREAM), so that its blocks launch
 * while `from` finishes. MLXB_STEP_GRAPH_PDL=0: plain edges, for comparisons. */
bool dependent_launch(const Driver& d, void* from, void* to) {
  static const bool wanted = !env_is("MLXB_STEP_GRAPH_PDL", "0");
  int from_type = -1, to_type = -1;
  if (!wanted || d.node_type(from, &from_type) != 0 || d.node_type(to, &to_type) != 0 || from_type != NODE_KERNEL || to_type != NODE_KERNEL) return false;
  KernelNodeParams p{};
  return d.kernel_node_params(to, &p) == 0 && waits_for_upstream(p.func);
}

/** The step's graph in MLX's encoder about to be committed, copied into `c` with its edges. */
void take_graph(Capture& c, EncoderMembers& m) {
  const Driver& d = driver();
  c.commits++;
  if (c.commits > 1) return fail(c, "the step was committed in more than one graph");
  size_t count = 0;
  if (d.get_nodes(m.graph, nullptr, &count) != 0 || count != static_cast<size_t>(m.node_count) || m.from_nodes.size() != m.to_nodes.size())
    return fail(c, "MLX's command encoder is not laid out as MLX 0.32.4's");
  void* copy = nullptr;
  if (d.clone(&copy, m.graph) != 0) return fail(c, "cuGraphClone failed");
  c.graph = copy;
  std::vector<void*> from(m.from_nodes.size()), to(m.to_nodes.size());
  for (size_t i = 0; i < from.size(); i++) {
    if (d.find_in_clone(&from[i], m.from_nodes[i], copy) != 0 || d.find_in_clone(&to[i], m.to_nodes[i], copy) != 0)
      return fail(c, "an edge's node is not in the step's graph");
  }
  std::vector<EdgeData> edges(from.size());
  int programmatic = 0;
  for (size_t i = 0; i < from.size(); i++) {
    if (dependent_launch(d, m.from_nodes[i], m.to_nodes[i])) edges[i] = PROGRAMMATIC_EDGE, programmatic++;
  }
  if (tracing()) std::fprintf(stderr, "mlx-bun step graph: %zu nodes, %zu edges (%d programmatic)\n", count, from.size(), programmatic);
  if (!from.empty() && d.add_dependencies(copy, from.data(), to.data(), edges.data(), from.size()) != 0) return fail(c, "cuGraphAddDependencies failed");
  for (auto& [node, updater] : c.nodes) {
    void* in_copy = nullptr;
    if (d.find_in_clone(&in_copy, node, copy) != 0) return fail(c, "a node to update is not in the step's graph");
    node = in_copy;
  }
  c.kept_data.insert(c.kept_data.end(), m.temporaries.begin(), m.temporaries.end());
}

template <typename F>
F mlx_function(const char* name) {
  void* f = dlsym(RTLD_NEXT, name);
  if (!f) {
    void* mlx = dlopen("libmlx.so", RTLD_NOW | RTLD_NOLOAD);
    f = mlx ? dlsym(mlx, name) : nullptr;
  }
  if (!f) {
    std::fprintf(stderr, "mlx-bun: libmlx.so's %s was not found\n", name);
    std::abort();
  }
  return reinterpret_cast<F>(f);
}

constexpr const char* COMMIT_IMPL = "_ZN3mlx4core2cu14CommandEncoder11commit_implEv";
constexpr const char* NEEDS_COMMIT = "_ZN3mlx4core2cu14CommandEncoder12needs_commitEv";

} // namespace

// ---- the interposed functions (see the top) ----

void encoder_commit_impl(void* encoder) __asm__("_ZN3mlx4core2cu14CommandEncoder11commit_implEv");
bool encoder_needs_commit(void* encoder) __asm__("_ZN3mlx4core2cu14CommandEncoder12needs_commitEv");

__attribute__((visibility("default"))) void encoder_commit_impl(void* encoder) {
  static const auto mlx_commit_impl = mlx_function<void (*)(void*)>(COMMIT_IMPL);
  if (Capture* c = capturing; c != nullptr && c->encoder == encoder) {
    auto& m = *static_cast<EncoderMembers*>(encoder);
    if (m.node_count > 0) take_graph(*c, m);
  }
  mlx_commit_impl(encoder);
}

__attribute__((visibility("default"))) bool encoder_needs_commit(void* encoder) {
  static const auto mlx_needs_commit = mlx_function<bool (*)(void*)>(NEEDS_COMMIT);
  if (Capture* c = capturing; c != nullptr && c->encoder == encoder) return false;
  return mlx_needs_commit(encoder);
}

// libmlx.so makes the nodes of kernels compiled at run time (the shim's) through the driver's
// cuGraphAddKernelNode_v2: made here by the driver's and noted, so that step_capture_node knows it.
extern "C" __attribute__((visibility("default"))) int cuGraphAddKernelNode_v2(void** node, void* graph, void* const* dependencies, size_t count,
                                                                              const void* params) {
  const Driver& d = driver();
  if (!d.add_kernel_node) return 3; // CUDA_ERROR_NOT_INITIALIZED: no driver
  int result = d.add_kernel_node(node, graph, dependencies, count, params);
  made_node = result == 0 ? *node : nullptr;
  return result;
}

// ---- what the shim's kernels and the KV cache tell a capture ----

bool mlxb::step_capture_active() {
  return capturing != nullptr;
}

void mlxb::step_capture_cache_write() {
  if (capturing) capturing->cache_writes++;
}

void mlxb::step_capture_node(std::shared_ptr<NodeUpdater> updater) {
  if (!capturing) return;
  if (!made_node) return fail(*capturing, "a kernel to update has no graph node (MLX_USE_CUDA_GRAPHS=0?)");
  capturing->nodes.emplace_back(made_node, std::move(updater));
}

void mlxb::keep_until_done(cu::CommandEncoder& encoder, const mx::array& a) {
  encoder.add_completed_handler([kept = a]() {});
  if (capturing) capturing->kept.push_back(a);
}

// ---- the captured step ----

struct mlxb::StepGraph {
  int device = 0;
  void* stream = nullptr;
  void* graph = nullptr;
  void* exec = nullptr;
  Arrays inputs;  // the buffers the graph reads its inputs from
  Arrays outputs; // the buffers it writes the step's results to
  Arrays kept;
  std::vector<std::shared_ptr<mx::array::Data>> kept_data;
  std::vector<std::pair<void*, std::shared_ptr<NodeUpdater>>> nodes; // nodes of `graph`
  int launches = 0;                                                  // traced ones (tracing())

  ~StepGraph() {
    // The buffers (released after this body) may still be in use by a launch: wait for it.
    const Driver& d = driver();
    if (stream) d.synchronize(stream);
    if (exec) d.exec_destroy(exec);
    if (graph) d.graph_destroy(graph);
  }
};

namespace {

void copy_async(const Driver& d, const mx::array& dst, const mx::array& src, void* stream) {
  if (src.nbytes() == 0) return;
  check_cuda(d.copy(reinterpret_cast<uintptr_t>(device_pointer(dst)), reinterpret_cast<uintptr_t>(device_pointer(src)), src.nbytes(), stream), "cuMemcpyAsync");
}

bool laid_out(const mx::array& a) {
  return a.flags().row_contiguous && a.data_size() == a.size();
}

/** The step's results copied out of the captured graph's buffers, after launching it with `inputs`
 * (copied into its input buffers) and the nodes' next launches when `launches` are given; without
 * them, its inputs are the captured results themselves (the capture's own step). */
class StepOutputs : public mx::Primitive {
 public:
  StepOutputs(mx::Stream stream, std::shared_ptr<StepGraph> graph, std::optional<std::vector<std::shared_ptr<NodeLaunch>>> launches)
      : mx::Primitive(stream), graph_(std::move(graph)), launches_(std::move(launches)) {}

  void eval_cpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { throw std::runtime_error("StepOutputs runs on the GPU only"); }

  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const Driver& d = driver();
    StepGraph& g = *graph_;
    auto& encoder = cu::get_command_encoder(stream());
    encoder.commit(); // MLX's pending kernels (the inputs' own) go first on the stream
    cu::device(g.device).make_current();
    if (launches_) {
      for (size_t i = 0; i < inputs.size(); i++) {
        if (!laid_out(inputs[i])) throw std::runtime_error("a captured step's input " + std::to_string(i) + " is not laid out row-contiguous");
        copy_async(d, g.inputs[i], inputs[i], g.stream);
      }
      for (size_t i = 0; i < g.nodes.size(); i++) {
        NodeLaunch& l = *(*launches_)[i];
        const KernelNodeParams p{l.function, l.grid.x, l.grid.y, l.grid.z, l.block.x, l.block.y, l.block.z, l.smem, l.params(), nullptr, nullptr, nullptr};
        check_cuda(d.set_kernel_params(g.exec, g.nodes[i].first, &p), "cuGraphExecKernelNodeSetParams");
      }
      check_cuda(d.launch(g.exec, g.stream), "cuGraphLaunch");
      if (tracing()) {
        check_cuda(d.synchronize(g.stream), "the step graph's launch");
        std::fprintf(stderr, "mlx-bun step graph: launch %d done\n", ++g.launches);
      }
    }
    for (size_t i = 0; i < outputs.size(); i++) {
      outputs[i].set_data(mx::allocator::malloc(outputs[i].nbytes()));
      copy_async(d, outputs[i], g.outputs[i], g.stream);
    }
  }

  const char* name() const override { return "StepOutputs"; }

 private:
  std::shared_ptr<StepGraph> graph_;
  std::optional<std::vector<std::shared_ptr<NodeLaunch>>> launches_;
};

Arrays step_outputs(const std::shared_ptr<StepGraph>& g, std::optional<std::vector<std::shared_ptr<NodeLaunch>>> launches, Arrays inputs) {
  std::vector<mx::Shape> shapes;
  std::vector<mx::Dtype> dtypes;
  for (const auto& o : g->outputs) shapes.push_back(o.shape()), dtypes.push_back(o.dtype());
  auto stream = mx::default_stream(mx::Device::gpu);
  return mx::array::make_arrays(std::move(shapes), std::move(dtypes), std::make_shared<StepOutputs>(stream, g, std::move(launches)), std::move(inputs));
}

} // namespace

std::shared_ptr<StepGraph> mlxb::capture_step(const Arrays& given, const StepFn& step, Arrays& results, std::string& why) {
  const Driver& d = driver();
  if (!d.ok) throw ArgumentError("the CUDA driver's graph functions are not loaded");
  auto stream = mx::default_stream(mx::default_device());
  if (stream.device != mx::Device::gpu) throw ArgumentError("a step is captured on the GPU only");
  if (capturing) throw ArgumentError("a step is already being captured");
  // The encoder's members are read in one MLX release's layout: another libmlx.so runs the step as usual.
  if (std::string(mx::version()) != ENCODER_LAYOUT_VERSION) {
    int cache_ops = 0;
    results = step(given, cache_ops);
    why = std::string("MLX ") + mx::version() + " is loaded, and step graphs read MLX " + ENCODER_LAYOUT_VERSION + "'s command encoder";
    return nullptr;
  }
  mx::eval(given);
  for (size_t i = 0; i < given.size(); i++) {
    if (!laid_out(given[i])) throw ArgumentError("input " + std::to_string(i) + " is not laid out row-contiguous");
  }
  auto& encoder = cu::get_command_encoder(stream);
  encoder.commit();
  auto g = std::make_shared<StepGraph>();
  g->device = stream.device.index;
  g->stream = reinterpret_cast<EncoderMembers*>(&encoder)->stream;
  // The step reads copies of its inputs, in buffers of its own that later steps write theirs into.
  for (const auto& a : given) {
    mx::array copy(device_buffer(g->device, std::max<size_t>(a.nbytes(), 1)), a.shape(), a.dtype());
    copy_async(d, copy, a, g->stream);
    g->inputs.push_back(std::move(copy));
  }
  Capture c{&encoder};
  int cache_ops = 0;
  capturing = &c;
  try {
    results = step(g->inputs, cache_ops);
    mx::async_eval(results);
    encoder.commit();
  } catch (...) {
    capturing = nullptr;
    if (c.graph) d.graph_destroy(c.graph);
    throw;
  }
  capturing = nullptr;
  g->graph = c.graph;
  if (c.failure.empty() && c.commits != 1) fail(c, "the step made no graph (MLX_USE_CUDA_GRAPHS=0?)");
  if (c.failure.empty() && (c.cache_writes != cache_ops || static_cast<int>(c.nodes.size()) != cache_ops))
    fail(c, "a KV cache op of the step is not a decode attention writing in place (" + std::to_string(cache_ops) + " ops, " + std::to_string(c.cache_writes) +
                " writes, " + std::to_string(c.nodes.size()) + " nodes)");
  if (c.failure.empty() && d.instantiate(&g->exec, g->graph, 0) != 0) fail(c, "cuGraphInstantiate failed");
  if (tracing())
    std::fprintf(stderr, "mlx-bun step graph: %s (%zu attention nodes, %zu arrays and %zu buffers kept)\n", c.failure.empty() ? "captured" : c.failure.c_str(),
                 c.nodes.size(), c.kept.size(), c.kept_data.size());
  if (!c.failure.empty()) {
    why = c.failure;
    return nullptr; // the step ran as usual: `results` stand
  }
  g->outputs = results;
  g->kept = std::move(c.kept);
  g->kept_data = std::move(c.kept_data);
  g->nodes = std::move(c.nodes);
  // The step's results as copies: the next launch writes into the captured buffers.
  results = step_outputs(g, std::nullopt, g->outputs);
  return g;
}

Arrays mlxb::launch_step(const std::shared_ptr<StepGraph>& g, const Arrays& given) {
  if (given.size() != g->inputs.size())
    throw ArgumentError("the captured step takes " + std::to_string(g->inputs.size()) + " inputs, got " + std::to_string(given.size()));
  for (size_t i = 0; i < given.size(); i++) {
    if (given[i].shape() != g->inputs[i].shape() || given[i].dtype() != g->inputs[i].dtype())
      throw ArgumentError("input " + std::to_string(i) + " differs in shape or dtype from the captured step's");
  }
  std::vector<std::shared_ptr<NodeLaunch>> launches;
  for (auto& [node, updater] : g->nodes) {
    auto next = updater->next();
    if (!next) throw ArgumentError("the KV cache no longer takes the captured step's writes in place");
    launches.push_back(std::move(next));
  }
  for (auto& [node, updater] : g->nodes) updater->taken();
  return step_outputs(g, std::move(launches), given);
}
