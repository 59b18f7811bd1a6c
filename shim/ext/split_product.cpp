// SplitProduct: a product node's result as several arrays (views of the one buffer its primitive
// fills), one node where a split and reshapes would be several. Used by quantized_matmul_split
// (shim/quant.cpp) for the fused q, k and v projections.
#include "internal.h"
#include "mlx/backend/common/utils.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

/** A product node's result as several arrays: output i is the product's elements [offsets[i],
 * offsets[i] + its size) in its own shape, a view of the one buffer the product's primitive fills
 * (run as it would run alone). For a one-row product these are column ranges, so this is one node
 * where a split and reshapes would be several: the fused q, k and v projections in their heads'
 * shapes. */
class SplitProduct : public mx::Primitive {
 public:
  SplitProduct(mx::Stream stream, std::shared_ptr<mx::Primitive> product, mx::Shape shape, std::vector<int64_t> offsets)
      : mx::Primitive(stream), product_(std::move(product)), shape_(std::move(shape)), offsets_(std::move(offsets)) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override { run(inputs, outputs, false); }
  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override { run(inputs, outputs, true); }
  const char* name() const override { return "SplitProduct"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const SplitProduct&>(other);
    return product_->is_equivalent(*o.product_) && shape_ == o.shape_ && offsets_ == o.offsets_;
  }

 private:
  void run(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs, bool gpu) {
    std::vector<mx::array> product{mx::array(shape_, outputs[0].dtype(), nullptr, {})};
    if (gpu) {
      product_->eval_gpu(inputs, product);
    } else {
      product_->eval_cpu(inputs, product);
    }
    for (size_t i = 0; i < outputs.size(); i++) share_elements(product[0], outputs[i], offsets_[i]);
  }

  std::shared_ptr<mx::Primitive> product_;
  mx::Shape shape_;
  std::vector<int64_t> offsets_;
};

} // namespace

void mlxb::share_elements(const mx::array& product, mx::array& out, int64_t offset) {
  mx::Strides strides(out.ndim(), 1);
  for (int d = static_cast<int>(out.ndim()) - 2; d >= 0; d--) strides[d] = strides[d + 1] * out.shape(d + 1);
  auto [size, row, col] = mx::check_contiguity(out.shape(), strides);
  auto flags = product.flags();
  flags.row_contiguous = row, flags.col_contiguous = col, flags.contiguous = true;
  out.copy_shared_buffer(product, strides, flags, size, offset);
}

Arrays mlxb::split_product(const mx::array& product, const std::vector<mx::Shape>& shapes, std::vector<int64_t> offsets) {
  std::vector<mx::Dtype> dtypes(shapes.size(), product.dtype());
  auto primitive = std::make_shared<SplitProduct>(product.primitive().stream(), product.primitive_ptr(), product.shape(), std::move(offsets));
  return mx::array::make_arrays(shapes, dtypes, primitive, product.inputs());
}
