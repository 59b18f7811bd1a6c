// Helpers shared by the shim's translation units: handle conversion and the exception fence.
#pragma once

#include <string>
#include <vector>

#include "mlx/mlx.h"
#include "mlxb.h"

namespace mlxb {

namespace mx = mlx::core;

void set_error(const std::string& message);

// MLX C++ exceptions must never cross the C boundary: every entry point runs inside this.
template <typename F>
int guard(F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown C++ exception");
  }
  return 1;
}

struct ArgumentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

inline const mx::array& arr(mlx_array h, const char* name) {
  if (h == nullptr) throw ArgumentError(std::string("array argument '") + name + "' is null");
  return *static_cast<mx::array*>(h);
}

inline std::optional<mx::array> optional_arr(mlx_array h) {
  if (h == nullptr) return std::nullopt;
  return *static_cast<mx::array*>(h);
}

inline int put(mlx_array* out, mx::array value) {
  if (out == nullptr) throw ArgumentError("out-pointer is null");
  *out = new mx::array(std::move(value));
  return 0;
}

mx::Dtype to_dtype(int dtype);
int from_dtype(mx::Dtype dtype);

inline mx::Shape shape_of(const int32_t* values, int n) {
  if (n < 0 || (n > 0 && values == nullptr)) throw ArgumentError("shape/axes pointer is null");
  return mx::Shape(values, values + n);
}

// The shape of a new array: no negative dimension.
inline mx::Shape dims_of(const int32_t* values, int n) {
  auto s = shape_of(values, n);
  for (auto d : s) {
    if (d < 0) throw ArgumentError("negative dimension in shape");
  }
  return s;
}

inline std::vector<mx::array> arrays_of(const mlx_array* handles, int count) {
  if (count < 0 || (count > 0 && handles == nullptr)) throw ArgumentError("arrays pointer is null");
  std::vector<mx::array> xs;
  xs.reserve(count);
  for (int i = 0; i < count; i++) xs.push_back(arr(handles[i], "arrays[i]"));
  return xs;
}

inline std::vector<int> ints_of(const int32_t* values, int n) {
  if (n < 0 || (n > 0 && values == nullptr)) throw ArgumentError("axes pointer is null");
  return std::vector<int>(values, values + n);
}

} // namespace mlxb
