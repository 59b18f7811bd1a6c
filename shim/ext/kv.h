// The KV cache's write of keys and values into a layer's buffers (kv_write.cpp), used by the cache
// object and the cache-attention op (kv.cpp).
#pragma once

#include "internal.h"

namespace mlxb {

// k, v [B, H, T, D] written at `offset` of the buffers; returns the updated buffers and the keys and
// values [0, offset + T).
struct Updated {
  mx::array keys_all, values_all, keys, values;
};

// in_place: a KVCacheWrite node (the caller vouches); else MLX's slice_update and slice ops (a new
// buffer unless MLX finds the old one donatable).
Updated write_kv(const mx::array& kc, const mx::array& vc, const mx::array& k, const mx::array& v, int offset, bool in_place = false);

} // namespace mlxb
