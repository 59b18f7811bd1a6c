// Core ops: argument conversion only.
#include "internal.h"

using namespace mlxb;

#define MLXB_BINARY(name, expr)                                   \
  int mlx_##name(mlx_array* out, mlx_array a_, mlx_array b_) {   \
    return guard([&] {                                            \
      const auto& a = arr(a_, "a");                               \
      const auto& b = arr(b_, "b");                               \
      put(out, expr);                                             \
    });                                                           \
  }

#define MLXB_UNARY(name, expr)                                    \
  int mlx_##name(mlx_array* out, mlx_array a_) {                 \
    return guard([&] {                                            \
      const auto& a = arr(a_, "a");                               \
      put(out, expr);                                             \
    });                                                           \
  }

extern "C" {

MLXB_BINARY(add, mx::add(a, b))
MLXB_BINARY(subtract, mx::subtract(a, b))
MLXB_BINARY(multiply, mx::multiply(a, b))
MLXB_BINARY(divide, mx::divide(a, b))
MLXB_BINARY(maximum, mx::maximum(a, b))
MLXB_BINARY(power, mx::power(a, b))
MLXB_BINARY(greater, mx::greater(a, b))
MLXB_BINARY(matmul, mx::matmul(a, b))

MLXB_UNARY(rsqrt, mx::rsqrt(a))
MLXB_UNARY(sqrt, mx::sqrt(a))
MLXB_UNARY(exp, mx::exp(a))
MLXB_UNARY(log, mx::log(a))
MLXB_UNARY(negative, mx::negative(a))
MLXB_UNARY(square, mx::square(a))
MLXB_UNARY(tanh, mx::tanh(a))
MLXB_UNARY(sigmoid, mx::sigmoid(a))
MLXB_UNARY(erf, mx::erf(a))
MLXB_UNARY(cos, mx::cos(a))
MLXB_UNARY(sin, mx::sin(a))
// mlx.nn.silu
MLXB_UNARY(silu, mx::multiply(a, mx::sigmoid(a)))

int mlx_gelu(mlx_array* out, mlx_array a_, int approximate) {
  return guard([&] {
    const auto& x = arr(a_, "a");
    auto dt = x.dtype();
    if (approximate) {
      // mlx.nn.gelu_approx: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
      auto inner = mx::multiply(mx::array(0.7978845608f, dt), mx::add(x, mx::multiply(mx::array(0.044715f, dt), mx::power(x, mx::array(3.0f, dt)))));
      put(out, mx::multiply(mx::multiply(mx::array(0.5f, dt), x), mx::add(mx::array(1.0f, dt), mx::tanh(inner))));
    } else {
      // mlx.nn.gelu: x * (1 + erf(x / sqrt(2))) / 2
      auto e = mx::erf(mx::divide(x, mx::array(1.4142135623730951f, dt)));
      put(out, mx::divide(mx::multiply(x, mx::add(mx::array(1.0f, dt), e)), mx::array(2.0f, dt)));
    }
  });
}

int mlx_where(mlx_array* out, mlx_array c_, mlx_array a_, mlx_array b_) {
  return guard([&] { put(out, mx::where(arr(c_, "condition"), arr(a_, "a"), arr(b_, "b"))); });
}

int mlx_addmm(mlx_array* out, mlx_array c_, mlx_array a_, mlx_array b_) {
  return guard([&] { put(out, mx::addmm(arr(c_, "c"), arr(a_, "a"), arr(b_, "b"))); });
}

int mlx_astype(mlx_array* out, mlx_array a_, int dtype) {
  return guard([&] { put(out, mx::astype(arr(a_, "a"), to_dtype(dtype))); });
}

int mlx_reshape(mlx_array* out, mlx_array a_, const int32_t* shape, int ndim) {
  return guard([&] { put(out, mx::reshape(arr(a_, "a"), shape_of(shape, ndim))); });
}

int mlx_transpose(mlx_array* out, mlx_array a_, const int32_t* axes, int naxes) {
  return guard([&] { put(out, mx::transpose(arr(a_, "a"), ints_of(axes, naxes))); });
}

int mlx_slice(mlx_array* out, mlx_array a_, const int32_t* start, const int32_t* stop, const int32_t* strides, int ndim) {
  return guard([&] {
    put(out, mx::slice(arr(a_, "a"), shape_of(start, ndim), shape_of(stop, ndim), shape_of(strides, ndim)));
  });
}

int mlx_slice_update(mlx_array* out, mlx_array src_, mlx_array update_, const int32_t* start, const int32_t* stop, const int32_t* strides, int ndim) {
  return guard([&] {
    put(out, mx::slice_update(arr(src_, "src"), arr(update_, "update"), shape_of(start, ndim), shape_of(stop, ndim), shape_of(strides, ndim)));
  });
}

int mlx_concatenate(mlx_array* out, const mlx_array* arrays, int count, int axis) {
  return guard([&] { put(out, mx::concatenate(arrays_of(arrays, count), axis)); });
}

int mlx_take(mlx_array* out, mlx_array a_, mlx_array indices_, int axis) {
  return guard([&] { put(out, mx::take(arr(a_, "a"), arr(indices_, "indices"), axis)); });
}

int mlx_repeat(mlx_array* out, mlx_array a_, int repeats, int axis) {
  return guard([&] { put(out, mx::repeat(arr(a_, "a"), repeats, axis)); });
}

int mlx_softmax(mlx_array* out, mlx_array a_, int axis, int precise) {
  return guard([&] { put(out, mx::softmax(arr(a_, "a"), std::vector<int>{axis}, precise != 0)); });
}

int mlx_mean(mlx_array* out, mlx_array a_, const int32_t* axes, int naxes, int keepdims) {
  return guard([&] { put(out, mx::mean(arr(a_, "a"), ints_of(axes, naxes), keepdims != 0)); });
}

int mlx_sum(mlx_array* out, mlx_array a_, const int32_t* axes, int naxes, int keepdims) {
  return guard([&] { put(out, mx::sum(arr(a_, "a"), ints_of(axes, naxes), keepdims != 0)); });
}

int mlx_max(mlx_array* out, mlx_array a_, const int32_t* axes, int naxes, int keepdims) {
  return guard([&] { put(out, mx::max(arr(a_, "a"), ints_of(axes, naxes), keepdims != 0)); });
}

int mlx_argmax(mlx_array* out, mlx_array a_, int axis, int keepdims) {
  return guard([&] { put(out, mx::argmax(arr(a_, "a"), axis, keepdims != 0)); });
}

int mlx_arange(mlx_array* out, double start, double stop, double step, int dtype) {
  return guard([&] { put(out, mx::arange(start, stop, step, to_dtype(dtype))); });
}

int mlx_zeros(mlx_array* out, const int32_t* shape, int ndim, int dtype) {
  return guard([&] {
    put(out, mx::zeros(dims_of(shape, ndim), to_dtype(dtype)));
  });
}

} // extern "C"
