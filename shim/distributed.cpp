// MLX's distributed layer: a process group (ring over TCP on CPUs, NCCL on CUDA GPUs, as MLX's init
// picks from its environment: MLX_RANK + MLX_HOSTFILE for the ring) and the collectives a sharded
// forward needs. Collectives go through emit(), so recorded decode steps replay them.
#include <memory>

#include "internal.h"
#include "mlx/distributed/distributed.h"
#include "mlx/distributed/ops.h"

using namespace mlxb;
namespace dist = mx::distributed;

namespace {

using GroupRef = std::shared_ptr<dist::Group>;

const GroupRef& group_of(mlx_group g) {
  if (g == nullptr) throw ArgumentError("group argument is null");
  return *static_cast<GroupRef*>(g);
}

} // namespace

extern "C" {

int mlx_distributed_init(mlx_group* out, const char* backend, int strict) {
  return guard([&] {
    if (out == nullptr) throw ArgumentError("out-pointer is null");
    std::string bk = backend ? backend : "any";
    if (bk != "any" && !dist::is_available(bk)) throw ArgumentError("the distributed backend '" + bk + "' is not available in this MLX build");
    *out = new GroupRef(std::make_shared<dist::Group>(dist::init(strict != 0, bk)));
  });
}

int mlx_distributed_free(mlx_group g) {
  delete static_cast<GroupRef*>(g);
  return 0;
}

int mlx_distributed_rank(int* out, mlx_group g) {
  return guard([&] { *out = group_of(g)->rank(); });
}

int mlx_distributed_size(int* out, mlx_group g) {
  return guard([&] { *out = group_of(g)->size(); });
}

int mlx_distributed_all_sum(mlx_array* out, mlx_array x, mlx_group g) {
  return guard([&] {
    arr(x, "x");
    GroupRef group = group_of(g);
    emit1(out, {x}, [group](const Arrays& a) { return dist::all_sum(a[0], *group); });
  });
}

int mlx_distributed_all_gather(mlx_array* out, mlx_array x, mlx_group g) {
  return guard([&] {
    arr(x, "x");
    GroupRef group = group_of(g);
    emit1(out, {x}, [group](const Arrays& a) { return dist::all_gather(a[0], *group); });
  });
}

} // extern "C"
