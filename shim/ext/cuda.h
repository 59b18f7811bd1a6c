// The shim's CUDA plumbing (a CUDA build only, zig build -Dcuda=true): the part of MLX's CUDA backend
// that libmlx.so exports, the driver and NVRTC entry points, kernels compiled at run time, and device
// buffers for the outputs of the shim's own GPU primitives (qmv_cuda.cpp, kv_cuda.cpp, norm_rope_cuda.cpp).
#pragma once

#include <functional>
#include <string>

#include "internal.h"
#include "mlx/allocator.h"

// The part of MLX's CUDA backend used here, declared as libmlx.so exports it: its own headers need
// the CUDA toolkit's and fmt's, which the wheel does not ship. dim3 is CUDA's (three unsigned ints,
// passed by value); CudaBuffer is the struct MLX's CUDA allocator keeps behind every Buffer.
#pragma GCC visibility push(default)
struct dim3 {
  unsigned x, y, z;
};
struct CUfunc_st;
namespace mlx::core::cu {
struct CudaBuffer {
  void* data;
  size_t size;
  int device; // -1: managed memory
};
class Device {
 public:
  void make_current();
};
Device& device(int index);
class CommandEncoder {
 public:
  void set_input_array(const array& arr);
  void set_output_array(const array& arr);
  void add_kernel_node_raw(CUfunc_st* func, dim3 grid, dim3 block, dim3 cluster, uint32_t smem_bytes, void** params);
  void add_completed_handler(std::function<void()> task);
  void commit();
};
CommandEncoder& get_command_encoder(Stream s);
} // namespace mlx::core::cu
#pragma GCC visibility pop

namespace mlxb {

namespace cu = mlx::core::cu;

/** Throws "CUDA: <what> failed (CUDA error n)" for a nonzero result of a driver call. */
void check_cuda(int result, const char* what);

/** Compiles `source` (after DEPENDENT_LAUNCH_SOURCE) with NVRTC for the device's architecture and
 * loads its kernel `name` (extern "C"); throws with NVRTC's log or the driver's error. `file` names
 * the source in the log. */
CUfunc_st* compile_kernel(int device_index, const std::string& source, const char* file, const char* name);

/** compile_kernel's kernel `name` of `source` on the device, compiled on its first call for that
 * device and name (under a lock) and kept; throws when it does not compile. */
CUfunc_st* kernel_once(int device_index, const char* source, const char* file, const char* name);

/** The device's streaming multiprocessors (CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT). */
int multiprocessors(int device_index);

/** Device memory of `bytes` for an output of one of the shim's primitives (MLX's allocator does not
 * export its device-memory entry; its exported malloc gives managed memory): from a pool of device
 * buffers, each back in the pool when MLX releases the array. */
mx::allocator::Data device_buffer(int device_index, size_t bytes);

/** The DTYPE macro of the shim's kernel sources: 0 float32, 1 bfloat16, 2 float16 (any other dtype). */
inline int dtype_code(mx::Dtype t) {
  if (t == mx::float32) return 0;
  if (t == mx::bfloat16) return 1;
  return 2;
}

/** The start of a kernel source of the shim's for a dtype: DTYPE (dtype_code), T (the element type),
 * load (T to float), round_to (float to T: to nearest even, NaN kept a NaN, as MLX converts) and
 * INFINITY (NVRTC has no math.h). */
inline std::string dtype_source(mx::Dtype t) {
  return "#define DTYPE " + std::to_string(dtype_code(t)) + "\n" + R"CUDA(
#if DTYPE == 1
typedef unsigned short T;
__device__ __forceinline__ float load(T v) { return __uint_as_float(((unsigned)v) << 16); }
__device__ __forceinline__ T round_to(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (T)((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return (T)(u >> 16);
}
#elif DTYPE == 2
typedef unsigned short T;
__device__ __forceinline__ float load(T v) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v)); return f; }
__device__ __forceinline__ T round_to(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#else
typedef float T;
__device__ __forceinline__ float load(T v) { return v; }
__device__ __forceinline__ T round_to(float f) { return f; }
#endif
#define INFINITY __int_as_float(0x7f800000)
)CUDA";
}

/** The entry point `name` of the CUDA driver libmlx.so loaded (libcuda.so.1), or null. */
void* driver_symbol(const char* name);

// ---- step graphs (step_graph_cuda.cpp): what the shim's kernels tell a step being captured ----

/** A kernel node's next launch in a captured step (what cuGraphExecKernelNodeSetParams takes): its
 * function, grid, block, dynamic shared memory, and the addresses of its parameters' values, valid
 * while this object lives. */
struct NodeLaunch {
  CUfunc_st* function = nullptr;
  dim3 grid{1, 1, 1}, block{1, 1, 1};
  uint32_t smem = 0;
  virtual ~NodeLaunch() = default;
  virtual void** params() = 0;
};

/** A kernel node of a captured step whose launch changes from step to step: `next()` makes the next
 * step's launch without changing anything (null where that step cannot be launched from the
 * capture), `taken()` is called once every node's next launch was made. */
struct NodeUpdater {
  virtual ~NodeUpdater() = default;
  virtual std::shared_ptr<NodeLaunch> next() = 0;
  virtual void taken() = 0;
};

/** While a step is captured: the kernel node this thread's encoder made last (add_kernel_node_raw)
 * is launched at later steps as `updater` says. Nothing otherwise. */
void step_capture_node(std::shared_ptr<NodeUpdater> updater);

/** Keeps `a` (a kernel's temporary) until the GPU is done with the work queued so far (a completion
 * handler of the encoder's), and while a step is captured, for as long as the captured step. */
void keep_until_done(cu::CommandEncoder& encoder, const mx::array& a);

/** What compile_kernel puts in front of every kernel source: WAIT_FOR_UPSTREAM(), to be run before a
 * kernel's first access to memory another kernel writes, and LAUNCH_DOWNSTREAM(), which lets the
 * kernels waiting on this one be launched (sm_90 and later; nothing before). In a captured step the
 * edges into a kernel whose source runs WAIT_FOR_UPSTREAM() from another kernel are made programmatic
 * (step_graph_cuda.cpp): its blocks launch while the kernel before it finishes, and wait there. */
inline constexpr const char* DEPENDENT_LAUNCH_SOURCE = R"CUDA(
#if __CUDA_ARCH__ >= 900
#define WAIT_FOR_UPSTREAM() asm volatile("griddepcontrol.wait;" ::: "memory")
#define LAUNCH_DOWNSTREAM() asm volatile("griddepcontrol.launch_dependents;" :::)
#else
#define WAIT_FOR_UPSTREAM()
#define LAUNCH_DOWNSTREAM()
#endif
)CUDA";

/** Whether `f` was compiled from a source that runs WAIT_FOR_UPSTREAM(). */
bool waits_for_upstream(CUfunc_st* f);

/** The array's data on the device (MLX's gpu_ptr). */
void* device_pointer(const mx::array& a);

/** Makes the device's ring of done-counters (an evaluated int32 array of zeros) unless made: on the
 * thread building the graph, not inside an evaluation. */
void make_counter_ring(int device_index, const mx::Stream& stream);

/** Where a call's `count` done-counters start on the device (make_counter_ring ran for it): zeros,
 * which the kernel sets back to 0 when done. */
int* counters_for(int device_index, int count);

} // namespace mlxb
