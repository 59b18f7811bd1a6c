// The read-bandwidth probe of `bench decode` on the GPU of a CUDA build: a sum of a float32 buffer,
// read several times in one launch (so that the host's launch and wait are a small share of the
// time taken), by a kernel of ours that only streams it (16-byte loads, four in flight a thread,
// grid-stride over a few blocks an SM), writing one partial sum a block. MLX's sum, one read a
// launch, measured a few percent under PyTorch's on the same GPU (docs/performance.md). Compiled by
// NVRTC on first use (cuda.h).
//
// CUDA build only (zig build -Dcuda=true).

#include "cuda.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

constexpr unsigned THREADS = 512;
constexpr unsigned BLOCKS_PER_SM = 4;

constexpr const char* SOURCE = R"CUDA(
extern "C" __global__ void __launch_bounds__(512) mlxb_read_sum(const uint4* __restrict__ src, long long n16, const float* __restrict__ tail,
                                                               int tail_count, int passes, float* __restrict__ out) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  float acc = 0.f;
  auto add = [&](uint4 v) { acc += (__uint_as_float(v.x) + __uint_as_float(v.y)) + (__uint_as_float(v.z) + __uint_as_float(v.w)); };
  for (int pass = 0; pass < passes; pass++) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
      const uint4 a = __ldg(src + i), b = __ldg(src + i + stride), c = __ldg(src + i + 2 * stride), d = __ldg(src + i + 3 * stride);
      add(a), add(b), add(c), add(d);
    }
    for (; i < n16; i += stride) add(__ldg(src + i));
    if (blockIdx.x == 0 && threadIdx.x < tail_count) acc += tail[threadIdx.x];
  }
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  __shared__ float warps[32];
  if ((threadIdx.x & 31) == 0) warps[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.f;
    for (int w = 0; w < (int)(blockDim.x / 32); w++) sum += warps[w];
    out[blockIdx.x] = sum;
  }
}
)CUDA";

/** The kernel on the device, compiled on first use; throws when it does not compile. */
CUfunc_st* read_kernel(int device_index) {
  return kernel_once(device_index, SOURCE, "mlxb_read_sum.cu", "mlxb_read_sum");
}

/** Input a row-contiguous, 16-byte aligned float32 buffer; output the blocks' partial sums of it read
 * `passes` times. */
class ReadSumCuda : public mx::Primitive {
 public:
  ReadSumCuda(mx::Stream stream, int passes) : mx::Primitive(stream), passes_(passes) {}

  void eval_cpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { throw std::runtime_error("ReadSumCuda runs on the GPU only"); }

  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const int device = stream().device.index;
    auto& encoder = cu::get_command_encoder(stream());
    const auto& src = inputs[0];
    auto& out = outputs[0];
    out.set_data(device_buffer(device, out.nbytes()));
    encoder.set_input_array(src);
    encoder.set_output_array(out);
    // 16-byte loads from the first 16-byte boundary's multiple of 4 floats; the rest (< 4 floats,
    // the buffer's data is 16-byte aligned) read by block 0.
    void* base = device_pointer(src);
    long long n16 = static_cast<long long>(src.size() / 4);
    void* tail = static_cast<float*>(base) + n16 * 4;
    int tail_count = static_cast<int>(src.size() % 4);
    int passes = passes_;
    void* op = device_pointer(out);
    void* params[] = {&base, &n16, &tail, &tail_count, &passes, &op};
    encoder.add_kernel_node_raw(read_kernel(device), dim3{static_cast<unsigned>(out.size()), 1, 1}, dim3{THREADS, 1, 1}, dim3{1, 1, 1}, 0, params);
  }

  const char* name() const override { return "ReadSumCuda"; }
  bool is_equivalent(const mx::Primitive& other) const override { return passes_ == static_cast<const ReadSumCuda&>(other).passes_; }

 private:
  int passes_;
};

} // namespace

mx::array mlxb::read_sum_cuda(const mx::array& src, int passes) {
  auto stream = mx::default_stream(mx::default_device());
  if (src.dtype() != mx::float32 || !src.flags().row_contiguous || reinterpret_cast<uintptr_t>(device_pointer(src)) % 16 != 0)
    throw ArgumentError("read_sum_cuda: needs an evaluated, row-contiguous, 16-byte aligned float32 buffer");
  read_kernel(stream.device.index); // compiled (or its error thrown) before the graph is made
  const int blocks = static_cast<int>(BLOCKS_PER_SM) * multiprocessors(stream.device.index);
  return mx::array({blocks}, mx::float32, std::make_shared<ReadSumCuda>(stream, passes), {src});
}
