// Keys and values written into a layer's KV buffers: in place as one primitive of ours (CacheWrite),
// or by MLX's slice_update and slice ops (write_kv, kv.h).
#include <cstring>
#include <memory>

#include "kv.h"
#include "mlx/allocator.h"
#include "mlx/backend/common/utils.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

// dst's elements at + sum c_k dst.strides(k) = src's at index c, for every index c of src's shape
// (4-D; src of any strides, broadcast too). On the host, inside a CPU task.
void strided_copy_host(const mx::array& src, mx::array& dst, int64_t at) {
  const size_t item = src.itemsize();
  const auto* from = src.data<char>();
  auto* to = dst.data<char>();
  const bool rows = src.strides(3) == 1 && dst.strides(3) == 1; // whole rows of the last axis at once
  for (int a = 0; a < src.shape(0); a++) {
    for (int b = 0; b < src.shape(1); b++) {
      for (int c = 0; c < src.shape(2); c++) {
        const int64_t s = a * src.strides(0) + b * src.strides(1) + c * src.strides(2);
        const int64_t d = at + a * dst.strides(0) + b * dst.strides(1) + c * dst.strides(2);
        if (rows) {
          std::memcpy(to + d * item, from + s * item, src.shape(3) * item);
          continue;
        }
        for (int e = 0; e < src.shape(3); e++) std::memcpy(to + (d + e * dst.strides(3)) * item, from + (s + e * src.strides(3)) * item, item);
      }
    }
  }
}

// Keys and values written into a layer's buffers in place, as one MLX node: inputs (key buffer,
// value buffer [B, H, S, D], k, v [B, H, T, D] of the buffers' dtype), outputs (the updated buffers,
// which are the input buffers' memory, and their positions [0, offset + T) as views of it), what two
// slice_update and two slice ops make as four nodes. Its node is built directly (no op call), so the
// cache write of a replayed decode step costs one array construction. In place is the caller's
// promise (write_cache: nothing can read the positions written with their old values; the stream's
// order puts the reads of steps already queued first), not MLX's donation rule: the previous step,
// still running, holds the buffers it reads until it ends, so they would not be donatable. A buffer
// not yet laid out in full (never so in practice: the cache's zeros are materialized when evaluated)
// is copied first.
class CacheWrite : public mx::Primitive {
 public:
  CacheWrite(mx::Stream stream, int offset) : mx::Primitive(stream), offset_(offset) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    struct Copy {
      mx::array src, dst;
      int64_t at;
    };
    std::vector<Copy> copies;
    write(inputs, outputs, [&](const mx::array& src, mx::array& dst, int64_t at) {
      copies.push_back({mx::array::unsafe_weak_copy(src), mx::array::unsafe_weak_copy(dst), at});
    });
    mx::cpu::get_command_encoder(stream()).dispatch([copies = std::move(copies)]() mutable {
      for (auto& c : copies) strided_copy_host(c.src, c.dst, c.at);
    });
  }

  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
#ifdef MLXB_CUDA
    write(inputs, outputs, [&](const mx::array& src, mx::array& dst, int64_t at) { strided_copy_cuda(stream(), src, dst, at); });
#else
    (void)inputs, (void)outputs;
    throw std::runtime_error("KVCacheWrite: no GPU implementation in this build of the shim");
#endif
  }

  const char* name() const override { return "KVCacheWrite"; }
  bool is_equivalent(const mx::Primitive& other) const override { return offset_ == static_cast<const CacheWrite&>(other).offset_; }

 private:
  // Gives the outputs their memory (the buffers' own; fresh memory for a buffer not laid out in full)
  // and the views theirs; copy(src, dst, at) does each copy the write needs, in order.
  template <typename CopyFn>
  void write(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs, CopyFn&& copy) {
    for (int j = 0; j < 2; j++) {
      const auto &buffer = inputs[j], &update = inputs[2 + j];
      auto& all = outputs[j];
      if (buffer.flags().row_contiguous && buffer.size() == buffer.data_size()) {
        all.copy_shared_buffer(buffer);
      } else {
        all.set_data(mx::allocator::malloc(all.nbytes()));
        copy(buffer, all, 0);
      }
      copy(update, all, offset_ * all.strides(2));
      view(outputs[2 + j], all);
    }
  }

  // out: positions [0, out.shape(2)) of all (row-major), sharing its memory (as MLX's Slice).
  static void view(mx::array& out, const mx::array& all) {
    const auto& strides = all.strides();
    int64_t end = 1;
    for (int k = 0; k < 4; k++) {
      if (all.shape(k) > 1) end += (out.shape(k) - 1) * strides[k];
    }
    auto [size, row, col] = mx::check_contiguity(out.shape(), strides);
    auto flags = all.flags();
    flags.row_contiguous = row, flags.col_contiguous = col, flags.contiguous = size == static_cast<size_t>(end);
    out.copy_shared_buffer(all, strides, flags, static_cast<size_t>(end), 0);
  }

  int offset_;
};

} // namespace

// in_place: a KVCacheWrite node (the caller vouches); else MLX's slice_update and slice ops (a new
// buffer unless MLX finds the old one donatable).
Updated mlxb::write_kv(const mx::array& kc, const mx::array& vc, const mx::array& k, const mx::array& v, int offset, bool in_place) {
  if (k.ndim() != 4 || kc.ndim() != 4 || v.ndim() != 4 || vc.ndim() != 4) throw ArgumentError("k, v and the cache buffers must be [B, H, T, D]");
  int batch = k.shape(0), heads = k.shape(1), length = k.shape(2);
  for (const auto& [x, c, name] : {std::tuple{&k, &kc, "k"}, std::tuple{&v, &vc, "v"}}) {
    if (x->shape(0) != c->shape(0) || x->shape(1) != c->shape(1) || x->shape(3) != c->shape(3) || x->shape(2) != length) {
      throw ArgumentError(std::string(name) + " [" + std::to_string(x->shape(0)) + ", " + std::to_string(x->shape(1)) + ", " + std::to_string(x->shape(2)) +
                          ", " + std::to_string(x->shape(3)) + "] does not fit the cache");
    }
  }
  int end = offset + length;
  if (offset < 0 || end > kc.shape(2) || end > vc.shape(2)) {
    throw ArgumentError("KV cache of length " + std::to_string(kc.shape(2)) + " cannot hold " + std::to_string(end) + " positions");
  }
  if (!in_place) {
    mx::Shape start{0, 0, offset, 0}, stop{batch, heads, end, kc.shape(3)}, vstop{batch, heads, end, vc.shape(3)};
    auto keys_all = mx::slice_update(kc, k, start, stop);
    auto values_all = mx::slice_update(vc, v, start, vstop);
    return {keys_all, values_all, mx::slice(keys_all, {0, 0, 0, 0}, stop), mx::slice(values_all, {0, 0, 0, 0}, vstop)};
  }
  auto keys = k.dtype() == kc.dtype() ? k : mx::astype(k, kc.dtype());
  auto values = v.dtype() == vc.dtype() ? v : mx::astype(v, vc.dtype());
  auto stream = mx::default_stream(mx::default_device());
  auto out = mx::array::make_arrays({kc.shape(), vc.shape(), {batch, heads, end, kc.shape(3)}, {batch, heads, end, vc.shape(3)}},
                                    {kc.dtype(), vc.dtype(), kc.dtype(), vc.dtype()}, std::make_shared<CacheWrite>(stream, offset),
                                    {kc, vc, std::move(keys), std::move(values)});
  return {out[0], out[1], out[2], out[3]};
}
