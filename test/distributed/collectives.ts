// One rank of test/distributed.test.ts: prints its rank, size and the results of all_sum/all_gather
// as one JSON line.
import { Group, Tensor } from "../../src/index.ts";

const group = Group.init({ backend: "ring" });
using x = Tensor.from(
  Float32Array.from([1, 2, 3], (v) => v * (group.rank + 1)),
  [3],
);
using sum = group.allSum(x);
using gathered = group.allGather(x);
console.log(
  JSON.stringify({
    rank: group.rank,
    size: group.size,
    sum: Array.from(sum.toFloat32Array()),
    gathered: Array.from(gathered.toFloat32Array()),
  }),
);
group.dispose();
