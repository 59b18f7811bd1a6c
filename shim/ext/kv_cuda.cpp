// The GPU half of the KV cache write (kv.cpp's CacheWrite): a strided copy of a 4-D array into a
// row-contiguous one at an element offset, as one kernel node on MLX's command encoder. The kernel is
// compiled by NVRTC on first use (cuda.h). CUDA build only.
#include <algorithm>

#include "cuda.h"

using namespace mlxb;

namespace {

// dst[at + sum c_k dst_strides[k]] = src[sum c_k src_strides[k]] for every index c of src's shape;
// strides in elements, `item` bytes per element (1, 2, 4 or 8).
constexpr const char* COPY_SOURCE = R"CUDA(
struct Copy4 {
  long long shape[4], src[4], dst[4];
  long long at, total;
};

template <typename T>
__device__ void copy_items(const T* src, T* dst, const Copy4& p) {
  const long long step = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.total; i += step) {
    long long rest = i, s = 0, d = p.at;
    for (int k = 3; k >= 0; k--) {
      long long c = rest % p.shape[k];
      rest /= p.shape[k];
      s += c * p.src[k];
      d += c * p.dst[k];
    }
    dst[d] = src[s];
  }
}

extern "C" __global__ void mlxb_copy4(const void* src, void* dst, Copy4 p, int item) {
  if (item == 2) copy_items((const unsigned short*)src, (unsigned short*)dst, p);
  else if (item == 4) copy_items((const unsigned int*)src, (unsigned int*)dst, p);
  else if (item == 8) copy_items((const unsigned long long*)src, (unsigned long long*)dst, p);
  else copy_items((const unsigned char*)src, (unsigned char*)dst, p);
}
)CUDA";

struct Copy4 {
  long long shape[4], src[4], dst[4];
  long long at, total;
};

} // namespace

void mlxb::strided_copy_cuda(const mx::Stream& stream, const mx::array& src, const mx::array& dst, int64_t at) {
  if (src.ndim() != 4 || dst.ndim() != 4) throw std::runtime_error("strided_copy_cuda: 4-D arrays only");
  if (src.size() == 0) return;
  auto& encoder = cu::get_command_encoder(stream);
  encoder.set_input_array(src);
  encoder.set_output_array(dst);
  void* s = device_pointer(src);
  void* d = device_pointer(dst);
  Copy4 p{};
  for (int k = 0; k < 4; k++) p.shape[k] = src.shape(k), p.src[k] = src.strides(k), p.dst[k] = dst.strides(k);
  p.at = at, p.total = static_cast<long long>(src.size());
  int item = static_cast<int>(src.itemsize());
  void* params[] = {&s, &d, &p, &item};
  const unsigned blocks = static_cast<unsigned>(std::min<long long>((p.total + 255) / 256, 65535));
  encoder.add_kernel_node_raw(kernel_once(stream.device.index, COPY_SOURCE, "mlxb_copy4.cu", "mlxb_copy4"), dim3{blocks, 1, 1}, dim3{256, 1, 1}, dim3{1, 1, 1},
                              0, params);
}
