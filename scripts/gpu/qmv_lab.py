"""Times variants of the matvec kernel (shim/ext/qmv_cuda_source.h) alone, outside MLX: each compiled
with NVRTC as the shim compiles it, launched through the CUDA driver on PyTorch's stream in a chain of
CUDA-graph-captured launches over distinct weights (LAYERS copies, so that L2 does not hold them: a
decode step's order), the chain replayed and timed by CUDA events. No host time per kernel: µs a
call is the GPU's, as CUPTI would give it in a graph (plus the graph's launch gaps, ~1 µs a node).

usage (on the GPU machine, its PyTorch; no payload): python3 scripts/gpu/qmv_lab.py [SOURCE] CASE ...
  CASE: name:n:k:MACROS  e.g. o:4096:4096:R=16,U=1,WARPS=16,SPLIT=8,ONE_WAVE=1,ADD=1,NORM=1
  MMA=1, ROWS=1, GROUP=64, DTYPE=1 (bfloat16) unless given; PAIR=1 takes n as the gate's rows
  (the weight has 2n); QK_NORM_ROPE=1 runs mlxb_qmv_qk_norm_rope on heads of 128, 8 of them k's
  and 8 v's, the rest of n q's (Qwen3's q/k norm + rope after the product, rope base 1e6).
  SOURCE (default the shim's header) may be another copy of it (a branch's).
  EMPTY=1: a kernel that does nothing (its programmatic wait only) on n blocks of k threads: the
  floor a kernel of that grid costs in the chain (its launch, its blocks' start and end).
Prints µs a call and the read rate (weights, scales and biases) for each case, and checks the last
layer's outputs against PyTorch's float32 of the same bfloat16 values (the product dequantized,
with its addend, swiglu, norm, tiles' sums of squares, q/k norm + rope and v's rows; NORM_IN's x
normed first): the largest difference in units of bfloat16's rounding of each value, MISMATCH past
4 (the kernel sums in another order and rounds in between as MLX does).
"""
import ctypes
import glob
import math
import os
import re
import sys

import torch

LAYERS = int(os.environ.get("LAB_LAYERS", "36"))
REPEATS = int(os.environ.get("LAB_REPEATS", "20"))
# Distinct weights (or KV caches) the LAYERS launches cycle through: fewer than LAYERS lets L2 hold
# them (LAB_DISTINCT=1: every launch reads weights L2 holds; what a product costs besides DRAM).
DISTINCT = max(1, min(LAYERS, int(os.environ.get("LAB_DISTINCT", str(LAYERS)))))
HERE = os.path.dirname(os.path.abspath(__file__))
EXT = os.path.join(HERE, "..", "..", "shim", "ext")


def nvrtc_library() -> ctypes.CDLL:
    site = os.path.dirname(os.path.dirname(torch.__file__))
    for pattern in [os.path.join(site, "nvidia", "cu13", "lib", "libnvrtc.so.13"), os.path.join(site, "nvidia", "*", "lib", "libnvrtc.so*")]:
        found = sorted(glob.glob(pattern))
        if found:
            return ctypes.CDLL(found[0])
    return ctypes.CDLL("libnvrtc.so.13")


NVRTC = nvrtc_library()
CU = ctypes.CDLL("libcuda.so.1")


def check(result: int, what: str) -> None:
    if result != 0:
        raise RuntimeError(f"{what} failed: {result}")


def raw(path: str, name: str | None = None) -> str:
    text = open(path).read()
    if name:
        return re.search(name + r' = R"CUDA\((.*?)\)CUDA"', text, re.S)[1]
    return re.findall(r'R"CUDA\((.*?)\)CUDA"', text, re.S)[0]


def compile_kernel(source: str, name: str) -> ctypes.c_void_p:
    program = ctypes.c_void_p()
    check(NVRTC.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"lab.cu", 0, None, None), "nvrtcCreateProgram")
    flags = [b"-arch=sm_90", b"-default-device"]
    result = NVRTC.nvrtcCompileProgram(program, len(flags), (ctypes.c_char_p * len(flags))(*flags))
    if result != 0:
        size = ctypes.c_size_t()
        NVRTC.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetProgramLog(program, log)
        raise RuntimeError(log.value.decode())
    size = ctypes.c_size_t()
    NVRTC.nvrtcGetCUBINSize(program, ctypes.byref(size))
    cubin = ctypes.create_string_buffer(size.value)
    NVRTC.nvrtcGetCUBIN(program, cubin)
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    check(CU.cuModuleLoadData(ctypes.byref(module), cubin), "cuModuleLoadData")
    check(CU.cuModuleGetFunction(ctypes.byref(function), module, name.encode()), "cuModuleGetFunction")
    return function


def launch_kernel(function: ctypes.c_void_p, grid: tuple, threads: int, shared: int, values: list, keep: list) -> None:
    """Launches function on PyTorch's current stream (a graph's capture stream inside one) with the
    kernel's arguments as ctypes values (kept alive in keep)."""
    params = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
    keep.append((values, params))
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    check(CU.cuLaunchKernel(function, *grid, threads, 1, 1, shared, stream, params, None), "cuLaunchKernel")


def time_layers(launch) -> float:
    """µs a launch: launch(layer) for LAYERS layers captured in a CUDA graph, the best of REPEATS replays."""
    for layer in range(LAYERS):
        launch(layer)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for layer in range(LAYERS):
            launch(layer)
    torch.cuda.synchronize()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(REPEATS):
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) * 1000 / LAYERS)
    del graph
    return best


def macros_of(text: str, defaults: dict) -> dict:
    """A case's macros (KEY=VALUE, comma-separated) over the defaults."""
    m = dict(defaults)
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        m[key] = value
    return m


def run_cases(run, cases: list) -> int:
    """run(case) for each case; one that does not compile or launch is said, and the others go on."""
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    for case in cases:
        try:
            run(case)
        except Exception as error:
            print(f"{case}: {str(error).strip()[:300]}", flush=True)
    return 0


class RopeParams(ctypes.Structure):
    _fields_ = [("freq_stride", ctypes.c_longlong), ("dims", ctypes.c_int), ("traditional", ctypes.c_int), ("has_freqs", ctypes.c_int),
                ("scale", ctypes.c_float), ("log2_base", ctypes.c_float)]


class QkParams(ctypes.Structure):
    _fields_ = [("rope", RopeParams), ("q_heads", ctypes.c_int), ("k_heads", ctypes.c_int), ("head_dim", ctypes.c_int), ("eps", ctypes.c_float)]


EMPTY_SOURCE = 'extern "C" __global__ void mlxb_empty() { WAIT_FOR_UPSTREAM(); LAUNCH_DOWNSTREAM(); }'


def run_case(source_path: str, case: str) -> None:
    label, n, k, macros = case.split(":")
    n, k = int(n), int(k)
    if macros_of(macros, {}).get("EMPTY") == "1":
        function = compile_kernel(raw(os.path.join(EXT, "cuda.h"), "DEPENDENT_LAUNCH_SOURCE") + EMPTY_SOURCE, "mlxb_empty")
        keep: list = []
        best = time_layers(lambda layer: launch_kernel(function, (n, 1, 1), k, 0, [], keep))
        print(f"{label:<24} grid {n:>5} x {k:>4}  {best:7.2f} µs  [{macros}]", flush=True)
        return
    m = macros_of(macros, {"MMA": "1", "ROWS": "1", "GROUP": "64", "DTYPE": "1", "R": "16", "U": "1", "WARPS": "16", "SPLIT": "8"})
    defines = "".join(f"#define {key} {value}\n" for key, value in m.items())
    qk = m.get("QK_NORM_ROPE") == "1"
    # The q/k/v kernel's source as the shim's: cuda.h's dtype source and norm_rope_row.h's row first.
    rows_source = raw(os.path.join(EXT, "cuda.h")) + raw(os.path.join(EXT, "norm_rope_row.h")) if qk else ""
    source = raw(os.path.join(EXT, "cuda.h"), "DEPENDENT_LAUNCH_SOURCE") + defines + rows_source + raw(source_path)
    function = compile_kernel(source, "mlxb_qmv_qk_norm_rope" if qk else "mlxb_qmv")
    pair, add, norm = m.get("PAIR") == "1", m.get("ADD") == "1", m.get("NORM") == "1"
    parts_out, norm_in, grid_norm = m.get("PARTS") == "1", m.get("NORM_IN") == "1", m.get("GRID_NORM") == "1"
    norm = norm or grid_norm  # GRID_NORM writes the norm too (its counters and a float a block besides)
    group = int(m["GROUP"])
    rows_w = 2 * n if pair else n
    dev = torch.device("cuda")
    ws = [torch.randint(-(2**31), 2**31 - 1, (rows_w, k // 8), dtype=torch.int32, device=dev) for _ in range(DISTINCT)]
    ss = [(torch.rand(rows_w, k // group, device=dev) * 0.01).to(torch.bfloat16) for _ in range(DISTINCT)]
    bs = [(torch.rand(rows_w, k // group, device=dev) * 0.01 - 0.005).to(torch.bfloat16) for _ in range(DISTINCT)]
    x = torch.randn(1, k, device=dev).to(torch.bfloat16)
    out = torch.zeros(1, n, device=dev, dtype=torch.bfloat16)
    addend = torch.randn(1, n, device=dev).to(torch.bfloat16)
    norm_w = (1 + 0.5 * torch.randn(n, device=dev)).to(torch.bfloat16)
    normed = torch.zeros(1, n, device=dev, dtype=torch.bfloat16)
    counter = torch.zeros(4, device=dev, dtype=torch.int32)
    # NORM_IN's sums of squares (a producer's PARTS: one a 16-row tile of x's k), PARTS' output.
    part_count = (k + 15) // 16
    parts_in = torch.rand(part_count, device=dev, dtype=torch.float32) * 64
    in_norm_w = (1 + 0.5 * torch.randn(k, device=dev)).to(torch.bfloat16)
    parts = torch.zeros((n + 15) // 16, device=dev, dtype=torch.float32)
    head_dim, k_heads = 128, 8
    q_heads = n // head_dim - 2 * k_heads
    qk_w = (1 + 0.5 * torch.randn(head_dim, device=dev)).to(torch.bfloat16)
    position = torch.full((1,), 37, device=dev, dtype=torch.int32)
    q_out = torch.zeros(max(q_heads, 1) * head_dim, device=dev, dtype=torch.bfloat16)
    k_out = torch.zeros(k_heads * head_dim, device=dev, dtype=torch.bfloat16)
    head_counters = torch.zeros(q_heads + k_heads + 1, device=dev, dtype=torch.int32)
    qk_params = QkParams(RopeParams(0, head_dim, 0, 0, 1.0, math.log2(1e6)), max(q_heads, 0), k_heads, head_dim, 1e-6)
    # A warp's rows: 16 on the tensor cores, R in the float32 kernel (MMA=0); PAIR's outputs half that.
    rows_per_block = (16 if m["MMA"] == "1" else int(m["R"])) * int(m["WARPS"]) // int(m["SPLIT"]) // (2 if pair else 1)
    grid = (n + rows_per_block - 1) // rows_per_block
    threads = 32 * int(m["WARPS"])

    # Arguments as the shim passes them (qmv_cuda.cpp): x w scales biases addend out n k rows norm_w normed counter eps
    # parts_in part_count parts_out (for a source with the PARTS, NORM_IN and GRID_NORM forms; a kernel of fewer
    # parameters ignores the rest).
    keep = []

    def qk_values(layer: int) -> list:
        # x w scales biases out n k wq wk offset freqs q_out k_out counters p norm_w parts_in part_count norm_eps
        return [
            ctypes.c_void_p(x.data_ptr()),
            ctypes.c_void_p(ws[layer].data_ptr()),
            ctypes.c_void_p(ss[layer].data_ptr()),
            ctypes.c_void_p(bs[layer].data_ptr()),
            ctypes.c_void_p(out.data_ptr()),
            ctypes.c_int(n),
            ctypes.c_int(k),
            ctypes.c_void_p(qk_w.data_ptr()),
            ctypes.c_void_p(qk_w.data_ptr()),
            ctypes.c_void_p(position.data_ptr()),
            ctypes.c_void_p(0),
            ctypes.c_void_p(q_out.data_ptr()),
            ctypes.c_void_p(k_out.data_ptr()),
            ctypes.c_void_p(head_counters.data_ptr()),
            qk_params,
            ctypes.c_void_p(in_norm_w.data_ptr() if norm_in else 0),
            ctypes.c_void_p(parts_in.data_ptr() if norm_in else 0),
            ctypes.c_int(part_count if norm_in else 0),
            ctypes.c_float(1e-6),
        ]

    def launch(layer: int) -> None:
        layer %= DISTINCT
        values = qk_values(layer) if qk else [
            ctypes.c_void_p(x.data_ptr()),
            ctypes.c_void_p(ws[layer].data_ptr()),
            ctypes.c_void_p(ss[layer].data_ptr()),
            ctypes.c_void_p(bs[layer].data_ptr()),
            ctypes.c_void_p(addend.data_ptr() if add else 0),
            ctypes.c_void_p(out.data_ptr()),
            ctypes.c_int(n),
            ctypes.c_int(k),
            ctypes.c_int(1),
            ctypes.c_void_p(norm_w.data_ptr() if norm else in_norm_w.data_ptr() if norm_in else 0),
            ctypes.c_void_p(normed.data_ptr() if norm else 0),
            ctypes.c_void_p(counter.data_ptr() if norm else 0),
            ctypes.c_float(1e-6),
            ctypes.c_void_p(parts_in.data_ptr() if norm_in else 0),
            ctypes.c_int(part_count if norm_in else 0),
            ctypes.c_void_p(parts.data_ptr() if parts_out or grid_norm else 0),
        ]
        shared = k * 2 if norm_in else 0  # NORM_IN's x normed in dynamic shared memory
        launch_kernel(function, (grid, 1, 1), threads, shared, values, keep)

    best = time_layers(launch)
    read = rows_w * k // 2 + 2 * rows_w * (k // group) * 2
    # The last layer's outputs against float32 of the same values.
    xs = x.float()
    if norm_in:
        normalizer = torch.rsqrt(parts_in.sum() / k + 1e-6)
        xs = normed_as_mlx(xs, in_norm_w, normalizer)
    last = (LAYERS - 1) % DISTINCT  # the last launch's weights
    product = xs @ dequantized(ws[last], ss[last], bs[last], group).T
    worst = {}
    if pair:
        worst["out"] = ulps(out, swiglu(bf16(product[:, :n]), bf16(product[:, n:])))
    elif qk:
        # The v rows of out (its q and k rows are the kernel's own), q and k normed and rotated.
        qk_rows = (q_heads + k_heads) * head_dim
        worst["v"] = ulps(out[:, qk_rows:], product[:, qk_rows:])
        heads = bf16(product[:, :qk_rows]).view(-1, head_dim)
        worst["q/k"] = ulps(torch.cat([q_out, k_out]).view(-1, head_dim)[: q_heads + k_heads], norm_rope(heads, qk_w, 37))
    else:
        value = bf16(bf16(product) + addend.float()) if add else product
        worst["out"] = ulps(out, value)
        if norm:
            worst["norm"] = ulps(normed, normed_as_mlx(value, norm_w, torch.rsqrt(value.square().mean() + 1e-6)))
        if parts_out:
            padded = torch.nn.functional.pad(value.flatten(), (0, (-n) % 16))
            worst["parts"] = ulps(parts, padded.view(-1, 16).square().sum(1))
    verdict = "  ".join(f"{key} {value:.1f}" for key, value in worst.items())
    verdict += "  MISMATCH" if not max(worst.values()) <= 4 else ""
    print(f"{label:<24} n {n:>6} k {k:>6} grid {grid:>5} x {threads:>4}  {best:7.2f} µs  {read / best / 1e6:5.2f} TB/s  ulps {verdict}  [{macros}]", flush=True)
    del ws, ss, bs


def bf16(t: torch.Tensor) -> torch.Tensor:
    """t rounded to bfloat16, as float32."""
    return t.to(torch.bfloat16).float()


def normed_as_mlx(x: torch.Tensor, weight: torch.Tensor, normalizer: torch.Tensor) -> torch.Tensor:
    """x's rms norm given its normalizer, with MLX's roundings: x times the normalizer rounded to
    bfloat16, times the weight, rounded again."""
    return bf16(weight.float() * bf16(x * normalizer))


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up with MLX's roundings (the kernel's swiglu1): exp(|gate|), 1 + e, 1 / d and the
    sigmoid each rounded, then gate * sigmoid and that * up."""
    y = bf16(1 / bf16(1 + bf16(torch.exp(gate.abs()))))
    sigmoid = torch.where(gate < 0, y, bf16(1 - y))
    return bf16(bf16(gate * sigmoid) * up)


def dequantized(w: torch.Tensor, scales: torch.Tensor, biases: torch.Tensor, group: int) -> torch.Tensor:
    """The float32 weights of packed 4-bit w (eight values a word, the first in the low bits)."""
    shifts = torch.arange(0, 32, 4, device=w.device, dtype=torch.int32)
    q = ((w.unsqueeze(-1) >> shifts) & 0xF).flatten(1).float()
    rows, k = q.shape
    return (q.view(rows, k // group, group) * scales.float().unsqueeze(-1) + biases.float().unsqueeze(-1)).view(rows, k)


def ulps(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest difference of got from want in units of bfloat16's rounding at want (2^-8 of its
    magnitude, at least that of 2^-6)."""
    want = want.float().flatten()
    unit = torch.clamp(want.abs(), min=2**-6) * 2**-8
    return ((got.float().flatten() - want).abs() / unit).max().item()


def norm_rope(heads: torch.Tensor, weight: torch.Tensor, position: int) -> torch.Tensor:
    """Each head (a row) rms-normed with weight (eps 1e-6) and rotated by rope at position (all its
    dims, base 1e6, halves paired), MLX's roundings: the norm's, the rotation rounded once."""
    normed = normed_as_mlx(heads, weight, torch.rsqrt(heads.square().mean(-1, keepdim=True) + 1e-6))
    half = heads.shape[-1] // 2
    angle = position * 1e6 ** (-torch.arange(half, device=heads.device, dtype=torch.float32) / half)
    a, b = normed[:, :half], normed[:, half:]
    return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], -1)


def main() -> int:
    args = sys.argv[1:]
    source_path = os.path.join(EXT, "qmv_cuda_source.h")
    if args and not re.match(r"^[^:]+:\d+:\d+:", args[0]):
        source_path = args.pop(0)
    return run_cases(lambda case: run_case(source_path, case), args)


if __name__ == "__main__":
    sys.exit(main())
