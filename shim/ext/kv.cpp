// The KV cache as an object of the shim: per layer, key and value buffers [B, H, S, D] and the number
// of positions written. Attention updates it through update_fetch / attention, whose recorded steps
// read the offset when they run, so a replayed step writes where the cache stands then.
#include <memory>

#include "internal.h"
#include "kv.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

struct KVCache {
  std::vector<mx::array> keys, values;
  int batch, heads, max_length, head_dim;
  int offset = 0;
  // Rotating (mlx-lm's RotatingKVCache): >= 0 once set: when full, position p goes to slot
  // keep + (p - max_length) % (max_length - keep), so the first `keep` positions and the latest
  // ones stay; the offset keeps counting positions.
  int keep = -1;
  // Quantized (mlx-lm's QuantizedKVCache) when bits > 0: per layer the keys and values stored as
  // mx::quantize's (packed, scales, biases) over head_dim in groups of `group`; the dense buffers
  // are gone.
  int bits = 0, group = 64;
  std::vector<std::vector<mx::array>> qkeys, qvalues;
  // Per layer, what decides whether a write may go into the buffers in place (see write_cache):
  // the end of the positions handed out as views of the current buffers, and whether the buffers
  // themselves were handed out (mlx_kv_cache_layer).
  std::vector<int> viewed;
  std::vector<bool> handed_out;
};
using CacheRef = std::shared_ptr<KVCache>;

CacheRef& cache_of(mlx_kv_cache c) {
  if (c == nullptr) throw ArgumentError("cache argument is null");
  return *static_cast<CacheRef*>(c);
}

int layer_index(const KVCache& c, int layer) {
  if (layer < 0 || layer >= static_cast<int>(c.keys.size())) {
    throw ArgumentError("layer " + std::to_string(layer) + " out of range for a cache of " + std::to_string(c.keys.size()) + " layers");
  }
  return layer;
}

// Quantizes k, v [B, H, T, D] into the layer's buffers at the offset; returns the keys and values
// [0, offset + T) as stored (dequantized), except for the first write (the prompt), which attends at
// full precision as mlx-lm's prefill does before its cache is quantized.
// Quantizes x [B, H, T, D] into the buffers (packed, scales, biases) at the cache's offset; returns
// the stored [0, offset + T) of each.
std::vector<mx::array> store_quantized(KVCache& c, std::vector<mx::array>& buffers, const mx::array& x) {
  if (x.ndim() != 4) throw ArgumentError("k and v must be [B, H, T, D]");
  int end = c.offset + x.shape(2);
  if (end > c.max_length) throw ArgumentError("KV cache of length " + std::to_string(c.max_length) + " cannot hold " + std::to_string(end) + " positions");
  auto parts = mx::quantize(x, c.group, c.bits, "affine");
  std::vector<mx::array> fetched;
  for (size_t i = 0; i < buffers.size(); i++) {
    auto& b = buffers[i];
    mx::Shape start{0, 0, c.offset, 0}, stop{b.shape(0), b.shape(1), end, b.shape(3)};
    b = mx::slice_update(b, parts.at(i), start, stop);
    fetched.push_back(mx::slice(b, {0, 0, 0, 0}, stop));
  }
  return fetched;
}

Updated write_quantized(KVCache& c, int l, const mx::array& k, const mx::array& v) {
  bool prompt = c.offset == 0;
  auto dequantized = [&](const std::vector<mx::array>& q, const mx::array& like) {
    return mx::dequantize(q[0], q[1], q[2], c.group, c.bits, "affine", std::nullopt, like.dtype());
  };
  auto keys = dequantized(store_quantized(c, c.qkeys[l], k), k);
  auto values = dequantized(store_quantized(c, c.qvalues[l], v), v);
  if (prompt) return {k, v, k, v};
  return {keys, values, keys, values};
}

// mlx-lm's quantized_scaled_dot_product_attention for one query position: q [B, Hq, 1, D] over
// quantized keys and values [B, H, S, .] (GQA when Hq > H), with quantized matmuls.
mx::array quantized_attention(const mx::array& q, const std::vector<mx::array>& k, const std::vector<mx::array>& v, float scale, int group, int bits) {
  int batch = q.shape(0), heads = q.shape(1), length = q.shape(2), dim = q.shape(3), kv_heads = k[0].shape(1);
  int repeats = heads / kv_heads;
  auto queries = mx::multiply(q, mx::array(scale, q.dtype()));
  std::vector<mx::array> keys = k, values = v;
  if (repeats > 1) {
    queries = mx::reshape(queries, {batch, kv_heads, repeats, length, dim});
    for (auto& x : keys) x = mx::expand_dims(x, -3);
    for (auto& x : values) x = mx::expand_dims(x, -3);
  }
  auto scores = mx::quantized_matmul(queries, keys[0], keys[1], keys[2], true, group, bits, "affine");
  scores = mx::softmax(scores, std::vector<int>{-1}, true);
  auto out = mx::quantized_matmul(scores, values[0], values[1], values[2], false, group, bits, "affine");
  return repeats > 1 ? mx::reshape(out, {batch, heads, length, dim}) : out;
}

// Where a write of `length` positions goes in layer l: at the cache's offset, or for a full rotating
// cache (one position at a time) at the slot the position rotates to, whose keys and values attended
// are then every slot (`all`). In place when what it overwrites cannot be read with the old values:
// the buffers were not handed out whole, and it writes at or past the end of every view of them
// handed out (positions only grow, except after a seek back: speculative decoding, the replay's
// check, a prompt cache). `end`: where the views of the buffers end after the write.
struct Slot {
  int at;
  bool in_place, all;
  int end;
};
Slot slot_of(const KVCache& c, int l, int length) {
  if (c.keep < 0 || c.offset + length <= c.max_length) {
    return {c.offset, !c.handed_out[l] && c.offset >= c.viewed[l], false, c.offset + length};
  }
  if (length != 1) {
    throw ArgumentError("a rotating KV cache of " + std::to_string(c.max_length) + " positions at offset " + std::to_string(c.offset) +
                        " takes one position at a time once full, got " + std::to_string(length));
  }
  int at = c.keep + (c.offset - c.max_length) % (c.max_length - c.keep);
  return {at, !c.handed_out[l] && at >= c.viewed[l], true, c.max_length};
}

// The layer's state after a write at `s` (in place where it allows).
void written(KVCache& c, int l, const Slot& s) {
  c.viewed[l] = s.in_place ? std::max(c.viewed[l], s.end) : s.end;
  c.handed_out[l] = false;
}

// write_kv() where slot_of() says, in place when it allows; the keys and values returned are the
// positions written so far (every slot for a full rotating cache). A quantized cache:
// write_quantized(). Else MLX's ops write it (the buffers copied unless MLX finds them donatable).
Updated write_cache(KVCache& c, int l, const mx::array& k, const mx::array& v) {
  if (c.bits > 0) return write_quantized(c, l, k, v);
  const Slot s = slot_of(c, l, k.ndim() == 4 ? k.shape(2) : 0);
  auto u = write_kv(c.keys[l], c.values[l], k, v, s.at, s.in_place);
  written(c, l, s);
  if (s.all) return {u.keys_all, u.values_all, u.keys_all, u.values_all};
  return u;
}

#ifdef MLXB_CUDA
// A decode step's write and attention as one node of ours (the write inside the attention kernel:
// attention_cuda.cpp) where the write goes in place into a dense cache and the kernel fits; else
// nullopt (write_cache and the attention then run as before).
// The write's slots at the steps a captured step is launched again (step graphs): where the layer's
// next write goes, as long as it goes in place into the buffers the step captured.
class LayerSlots : public CacheSlots {
 public:
  LayerSlots(CacheRef cache, int l) : cache_(std::move(cache)), l_(l), keys_(cache_->keys[l].data_shared_ptr()), values_(cache_->values[l].data_shared_ptr()) {}

  std::optional<std::pair<int, int>> next() const override {
    const KVCache& c = *cache_;
    if (c.bits > 0 || c.keys[l_].data_shared_ptr() != keys_ || c.values[l_].data_shared_ptr() != values_) return std::nullopt;
    const Slot s = slot_of(c, l_, 1);
    if (!s.in_place) return std::nullopt;
    return std::make_pair(s.at, s.all ? c.max_length : c.offset + 1);
  }

  void taken() override { written(*cache_, l_, slot_of(*cache_, l_, 1)); }

 private:
  CacheRef cache_;
  int l_;
  std::shared_ptr<mx::array::Data> keys_, values_; // the buffers written in place
};

std::optional<mx::array> write_attend_cuda(const CacheRef& cache, int l, const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                                           const std::optional<mx::array>& key_mask) {
  KVCache& c = *cache;
  if (c.bits > 0 || q.ndim() != 4 || q.shape(2) != 1 || k.ndim() != 4 || k.shape(2) != 1) return std::nullopt;
  const Slot s = slot_of(c, l, 1);
  if (!s.in_place) return std::nullopt;
  std::shared_ptr<CacheSlots> slots;
  if (step_capture_active()) slots = std::make_shared<LayerSlots>(cache, l);
  auto r = decode_attention_write_cuda(q, c.keys[l], c.values[l], k, v, s.at, s.all ? c.max_length : c.offset + 1, scale, key_mask, slots);
  if (!r) return std::nullopt;
  c.keys[l] = (*r)[1], c.values[l] = (*r)[2];
  written(c, l, s);
  if (slots) step_capture_cache_write();
  return (*r)[0];
}
#endif

// Causal attention of q [B, Hq, T, D] over keys/values [B, H, offset + T, D] (GQA when Hq > H),
// honouring key_mask [B, >= offset + T] (nonzero = attend) when given.
mx::array attend(const mx::array& q, const Updated& u, int offset, float scale, const std::optional<mx::array>& key_mask) {
  int batch = u.keys.shape(0), end = u.keys.shape(2);
  if (!key_mask && q.shape(2) == 1) return attention(q, u.keys, u.values, scale, "", std::nullopt);
  if (!key_mask) {
    // Keys are exactly [0, offset + T): MLX's bottom-right-aligned causal mask is the right one.
    return attention(q, u.keys, u.values, scale, q.shape(2) > 1 ? "causal" : "", std::nullopt);
  }
  // Keys are [0, offset + T) again, so the causal part is bottom-right aligned.
  if (auto ours = attention_key_mask(q, u.keys, u.values, scale, *key_mask)) return *ours;
#ifdef MLXB_CUDA
  // A batch's decode step on a CUDA GPU: one node of ours (MLX's attention with an array mask is a
  // matmul, softmax and select, and the mask takes a few nodes more, per layer).
  if (q.shape(2) == 1)
    if (auto ours = decode_attention_cuda(q, u.keys, u.values, scale, key_mask)) return *ours;
#endif
  auto visible = mx::slice(*key_mask, {0, 0}, {batch, end});
  auto allowed = mx::reshape(mx::not_equal(visible, mx::array(0, visible.dtype())), {batch, 1, 1, end});
  int queries = q.shape(2);
  auto rows = mx::reshape(mx::add(mx::arange(queries), mx::array(offset)), {queries, 1});
  auto causal = mx::greater_equal(rows, mx::reshape(mx::arange(end), {1, end}));
  return attention(q, u.keys, u.values, scale, "", mx::logical_and(allowed, causal));
}

// One-query attention without a mask, as attend() makes it, remembering the node MLX's op made when
// that is one node over (q, keys, values): the GPU's fused attention, whose kernel is chosen by the
// query's and heads' shapes, not by the number of keys (MLX's supports_sdpa_vector; cuDNN is chosen
// when it runs). Later calls whose shapes differ only in that number build the node directly instead
// of calling the op (a replayed decode step's attention, one per layer). On the CPU the op makes
// several nodes; every call then goes to it.
class DecodeAttention {
 public:
  mx::array operator()(const mx::array& q, const Updated& u, float scale) {
    if (primitive_ && primitive_->device() == mx::default_device() && q.shape() == q_shape_ && q.dtype() == dtype_ && u.keys.dtype() == dtype_ &&
        u.values.dtype() == dtype_ && same_but_length(u.keys, key_shape_) && same_but_length(u.values, value_shape_)) {
      return mx::array(out_shape_, dtype_, primitive_, {q, u.keys, u.values});
    }
    auto out = attention(q, u.keys, u.values, scale, "", std::nullopt);
    primitive_.reset();
    const auto& in = out.inputs();
    if (out.has_primitive() && out.siblings().empty() && in.size() == 3 && in[0].id() == q.id() && in[1].id() == u.keys.id() && in[2].id() == u.values.id() &&
        u.keys.dtype() == q.dtype() && u.values.dtype() == q.dtype() && out.dtype() == q.dtype()) {
      primitive_ = out.primitive_ptr();
      q_shape_ = q.shape(), key_shape_ = u.keys.shape(), value_shape_ = u.values.shape(), out_shape_ = out.shape(), dtype_ = out.dtype();
    }
    return out;
  }

 private:
  static bool same_but_length(const mx::array& x, const mx::Shape& shape) {
    return x.ndim() == 4 && x.shape(0) == shape[0] && x.shape(1) == shape[1] && x.shape(3) == shape[3];
  }

  std::shared_ptr<mx::Primitive> primitive_;
  mx::Shape q_shape_, key_shape_, value_shape_, out_shape_;
  mx::Dtype dtype_ = mx::float32;
};

} // namespace

extern "C" {

int mlx_fast_kv_cache_attention(mlx_array* out, mlx_array* k_cache_out, mlx_array* v_cache_out, mlx_array q, mlx_array k, mlx_array v, mlx_array k_cache,
                                mlx_array v_cache, int offset, float scale, mlx_array key_mask) {
  return guard([&] {
    arr(q, "q"), arr(k, "k"), arr(v, "v"), arr(k_cache, "k_cache"), arr(v_cache, "v_cache");
    bool masked = key_mask != nullptr;
    std::vector<mlx_array> inputs{q, k, v, k_cache, v_cache};
    if (masked) inputs.push_back(key_mask);
    emit({out, k_cache_out, v_cache_out}, inputs, [=](const Arrays& a) {
      auto u = write_kv(a[3], a[4], a[1], a[2], offset);
      auto mask = masked ? std::optional<mx::array>(a[5]) : std::nullopt;
      return Arrays{attend(a[0], u, offset, scale, mask), u.keys_all, u.values_all};
    });
  });
}

int mlx_kv_cache_new(mlx_kv_cache* out, int layers, int batch, int heads, int max_length, int head_dim, int dtype) {
  return guard([&] {
    if (out == nullptr) throw ArgumentError("out-pointer is null");
    if (layers <= 0 || batch <= 0 || heads <= 0 || max_length <= 0 || head_dim <= 0) throw ArgumentError("cache dimensions must be positive");
    auto c = std::make_shared<KVCache>();
    c->batch = batch, c->heads = heads, c->max_length = max_length, c->head_dim = head_dim;
    auto dt = to_dtype(dtype);
    for (int l = 0; l < layers; l++) {
      c->keys.push_back(mx::zeros({batch, heads, max_length, head_dim}, dt));
      c->values.push_back(mx::zeros({batch, heads, max_length, head_dim}, dt));
    }
    c->viewed.assign(layers, 0);
    c->handed_out.assign(layers, false);
    *out = new CacheRef(std::move(c));
  });
}

int mlx_kv_cache_free(mlx_kv_cache c) {
  delete static_cast<CacheRef*>(c);
  return 0;
}

int mlx_kv_cache_offset(int* out, mlx_kv_cache c) {
  return guard([&] { *out = cache_of(c)->offset; });
}

int mlx_kv_cache_advance(mlx_kv_cache c, int positions) {
  return guard([&] {
    auto& cache = *cache_of(c);
    if (positions < 0 || (cache.keep < 0 && cache.offset + positions > cache.max_length)) {
      throw ArgumentError("advancing by " + std::to_string(positions) + " leaves the cache of length " + std::to_string(cache.max_length));
    }
    cache.offset += positions;
  });
}

int mlx_kv_cache_seek(mlx_kv_cache c, int offset) {
  return guard([&] {
    auto& cache = *cache_of(c);
    if (offset < 0 || offset > cache.max_length)
      throw ArgumentError("offset " + std::to_string(offset) + " out of range for a cache of length " + std::to_string(cache.max_length));
    cache.offset = offset;
  });
}

int mlx_kv_cache_rotate(mlx_kv_cache c, int keep) {
  return guard([&] {
    auto& cache = *cache_of(c);
    if (keep < 0 || keep >= cache.max_length)
      throw ArgumentError("keep " + std::to_string(keep) + " out of range [0, " + std::to_string(cache.max_length) + ")");
    cache.keep = keep;
  });
}

int mlx_kv_cache_quantize(mlx_kv_cache c, int bits, int group) {
  return guard([&] {
    auto& cache = *cache_of(c);
    if (bits != 4 && bits != 8) throw ArgumentError("bits must be 4 or 8, got " + std::to_string(bits));
    if (group <= 0 || cache.head_dim % group != 0)
      throw ArgumentError("group " + std::to_string(group) + " must divide head_dim " + std::to_string(cache.head_dim));
    if (cache.offset != 0) throw ArgumentError("a KV cache is quantized while empty");
    if (cache.keep >= 0) throw ArgumentError("a rotating KV cache cannot be quantized");
    cache.bits = bits, cache.group = group;
    auto dt = cache.keys.at(0).dtype();
    int packed = cache.head_dim * bits / 32, groups = cache.head_dim / group;
    cache.qkeys.clear(), cache.qvalues.clear();
    for (size_t l = 0; l < cache.keys.size(); l++) {
      for (auto* q : {&cache.qkeys, &cache.qvalues}) {
        q->push_back({mx::zeros({cache.batch, cache.heads, cache.max_length, packed}, mx::uint32),
                      mx::zeros({cache.batch, cache.heads, cache.max_length, groups}, dt),
                      mx::zeros({cache.batch, cache.heads, cache.max_length, groups}, dt)});
      }
      // The dense buffers are not used any more: keep empty placeholders.
      cache.keys[l] = mx::zeros({0}, dt);
      cache.values[l] = mx::zeros({0}, dt);
    }
  });
}

int mlx_kv_cache_layer(mlx_array* keys, mlx_array* values, mlx_kv_cache c, int layer) {
  return guard([&] {
    auto& cache = *cache_of(c);
    int l = layer_index(cache, layer);
    store(keys, cache.keys[l]);
    store(values, cache.values[l]);
    cache.handed_out[l] = true;
  });
}

int mlx_kv_cache_set(mlx_kv_cache c, const mlx_array* keys, const mlx_array* values, int layers, int offset) {
  return guard([&] {
    auto& cache = *cache_of(c);
    if (cache.keep >= 0 || cache.bits > 0) throw ArgumentError("a rotating or quantized cache keeps its buffers");
    if (layers != static_cast<int>(cache.keys.size()))
      throw ArgumentError("the cache has " + std::to_string(cache.keys.size()) + " layers, got " + std::to_string(layers));
    auto k = arrays_of(keys, layers), v = arrays_of(values, layers);
    const auto& first = k.at(0);
    if (first.ndim() != 4) throw ArgumentError("buffers must be [B, H, S, D]");
    auto dt = cache.keys.at(0).dtype();
    for (int l = 0; l < layers; l++) {
      for (const auto* x : {&k[l], &v[l]}) {
        if (x->shape() != first.shape() || x->dtype() != dt || x->shape(1) != cache.heads || x->shape(3) != cache.head_dim) {
          throw ArgumentError("layer " + std::to_string(l) + ": buffers must be [B, " + std::to_string(cache.heads) + ", S, " + std::to_string(cache.head_dim) +
                              "] of one shape in the cache's dtype");
        }
      }
    }
    if (offset < 0 || offset > first.shape(2))
      throw ArgumentError("offset " + std::to_string(offset) + " out of range for buffers of length " + std::to_string(first.shape(2)));
    cache.keys = std::move(k), cache.values = std::move(v);
    cache.batch = first.shape(0), cache.max_length = first.shape(2), cache.offset = offset;
    cache.viewed.assign(layers, offset);
    cache.handed_out.assign(layers, true);
  });
}

int mlx_kv_cache_update_fetch(mlx_array* keys, mlx_array* values, mlx_kv_cache c, int layer, mlx_array k, mlx_array v) {
  return guard([&] {
    arr(k, "k"), arr(v, "v");
    CacheRef cache = cache_of(c);
    int l = layer_index(*cache, layer);
    emit(
        {keys, values}, {k, v},
        [cache, l](const Arrays& a) {
          auto u = write_cache(*cache, l, a[0], a[1]);
          if (cache->bits == 0) cache->keys[l] = u.keys_all, cache->values[l] = u.values_all;
          return Arrays{u.keys, u.values};
        },
        /* pure */ false);
  });
}

int mlx_kv_cache_attention(mlx_array* out, mlx_kv_cache c, int layer, mlx_array q, mlx_array k, mlx_array v, float scale, mlx_array key_mask) {
  return guard([&] {
    arr(q, "q"), arr(k, "k"), arr(v, "v");
    CacheRef cache = cache_of(c);
    int l = layer_index(*cache, layer);
    bool masked = key_mask != nullptr;
    std::vector<mlx_array> inputs{q, k, v};
    if (masked) inputs.push_back(key_mask);
    auto decode = std::make_shared<DecodeAttention>();
    emit(
        {out}, inputs,
        [cache, l, scale, masked, decode](const Arrays& a) {
          // MLX's CUDA quantized matmul has no kernel for most attention shapes ("No implementation for
          // problem shape 1x20x64x8" on the H100), so on the GPU attention reads the dequantized cache.
          bool cpu = mx::default_device() == mx::Device::cpu;
          if (cache->bits > 0 && cache->offset > 0 && a[0].shape(2) == 1 && !masked && cpu) {
            // A decode step over a quantized cache: attention through quantized matmuls, as mlx-lm.
            auto keys = store_quantized(*cache, cache->qkeys[l], a[1]);
            auto values = store_quantized(*cache, cache->qvalues[l], a[2]);
            return Arrays{quantized_attention(a[0], keys, values, scale, cache->group, cache->bits)};
          }
          auto mask = masked ? std::optional<mx::array>(a[3]) : std::nullopt;
#ifdef MLXB_CUDA
          if (auto out = write_attend_cuda(cache, l, a[0], a[1], a[2], scale, mask)) return Arrays{*out};
#endif
          auto u = write_cache(*cache, l, a[1], a[2]);
          if (cache->bits == 0) cache->keys[l] = u.keys_all, cache->values[l] = u.values_all;
          if (!masked && a[0].shape(2) == 1) return Arrays{(*decode)(a[0], u, scale)};
          return Arrays{attend(a[0], u, cache->offset, scale, mask)};
        },
        /* pure */ false);
  });
}

} // extern "C"
