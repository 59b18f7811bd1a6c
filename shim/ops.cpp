// Core ops: argument conversion only.
#include "internal.h"

using namespace mlxb;

#define MLXB_BINARY(name, expr)                                \
  int mlx_##name(mlx_array* out, mlx_array a_, mlx_array b_) { \
    return guard([&] {                                         \
      arr(a_, "a");                                            \
      arr(b_, "b");                                            \
      emit1(out, {a_, b_}, [](const Arrays& x) {               \
        const auto& a = x[0];                                  \
        const auto& b = x[1];                                  \
        return expr;                                           \
      });                                                      \
    });                                                        \
  }

#define MLXB_UNARY(name, expr)                   \
  int mlx_##name(mlx_array* out, mlx_array a_) { \
    return guard([&] {                           \
      arr(a_, "a");                              \
      emit1(out, {a_}, [](const Arrays& x) {     \
        const auto& a = x[0];                    \
        return expr;                             \
      });                                        \
    });                                          \
  }

namespace {

template <typename T>
void check_range(const mx::array& indices, int64_t size) {
  const T* values = indices.data<T>();
  for (size_t i = 0; i < indices.size(); i++) {
    auto v = static_cast<int64_t>(values[i]);
    if (v < -size || v >= size) {
      throw ArgumentError("index " + std::to_string(v) + " out of range for an axis of size " + std::to_string(size));
    }
  }
}

// Bounds of integer indices already on the host ([-size, size), numpy's); false when their values
// are not on the host (lazy, computed on the device) and so were not read.
bool check_indices(const mx::array& indices, int64_t size) {
  if (!mx::issubdtype(indices.dtype(), mx::integer)) throw ArgumentError("indices must be integers");
  if (indices.status() != mx::array::Status::available || !indices.flags().row_contiguous || indices.data<void>() == nullptr) return false;
  switch (indices.dtype().val()) {
    case mx::Dtype::Val::int8:
      check_range<int8_t>(indices, size);
      break;
    case mx::Dtype::Val::int16:
      check_range<int16_t>(indices, size);
      break;
    case mx::Dtype::Val::int32:
      check_range<int32_t>(indices, size);
      break;
    case mx::Dtype::Val::int64:
      check_range<int64_t>(indices, size);
      break;
    case mx::Dtype::Val::uint8:
      check_range<uint8_t>(indices, size);
      break;
    case mx::Dtype::Val::uint16:
      check_range<uint16_t>(indices, size);
      break;
    case mx::Dtype::Val::uint32:
      check_range<uint32_t>(indices, size);
      break;
    case mx::Dtype::Val::uint64:
      check_range<uint64_t>(indices, size);
      break;
    default:
      return false;
  }
  return true;
}

// Whether a gather or scatter clamps its indices on the device (JAX's default mode): MLX does not
// bound-check them, so indices the host could not check (lazy ones, or any while a tape records,
// since a replay feeds other values) are clipped into [-size, size - 1] unless the caller vouches
// that they are in range by construction (`in_range`: decode's own argmax and sampler indices).
bool clamps(const mx::array& indices, int64_t size, int in_range) {
  bool checked = check_indices(indices, size);
  return in_range == 0 && (recording != nullptr || !checked);
}

mx::array clamped(const mx::array& indices, int size) {
  bool is_signed = mx::issubdtype(indices.dtype(), mx::signedinteger);
  // 8- and 16-bit indices widen first, so that the bounds fit their type.
  auto i = indices.dtype().size() < 4 ? mx::astype(indices, is_signed ? mx::int32 : mx::uint32) : indices;
  return mx::clip(i, mx::array(is_signed ? -size : 0, i.dtype()), mx::array(size - 1, i.dtype()));
}

// axis in [-ndim, ndim), normalized.
int axis_of(int axis, const mx::array& a) {
  int ax = axis < 0 ? axis + static_cast<int>(a.ndim()) : axis;
  if (ax < 0 || ax >= static_cast<int>(a.ndim()))
    throw ArgumentError("axis " + std::to_string(axis) + " out of range for " + std::to_string(a.ndim()) + " dimensions");
  return ax;
}

// The operands of a gather or scatter along an axis: indices of a's rank, in range when on the host.
// Returns the axis's size when the indices must be clamped on the device, else 0.
int check_along(mlx_array a_, mlx_array indices_, int axis, int in_range) {
  const auto& a = arr(a_, "a");
  const auto& indices = arr(indices_, "indices");
  int ax = axis_of(axis, a);
  if (indices.ndim() != a.ndim()) throw ArgumentError("indices must have a's number of dimensions");
  if (a.shape(ax) == 0) throw ArgumentError("gather or scatter along an empty axis");
  return clamps(indices, a.shape(ax), in_range) ? a.shape(ax) : 0;
}

// The indices a gather or scatter uses: clamped into an axis of `size` when size > 0.
mx::array bounded(const mx::array& indices, int size) {
  return size > 0 ? clamped(indices, size) : indices;
}

} // namespace

extern "C" {

MLXB_BINARY(add, mx::add(a, b))
MLXB_BINARY(subtract, mx::subtract(a, b))
MLXB_BINARY(multiply, mx::multiply(a, b))
MLXB_BINARY(divide, mx::divide(a, b))
MLXB_BINARY(maximum, mx::maximum(a, b))
MLXB_BINARY(power, mx::power(a, b))
MLXB_BINARY(greater, mx::greater(a, b))
MLXB_BINARY(matmul, mx::matmul(a, b))
MLXB_BINARY(minimum, mx::minimum(a, b))
MLXB_BINARY(equal, mx::equal(a, b))
MLXB_BINARY(greater_equal, mx::greater_equal(a, b))
MLXB_BINARY(less_equal, mx::less_equal(a, b))
MLXB_BINARY(bitwise_xor, mx::bitwise_xor(a, b))
MLXB_BINARY(right_shift, mx::right_shift(a, b))

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

// GELU compiled into one primitive (elementwise, so shapeless: one trace serves every shape), as
// mlx.nn's compiled gelu and gelu_approx.
static mx::array gelu_of(const mx::array& x, bool approximate) {
  auto dt = x.dtype();
  if (approximate) {
    // mlx.nn.gelu_approx: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
    auto inner = mx::multiply(mx::array(0.7978845608f, dt), mx::add(x, mx::multiply(mx::array(0.044715f, dt), mx::power(x, mx::array(3.0f, dt)))));
    return mx::multiply(mx::multiply(mx::array(0.5f, dt), x), mx::add(mx::array(1.0f, dt), mx::tanh(inner)));
  }
  // mlx.nn.gelu: x * (1 + erf(x / sqrt(2))) / 2
  auto e = mx::erf(mx::divide(x, mx::array(1.4142135623730951f, dt)));
  return mx::divide(mx::multiply(x, mx::add(mx::array(1.0f, dt), e)), mx::array(2.0f, dt));
}

static const auto& compiled_gelu(bool approximate) {
  using Fn = std::function<std::vector<mx::array>(const std::vector<mx::array>&)>;
  static const Fn exact = mx::compile([](const std::vector<mx::array>& x) { return std::vector<mx::array>{gelu_of(x[0], false)}; }, /* shapeless */ true);
  static const Fn approx = mx::compile([](const std::vector<mx::array>& x) { return std::vector<mx::array>{gelu_of(x[0], true)}; }, /* shapeless */ true);
  return approximate ? approx : exact;
}

int mlx_gelu(mlx_array* out, mlx_array a_, int approximate) {
  return guard([&] {
    arr(a_, "a");
    emit1(out, {a_}, [approximate](const Arrays& in) { return compiled_gelu(approximate != 0)(in).at(0); });
  });
}

int mlx_where(mlx_array* out, mlx_array c_, mlx_array a_, mlx_array b_) {
  return guard([&] {
    arr(c_, "condition"), arr(a_, "a"), arr(b_, "b");
    emit1(out, {c_, a_, b_}, [](const Arrays& x) { return mx::where(x[0], x[1], x[2]); });
  });
}

int mlx_addmm(mlx_array* out, mlx_array c_, mlx_array a_, mlx_array b_) {
  return guard([&] {
    arr(c_, "c"), arr(a_, "a"), arr(b_, "b");
    emit1(out, {c_, a_, b_}, [](const Arrays& x) { return mx::addmm(x[0], x[1], x[2]); });
  });
}

int mlx_astype(mlx_array* out, mlx_array a_, int dtype) {
  return guard([&] {
    arr(a_, "a");
    auto dt = to_dtype(dtype);
    emit1(out, {a_}, [dt](const Arrays& x) { return mx::astype(x[0], dt); });
  });
}

int mlx_reshape(mlx_array* out, mlx_array a_, const int32_t* shape, int ndim) {
  return guard([&] {
    arr(a_, "a");
    auto s = shape_of(shape, ndim);
    emit1(out, {a_}, [s](const Arrays& x) { return mx::reshape(x[0], s); });
  });
}

int mlx_transpose(mlx_array* out, mlx_array a_, const int32_t* axes, int naxes) {
  return guard([&] {
    arr(a_, "a");
    auto ax = ints_of(axes, naxes);
    emit1(out, {a_}, [ax](const Arrays& x) { return mx::transpose(x[0], ax); });
  });
}

int mlx_slice(mlx_array* out, mlx_array a_, const int32_t* start, const int32_t* stop, const int32_t* strides, int ndim) {
  return guard([&] {
    arr(a_, "a");
    auto from = shape_of(start, ndim), to = shape_of(stop, ndim), step = shape_of(strides, ndim);
    emit1(out, {a_}, [from, to, step](const Arrays& x) { return mx::slice(x[0], from, to, step); });
  });
}

int mlx_contiguous(mlx_array* out, mlx_array a_) {
  return guard([&] {
    arr(a_, "a");
    emit1(out, {a_}, [](const Arrays& x) { return mx::contiguous(x[0]); });
  });
}

int mlx_slice_update(mlx_array* out, mlx_array src_, mlx_array update_, const int32_t* start, const int32_t* stop, const int32_t* strides, int ndim) {
  return guard([&] {
    arr(src_, "src"), arr(update_, "update");
    auto from = shape_of(start, ndim), to = shape_of(stop, ndim), step = shape_of(strides, ndim);
    emit1(out, {src_, update_}, [from, to, step](const Arrays& x) { return mx::slice_update(x[0], x[1], from, to, step); });
  });
}

int mlx_concatenate(mlx_array* out, const mlx_array* arrays, int count, int axis) {
  return guard([&] {
    arrays_of(arrays, count);
    emit1(out, std::vector<mlx_array>(arrays, arrays + count), [axis](const Arrays& x) { return mx::concatenate(x, axis); });
  });
}

int mlx_split(mlx_array* outs, int count, mlx_array a_, const int32_t* indices, int axis) {
  return guard([&] {
    const auto& a = arr(a_, "a");
    if (outs == nullptr || count < 1) throw ArgumentError("split: out-pointers are null or fewer than one");
    int ax = axis < 0 ? axis + a.ndim() : axis;
    if (ax < 0 || ax >= static_cast<int>(a.ndim()))
      throw ArgumentError("axis " + std::to_string(axis) + " out of range for " + std::to_string(a.ndim()) + " dimensions");
    auto at = shape_of(indices, count - 1);
    for (int i = 0; i < count - 1; i++) {
      if (at[i] < (i == 0 ? 0 : at[i - 1]) || at[i] > a.shape(ax)) throw ArgumentError("split indices must be ascending within the axis");
    }
    std::vector<mlx_array*> outputs;
    for (int i = 0; i < count; i++) outputs.push_back(&outs[i]);
    emit(outputs, {a_}, [at, ax](const Arrays& x) { return mx::split(x[0], at, ax); });
  });
}

int mlx_take(mlx_array* out, mlx_array a_, mlx_array indices_, int axis, int in_range) {
  return guard([&] {
    const auto& a = arr(a_, "a");
    const auto& indices = arr(indices_, "indices");
    if (a.ndim() == 0) throw ArgumentError("take from a scalar");
    int ax = axis_of(axis, a);
    if (a.shape(ax) == 0) throw ArgumentError("take from an empty axis");
    // MLX does not bound-check gathers (an index past the end reads or faults anywhere): indices
    // whose values are on the host already (made from host data, or evaluated) are checked here,
    // the others clamped on the device.
    int size = clamps(indices, a.shape(ax), in_range) ? a.shape(ax) : 0;
    emit1(out, {a_, indices_}, [axis, size](const Arrays& x) { return mx::take(x[0], bounded(x[1], size), axis); });
  });
}

int mlx_repeat(mlx_array* out, mlx_array a_, int repeats, int axis) {
  return guard([&] {
    arr(a_, "a");
    emit1(out, {a_}, [repeats, axis](const Arrays& x) { return mx::repeat(x[0], repeats, axis); });
  });
}

int mlx_softmax(mlx_array* out, mlx_array a_, int axis, int precise) {
  return guard([&] {
    arr(a_, "a");
    emit1(out, {a_}, [axis, precise](const Arrays& x) { return mx::softmax(x[0], std::vector<int>{axis}, precise != 0); });
  });
}

int mlx_mean(mlx_array* out, mlx_array a_, const int32_t* axes, int naxes, int keepdims) {
  return guard([&] {
    arr(a_, "a");
    auto ax = ints_of(axes, naxes);
    emit1(out, {a_}, [ax, keepdims](const Arrays& x) { return mx::mean(x[0], ax, keepdims != 0); });
  });
}

int mlx_sum(mlx_array* out, mlx_array a_, const int32_t* axes, int naxes, int keepdims) {
  return guard([&] {
    arr(a_, "a");
    auto ax = ints_of(axes, naxes);
    emit1(out, {a_}, [ax, keepdims](const Arrays& x) { return mx::sum(x[0], ax, keepdims != 0); });
  });
}

int mlx_max(mlx_array* out, mlx_array a_, const int32_t* axes, int naxes, int keepdims) {
  return guard([&] {
    arr(a_, "a");
    auto ax = ints_of(axes, naxes);
    emit1(out, {a_}, [ax, keepdims](const Arrays& x) { return mx::max(x[0], ax, keepdims != 0); });
  });
}

int mlx_argmax(mlx_array* out, mlx_array a_, int axis, int keepdims) {
  return guard([&] {
    arr(a_, "a");
    emit1(out, {a_}, [axis, keepdims](const Arrays& x) { return mx::argmax(x[0], axis, keepdims != 0); });
  });
}

int mlx_sort(mlx_array* out, mlx_array a_, int axis) {
  return guard([&] {
    const auto& a = arr(a_, "a");
    axis_of(axis, a);
    emit1(out, {a_}, [axis](const Arrays& x) { return mx::sort(x[0], axis); });
  });
}

int mlx_argsort(mlx_array* out, mlx_array a_, int axis) {
  return guard([&] {
    const auto& a = arr(a_, "a");
    axis_of(axis, a);
    emit1(out, {a_}, [axis](const Arrays& x) { return mx::argsort(x[0], axis); });
  });
}

int mlx_argpartition(mlx_array* out, mlx_array a_, int kth, int axis) {
  return guard([&] {
    const auto& a = arr(a_, "a");
    int ax = axis_of(axis, a);
    if (kth < 0 || kth >= a.shape(ax)) throw ArgumentError("kth " + std::to_string(kth) + " out of range for an axis of size " + std::to_string(a.shape(ax)));
    emit1(out, {a_}, [kth, axis](const Arrays& x) { return mx::argpartition(x[0], kth, axis); });
  });
}

int mlx_put_along_axis(mlx_array* out, mlx_array a_, mlx_array indices_, mlx_array values_, int axis, int in_range) {
  return guard([&] {
    int size = check_along(a_, indices_, axis, in_range);
    arr(values_, "values");
    emit1(out, {a_, indices_, values_}, [axis, size](const Arrays& x) { return mx::put_along_axis(x[0], bounded(x[1], size), x[2], axis); });
  });
}

int mlx_take_along_axis(mlx_array* out, mlx_array a_, mlx_array indices_, int axis, int in_range) {
  return guard([&] {
    int size = check_along(a_, indices_, axis, in_range);
    emit1(out, {a_, indices_}, [axis, size](const Arrays& x) { return mx::take_along_axis(x[0], bounded(x[1], size), axis); });
  });
}

int mlx_scatter_add_axis(mlx_array* out, mlx_array a_, mlx_array indices_, mlx_array values_, int axis, int in_range) {
  return guard([&] {
    int size = check_along(a_, indices_, axis, in_range);
    arr(values_, "values");
    emit1(out, {a_, indices_, values_}, [axis, size](const Arrays& x) { return mx::scatter_add_axis(x[0], bounded(x[1], size), x[2], axis); });
  });
}

int mlx_cumsum(mlx_array* out, mlx_array a_, int axis, int reverse, int inclusive) {
  return guard([&] {
    const auto& a = arr(a_, "a");
    axis_of(axis, a);
    emit1(out, {a_}, [axis, reverse, inclusive](const Arrays& x) { return mx::cumsum(x[0], axis, reverse != 0, inclusive != 0); });
  });
}

int mlx_logsumexp(mlx_array* out, mlx_array a_, const int32_t* axes, int naxes, int keepdims) {
  return guard([&] {
    arr(a_, "a");
    auto ax = ints_of(axes, naxes);
    emit1(out, {a_}, [ax, keepdims](const Arrays& x) { return mx::logsumexp(x[0], ax, keepdims != 0); });
  });
}

int mlx_arange(mlx_array* out, double start, double stop, double step, int dtype) {
  return guard([&] { put(out, mx::arange(start, stop, step, to_dtype(dtype))); });
}

int mlx_zeros(mlx_array* out, const int32_t* shape, int ndim, int dtype) {
  return guard([&] { put(out, mx::zeros(dims_of(shape, ndim), to_dtype(dtype))); });
}

} // extern "C"
