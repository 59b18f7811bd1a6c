// Array lifetime, queries, evaluation and host transfer.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <unordered_set>
#include <variant>

#include "internal.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

// Indexed by mlx_dtype: the header's table.
#define MLXB_DTYPE_MLX(code, name, mlx_name, bytes) mx::mlx_name,
const mx::Dtype kDtypes[] = {MLXB_DTYPES(MLXB_DTYPE_MLX)};
#undef MLXB_DTYPE_MLX
constexpr int kDtypeCount = sizeof(kDtypes) / sizeof(kDtypes[0]);

} // namespace

mx::Dtype mlxb::to_dtype(int dtype) {
  if (dtype < 0 || dtype >= kDtypeCount) throw ArgumentError("unknown dtype code " + std::to_string(dtype));
  return kDtypes[dtype];
}

int mlxb::from_dtype(mx::Dtype dtype) {
  for (int i = 0; i < kDtypeCount; i++) {
    if (kDtypes[i] == dtype) return i;
  }
  throw std::runtime_error("dtype without a code");
}

extern "C" {

const char* mlx_version_string(void) {
  static const std::string v = mx::version();
  return v.c_str();
}

int mlx_default_device_is_gpu(void) {
  return mx::default_device() == mx::Device::gpu ? 1 : 0;
}

int mlx_set_default_device_gpu(int use_gpu) {
  return guard([&] {
    mx::Device d = use_gpu ? mx::Device::gpu : mx::Device::cpu;
    if (!mx::is_available(d)) throw std::runtime_error(use_gpu ? "no GPU device available in this MLX build" : "CPU device unavailable");
    mx::set_default_device(d);
  });
}

int mlx_default_device_info(char* name, size_t cap, uint64_t* total_memory) {
  return guard([&] {
    if (name == nullptr || cap == 0 || total_memory == nullptr) throw ArgumentError("out-pointer is null");
    const auto& info = mx::device_info(mx::default_device());
    std::string device_name = "unknown";
    *total_memory = 0;
    for (const auto& [key, value] : info) {
      if (key == "device_name" && std::holds_alternative<std::string>(value)) device_name = std::get<std::string>(value);
      if ((key == "total_memory" || key == "memory_size") && std::holds_alternative<size_t>(value)) *total_memory = std::get<size_t>(value);
    }
    size_t n = std::min(device_name.size(), cap - 1);
    std::memcpy(name, device_name.data(), n);
    name[n] = '\0';
  });
}

int mlx_array_new_data(mlx_array* out, const void* data, size_t nbytes, const int32_t* shape, int ndim, int dtype) {
  return guard([&] {
    auto dt = to_dtype(dtype);
    auto s = dims_of(shape, ndim);
    size_t count = 1;
    for (auto d : s) count *= static_cast<size_t>(d);
    if (count * dt.size() != nbytes) {
      throw ArgumentError("data has " + std::to_string(nbytes) + " bytes but shape needs " + std::to_string(count * dt.size()));
    }
    if (nbytes > 0 && data == nullptr) throw ArgumentError("data pointer is null");
    // Copy into an MLX-owned buffer: the host memory belongs to a JS object whose lifetime we do not control.
    void* copy = std::malloc(nbytes > 0 ? nbytes : 1);
    if (copy == nullptr) throw std::bad_alloc();
    if (nbytes > 0) std::memcpy(copy, data, nbytes);
    store(out, mx::array(copy, std::move(s), dt, [](void* p) { std::free(p); }));
  });
}

int mlx_array_new_float(mlx_array* out, float value, int dtype) {
  return guard([&] { store(out, mx::array(value, to_dtype(dtype))); });
}

int mlx_array_new_int(mlx_array* out, int32_t value) {
  return guard([&] { store(out, mx::array(value, mx::int32)); });
}

int mlx_array_free(mlx_array a) {
  if (recording != nullptr) forget_handle(a);
  delete static_cast<mx::array*>(a);
  return 0;
}

int mlx_array_ndim(int* out, mlx_array a) {
  return guard([&] { *out = static_cast<int>(arr(a, "a").ndim()); });
}

int mlx_array_shape(int32_t* out, mlx_array a) {
  return guard([&] {
    const auto& s = arr(a, "a").shape();
    std::copy(s.begin(), s.end(), out);
  });
}

int mlx_array_dtype(int* out, mlx_array a) {
  return guard([&] { *out = from_dtype(arr(a, "a").dtype()); });
}

int mlx_array_size(size_t* out, mlx_array a) {
  return guard([&] { *out = arr(a, "a").size(); });
}

int mlx_array_nbytes(size_t* out, mlx_array a) {
  return guard([&] { *out = arr(a, "a").nbytes(); });
}

int mlx_array_eval(mlx_array a) {
  return guard([&] { mx::eval(arr(a, "a")); });
}

int mlx_eval(const mlx_array* arrays, int count) {
  return guard([&] { mx::eval(arrays_of(arrays, count)); });
}

int mlx_async_eval(const mlx_array* arrays, int count) {
  return guard([&] { mx::async_eval(arrays_of(arrays, count)); });
}

int mlx_array_to_host(void* dst, size_t nbytes, mlx_array a) {
  return guard([&] {
    if (recording != nullptr) record_unsupported("the recorded step read an array to the host");
    mx::array x = arr(a, "a");
    if (x.nbytes() != nbytes) {
      throw ArgumentError("destination has " + std::to_string(nbytes) + " bytes, array has " + std::to_string(x.nbytes()));
    }
    x.eval();
    if (!x.flags().row_contiguous) {
      x = mx::contiguous(x);
      x.eval();
    }
    if (nbytes > 0) std::memcpy(dst, x.data<uint8_t>(), nbytes);
  });
}

int mlx_array_available(int* out, mlx_array a) {
  return guard([&] { *out = arr(a, "a").status() == mx::array::Status::available ? 1 : 0; });
}

int mlx_bench_add_floor(double* out, mlx_array a_, mlx_array b_, int count, int repeats) {
  return guard([&] {
    const auto& a = arr(a_, "a");
    const auto& b = arr(b_, "b");
    if (out == nullptr || count < 1 || repeats < 1) throw ArgumentError("out is null, or count or repeats < 1");
    double best = 0;
    for (int r = 0; r < repeats; r++) {
      auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < count; i++) {
        auto sum = mx::add(a, b);
      }
      double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() / count;
      best = r == 0 ? ns : std::min(best, ns);
    }
    *out = best;
  });
}

} // extern "C"

// Each primitive still to run behind the arrays, once per node (a multi-output primitive once for
// all its outputs), as mx::eval would schedule them. Nodes are told apart by their arrays, not their
// primitives: compiled functions and replayed tapes share one primitive object between nodes.
template <typename F>
static void for_each_pending(const mlx_array* arrays, int count, F visit) {
  std::unordered_set<std::uintptr_t> seen;
  std::vector<mx::array> stack = arrays_of(arrays, count);
  while (!stack.empty()) {
    mx::array a = stack.back();
    stack.pop_back();
    if (!seen.insert(a.id()).second) continue;
    if (!a.has_primitive() || a.status() != mx::array::Status::unscheduled) continue;
    for (const auto& sibling : a.siblings()) seen.insert(sibling.id());
    visit(a.primitive());
    for (const auto& input : a.inputs()) stack.push_back(input);
  }
}

extern "C" {

int mlx_graph_primitives(int* out, const mlx_array* arrays, int count) {
  return guard([&] {
    if (out == nullptr) throw ArgumentError("out-pointer is null");
    int primitives = 0;
    for_each_pending(arrays, count, [&](mx::Primitive&) { primitives++; });
    *out = primitives;
  });
}

int mlx_graph_primitive_names(char* out, size_t cap, size_t* needed, const mlx_array* arrays, int count) {
  return guard([&] {
    if (needed == nullptr) throw ArgumentError("needed is null");
    std::string names;
    for_each_pending(arrays, count, [&](mx::Primitive& p) { names.append(p.name()).push_back('\n'); });
    *needed = names.size() + 1;
    if (out != nullptr && cap >= names.size() + 1) std::memcpy(out, names.c_str(), names.size() + 1);
  });
}

int mlx_bench_read_bandwidth(double* out, size_t nbytes, int repeats) {
  return guard([&] {
    if (out == nullptr) throw ArgumentError("out-pointer is null");
    if (repeats < 1) throw ArgumentError("repeats must be at least 1");
    if (nbytes < 4 || nbytes / 4 > static_cast<size_t>(std::numeric_limits<int>::max())) throw ArgumentError("nbytes must be 4 B to 8 GiB");
    auto src = mx::full({static_cast<int>(nbytes / 4)}, 1.0f, mx::float32);
    src.eval();
    // On a GPU of a CUDA build a kernel of ours that only streams the buffer, 4 times a launch (MLX's
    // sum, one read a launch, measured a few percent slower), for a buffer of 1 MiB or more (a
    // smaller one may not be 16-byte aligned, and measures no bandwidth); else MLX's sum.
#ifdef MLXB_CUDA
    const bool own = mx::default_device() == mx::Device::gpu && nbytes >= (1u << 20);
#else
    const bool own = false;
#endif
    const int passes = own ? 4 : 1;
    auto sum = [&] {
#ifdef MLXB_CUDA
      if (own) return read_sum_cuda(src, passes);
#endif
      return mx::sum(src);
    };
    // One warm-up sum; our kernel's checked (the buffer's ones summed, each thread's and block's part
    // exact in float32: a probe that skipped part of the buffer would report too much). MLX's sum is
    // not checked: it reads every element by construction, and its float32 sum of more than 2^24
    // ones is not their count.
    const double total = mx::sum(sum()).item<float>(), expected = static_cast<double>(passes) * static_cast<double>(src.size());
    if (own && std::abs(total - expected) > 1e-4 * expected)
      throw std::runtime_error("read bandwidth: the probe summed " + std::to_string(total) + " for " + std::to_string(expected) + " ones");
    double best = std::numeric_limits<double>::infinity();
    for (int i = 0; i < repeats; i++) {
      auto start = std::chrono::steady_clock::now();
      mx::eval(sum());
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    *out = static_cast<double>(passes) * static_cast<double>(src.nbytes()) / best;
  });
}

} // extern "C"
