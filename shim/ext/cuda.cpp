// The shim's CUDA plumbing (cuda.h): driver and NVRTC entry points from the libraries libmlx.so
// loads, run-time compilation, the pool of output buffers.
#include "cuda.h"

#include <dlfcn.h>

#include <map>
#include <mutex>
#include <optional>
#include <set>

using namespace mlxb;

namespace {

/** The CUDA driver and NVRTC entry points used, from the libraries libmlx.so has loaded. */
struct Cuda {
  using Result = int;
  Result (*cuDeviceGet)(int*, int);
  Result (*cuDeviceGetAttribute)(int*, int, int);
  Result (*cuModuleLoadData)(void**, const void*);
  Result (*cuModuleGetFunction)(CUfunc_st**, void*, const char*);
  Result (*cuMemAllocAsync)(uintptr_t*, size_t, void*);
  Result (*cuStreamSynchronize)(void*);
  Result (*cuMemFree)(uintptr_t);
  Result (*cuMemFreeAsync)(uintptr_t, void*);
  Result (*cuDevicePrimaryCtxRetain)(void**, int);
  Result (*cuCtxSetCurrent)(void*);
  Result (*nvrtcCreateProgram)(void**, const char*, const char*, int, const char**, const char**);
  Result (*nvrtcCompileProgram)(void*, int, const char**);
  Result (*nvrtcGetProgramLogSize)(void*, size_t*);
  Result (*nvrtcGetProgramLog)(void*, char*);
  Result (*nvrtcGetCUBINSize)(void*, size_t*);
  Result (*nvrtcGetCUBIN)(void*, char*);
  Result (*nvrtcDestroyProgram)(void**);
  bool ok = false;
};

/** The CUDA driver libmlx.so loaded (libcuda.so.1), or null. */
void* driver_library() {
  static void* driver = [] {
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    return lib ? lib : dlopen("libcuda.so.1", RTLD_NOW);
  }();
  return driver;
}

template <typename F>
bool bind(void* lib, const char* name, F& fn) {
  fn = lib ? reinterpret_cast<F>(dlsym(lib, name)) : nullptr;
  return fn != nullptr;
}

const Cuda& cuda() {
  static const Cuda api = [] {
    Cuda c{};
    void* driver = driver_library();
    void* nvrtc = dlopen("libnvrtc.so.13", RTLD_NOW | RTLD_NOLOAD);
    if (!nvrtc) nvrtc = dlopen("libnvrtc.so.13", RTLD_NOW);
    c.ok = bind(driver, "cuDeviceGet", c.cuDeviceGet) && bind(driver, "cuDeviceGetAttribute", c.cuDeviceGetAttribute) &&
           bind(driver, "cuModuleLoadData", c.cuModuleLoadData) && bind(driver, "cuModuleGetFunction", c.cuModuleGetFunction) &&
           bind(driver, "cuMemAllocAsync", c.cuMemAllocAsync) && bind(driver, "cuStreamSynchronize", c.cuStreamSynchronize) &&
           bind(driver, "cuMemFree_v2", c.cuMemFree) && bind(driver, "cuMemFreeAsync", c.cuMemFreeAsync) &&
           bind(driver, "cuDevicePrimaryCtxRetain", c.cuDevicePrimaryCtxRetain) && bind(driver, "cuCtxSetCurrent", c.cuCtxSetCurrent) &&
           bind(nvrtc, "nvrtcCreateProgram", c.nvrtcCreateProgram) && bind(nvrtc, "nvrtcCompileProgram", c.nvrtcCompileProgram) &&
           bind(nvrtc, "nvrtcGetProgramLogSize", c.nvrtcGetProgramLogSize) && bind(nvrtc, "nvrtcGetProgramLog", c.nvrtcGetProgramLog) &&
           bind(nvrtc, "nvrtcGetCUBINSize", c.nvrtcGetCUBINSize) && bind(nvrtc, "nvrtcGetCUBIN", c.nvrtcGetCUBIN) &&
           bind(nvrtc, "nvrtcDestroyProgram", c.nvrtcDestroyProgram);
    return c;
  }();
  return api;
}

} // namespace

void* mlxb::driver_symbol(const char* name) {
  void* driver = driver_library();
  return driver ? dlsym(driver, name) : nullptr;
}

void mlxb::check_cuda(int result, const char* what) {
  if (result != 0) throw std::runtime_error(std::string("CUDA: ") + what + " failed (CUDA error " + std::to_string(result) + ")");
}

namespace {

/** Device buffers for the outputs of the shim's primitives (device_buffer): a pool of their own,
 * from the device's default memory pool (as MLX's are). A buffer goes back to the pool when MLX
 * releases the array, which it does after the GPU work using it has completed. If MLX
 * moved it to managed memory (a host read of the array), it is freed instead. The shim's memory
 * functions count these bytes with MLX's (in use: active; idle: cache) and clear_cache frees the
 * idle ones. */
class OutputPool {
 public:
  mx::allocator::Data take(int device_index, size_t bytes) {
    const size_t size = (bytes + 255) / 256 * 256;
    cu::CudaBuffer* buffer = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& free = free_[{device_index, size}];
      if (!free.empty()) {
        buffer = free.back();
        free.pop_back();
        idle_ -= size;
      }
      in_use_ += size;
    }
    if (!buffer) {
      const Cuda& c = cuda();
      uintptr_t data = 0;
      int result = c.cuMemAllocAsync(&data, size, nullptr);
      if (result == 0) result = c.cuStreamSynchronize(nullptr);
      if (result != 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        in_use_ -= size;
      }
      check_cuda(result, "allocating an output buffer (cuMemAllocAsync)");
      buffer = new cu::CudaBuffer{reinterpret_cast<void*>(data), size, device_index};
    }
    return mx::allocator::Data(mx::allocator::Buffer(buffer), [this](mx::allocator::Buffer b) { give_back(static_cast<cu::CudaBuffer*>(b.ptr())); });
  }

  /** Frees the idle buffers (none of them is used by queued GPU work). */
  void release() {
    std::map<std::pair<int, size_t>, std::vector<cu::CudaBuffer*>> idle;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_ == 0) return; // nothing made, or all in use: no CUDA call (there may be no context)
      idle.swap(free_);
      idle_ = 0;
    }
    const Cuda& c = cuda();
    for (auto& [key, buffers] : idle) {
      for (auto* buffer : buffers) {
        check_cuda(c.cuMemFreeAsync(reinterpret_cast<uintptr_t>(buffer->data), nullptr), "cuMemFreeAsync");
        delete buffer;
      }
    }
    check_cuda(c.cuStreamSynchronize(nullptr), "cuStreamSynchronize");
  }

  size_t bytes(bool in_use) {
    std::lock_guard<std::mutex> lock(mutex_);
    return in_use ? in_use_ : idle_;
  }

 private:
  void give_back(cu::CudaBuffer* buffer) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_use_ -= buffer->size;
      if (buffer->device >= 0) {
        free_[{buffer->device, buffer->size}].push_back(buffer);
        idle_ += buffer->size;
        return;
      }
    }
    // MLX moved it to managed memory (and freed the device memory itself): free that, on a thread
    // (MLX's completion worker) that may have no context current.
    const Cuda& c = cuda();
    static void* context = [&c] {
      void* ctx = nullptr;
      c.cuDevicePrimaryCtxRetain(&ctx, 0);
      return ctx;
    }();
    c.cuCtxSetCurrent(context);
    c.cuMemFree(reinterpret_cast<uintptr_t>(buffer->data));
    delete buffer;
  }

  std::mutex mutex_;
  std::map<std::pair<int, size_t>, std::vector<cu::CudaBuffer*>> free_;
  size_t in_use_ = 0, idle_ = 0;
};

OutputPool& output_pool() {
  static OutputPool* pool = new OutputPool(); // outlives the arrays released at exit
  return *pool;
}

} // namespace

int mlxb::multiprocessors(int device_index) {
  static std::mutex mutex;
  static std::map<int, int> counts; // by device index: asked of the driver once
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = counts.find(device_index); it != counts.end()) return it->second;
  const Cuda& c = cuda();
  if (!c.ok) throw std::runtime_error("the CUDA driver or NVRTC library is not loaded");
  int device = 0, count = 0;
  check_cuda(c.cuDeviceGet(&device, device_index), "cuDeviceGet");
  check_cuda(c.cuDeviceGetAttribute(&count, 16, device), "multiprocessor count"); // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
  counts.emplace(device_index, count);
  return count;
}

namespace {
// The kernels compiled from a source that runs WAIT_FOR_UPSTREAM() (waits_for_upstream).
std::mutex waiting_mutex;
std::set<CUfunc_st*> waiting;
} // namespace

CUfunc_st* mlxb::compile_kernel(int device_index, const std::string& source, const char* file, const char* name) {
  const Cuda& c = cuda();
  if (!c.ok) throw std::runtime_error("the CUDA driver or NVRTC library is not loaded");
  cu::device(device_index).make_current();
  int device = 0, major = 0, minor = 0;
  check_cuda(c.cuDeviceGet(&device, device_index), "cuDeviceGet");
  check_cuda(c.cuDeviceGetAttribute(&major, 75, device), "compute capability"); // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
  check_cuda(c.cuDeviceGetAttribute(&minor, 76, device), "compute capability"); // ..._MINOR
  std::string arch = "-arch=sm_" + std::to_string(major) + std::to_string(minor);
  const char* options[] = {arch.c_str(), "-default-device"};
  void* program = nullptr;
  const std::string full = DEPENDENT_LAUNCH_SOURCE + source;
  check_cuda(c.nvrtcCreateProgram(&program, full.c_str(), file, 0, nullptr, nullptr), "nvrtcCreateProgram");
  std::string cubin, failure;
  if (c.nvrtcCompileProgram(program, 2, options) != 0) {
    size_t size = 0;
    c.nvrtcGetProgramLogSize(program, &size);
    std::string log(size, '\0');
    c.nvrtcGetProgramLog(program, log.data());
    failure = "NVRTC (" + arch + "): " + log;
  } else {
    size_t size = 0;
    c.nvrtcGetCUBINSize(program, &size);
    cubin.resize(size);
    c.nvrtcGetCUBIN(program, cubin.data());
  }
  c.nvrtcDestroyProgram(&program);
  if (!failure.empty()) throw std::runtime_error(failure);
  void* module = nullptr;
  CUfunc_st* function = nullptr;
  check_cuda(c.cuModuleLoadData(&module, cubin.data()), "cuModuleLoadData");
  check_cuda(c.cuModuleGetFunction(&function, module, name), "cuModuleGetFunction");
  if (source.find("WAIT_FOR_UPSTREAM()") != std::string::npos) {
    std::lock_guard<std::mutex> lock(waiting_mutex);
    waiting.insert(function);
  }
  return function;
}

CUfunc_st* mlxb::kernel_once(int device_index, const char* source, const char* file, const char* name) {
  static std::mutex mutex;
  static std::map<std::pair<int, std::string>, CUfunc_st*> kernels;
  std::lock_guard<std::mutex> lock(mutex);
  auto& f = kernels[{device_index, name}];
  if (!f) f = compile_kernel(device_index, source, file, name);
  return f;
}

bool mlxb::waits_for_upstream(CUfunc_st* f) {
  std::lock_guard<std::mutex> lock(waiting_mutex);
  return waiting.count(f) != 0;
}

mx::allocator::Data mlxb::device_buffer(int device_index, size_t bytes) {
  return output_pool().take(device_index, bytes);
}

void* mlxb::device_pointer(const mx::array& a) {
  return static_cast<char*>(static_cast<cu::CudaBuffer*>(a.buffer().ptr())->data) + a.offset();
}

size_t mlxb::device_buffer_bytes(bool in_use) {
  return output_pool().bytes(in_use);
}

void mlxb::device_buffers_release() {
  output_pool().release();
}

namespace {

// The done-counters of the shim's kernels whose last block (or warp) to finish completes the work
// (attention_cuda.cpp's merge, qmv_cuda.cpp's norm and q/k norm + rope): zeros on the device, made once per device when a
// graph first uses such a kernel; a call takes the next `count` of them (round the ring), and the
// kernel sets each back to 0 when done. A ring so long that the calls sharing counters are
// thousands of decode steps apart: two calls running at once never do.
constexpr int COUNTERS = 1 << 20;
struct Ring {
  std::optional<mx::array> zeros;
  int next = 0;
};
std::mutex rings_mutex;
std::map<int, Ring> rings;

} // namespace

void mlxb::make_counter_ring(int device_index, const mx::Stream& stream) {
  std::lock_guard<std::mutex> lock(rings_mutex);
  auto& ring = rings[device_index];
  if (ring.zeros) return;
  ring.zeros = mx::zeros({COUNTERS}, mx::int32, stream);
  ring.zeros->eval();
}

int* mlxb::counters_for(int device_index, int count) {
  std::lock_guard<std::mutex> lock(rings_mutex);
  auto& ring = rings.at(device_index);
  if (ring.next + count > COUNTERS) ring.next = 0;
  int* at = static_cast<int*>(device_pointer(*ring.zeros)) + ring.next;
  ring.next += count;
  return at;
}
