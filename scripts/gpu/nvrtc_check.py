"""Compiles the CUDA kernel sources of shim/ext/*_cuda.cpp with NVRTC for sm_90, as the shim does at
run time (cuda.cpp: -arch=sm_90 -default-device, cuda.h's DEPENDENT_LAUNCH_SOURCE in front), for each DTYPE: catches a kernel that will not
compile before a GPU machine is spent on it. Needs libnvrtc (PyPI nvidia-cuda-nvrtc, cu13); no GPU.

usage: python3 scripts/gpu/nvrtc_check.py path/to/libnvrtc.so.13 shim/ext/sample_cuda.cpp ...
A source whose kernels take more macros names them after a colon: attention_cuda.cpp:D=128,G=4.
Sources built on cuda.h's dtype_source are checked with it in front (and norm_rope_row.h's row
where a source uses it, or for the matvec's QK_NORM_ROPE=1). With PTXAS_VERBOSE=1 each
compile also prints ptxas's registers, spills and shared memory per kernel (-v). With
NVDISASM=path/to/nvdisasm (PyPI nvidia-cuda-nvdisasm) each compile also prints the order in which the
machine code issues its memory and tensor-core instructions, one letter each: G a global load (g
predicated), S a global store, s a shared load or store, M an mma, B a barrier, L a local (spilled)
load or store (ptxas may move a load far from where the source puts it: docs/performance.md,
fourteenth session).
"""
import ctypes
import os
import re
import subprocess
import sys
import tempfile

VERBOSE = os.environ.get("PTXAS_VERBOSE") == "1"
NVDISASM = os.environ.get("NVDISASM")


def issue_order(nvrtc, program) -> str:
    """The compiled kernel's memory and mma instructions in machine-code order, a letter each."""
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetCUBINSize(program, ctypes.byref(size))
    cubin = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetCUBIN(program, cubin)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin.raw)
        f.flush()
        sass = subprocess.run([NVDISASM, "-c", f.name], capture_output=True, text=True, check=True).stdout
    letters = []
    for line in sass.splitlines():
        predicated = re.search(r"@!?U?P\d", line) is not None
        if re.search(r"\bLDG\.", line):
            letters.append("g" if predicated else "G")
        elif re.search(r"\bSTG\.", line):
            letters.append("S")
        elif re.search(r"\b(LDS|STS)\b", line):
            letters.append("s")
        elif "HMMA" in line:
            letters.append("M")
        elif re.search(r"\bBAR\b", line):
            letters.append("B")
        elif re.search(r"\b(LDL|STL)\b", line):
            letters.append("L")
    return "".join(letters)


def compile_source(nvrtc, source: str, name: str) -> str | None:
    program = ctypes.c_void_p()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), 0, None, None) != 0:
        return "nvrtcCreateProgram failed"
    flags = [b"-arch=sm_90", b"-default-device"] + ([b"--ptxas-options=-v"] if VERBOSE else [])
    options = (ctypes.c_char_p * len(flags))(*flags)
    result = nvrtc.nvrtcCompileProgram(program, len(flags), options)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    if result == 0 and VERBOSE:
        print(log.value.decode().strip())
    if result == 0 and NVDISASM:
        print(f"issue order: {issue_order(nvrtc, program)}")
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    return log.value.decode() if result != 0 else None


def main() -> int:
    nvrtc = ctypes.CDLL(sys.argv[1])
    failed = 0
    for arg in sys.argv[2:]:
        path, _, macros = arg.partition(":")
        defines = "".join(f"#define {m.replace('=', ' ')}\n" for m in macros.split(",") if m)
        text = open(path).read()
        sources = re.findall(r'R"CUDA\((.*?)\)CUDA"', text, re.S)
        # A source that starts with cuda.h's dtype_source gets it here too, and one that uses
        # norm_rope_row.h's row (norm_rope_cuda.cpp; the matvec's QK_NORM_ROPE variant) both.
        def header_source(name: str) -> str:
            return re.findall(r'R"CUDA\((.*?)\)CUDA"', open(os.path.join(os.path.dirname(path), name)).read(), re.S)[0]

        # compile_kernel puts cuda.h's DEPENDENT_LAUNCH_SOURCE in front of every source.
        dependent = re.search(r'DEPENDENT_LAUNCH_SOURCE = R"CUDA\((.*?)\)CUDA"', open(os.path.join(os.path.dirname(path), "cuda.h")).read(), re.S)[1]
        if "NORM_ROPE_ROW_SOURCE" in text or "QK_NORM_ROPE=1" in macros:
            sources = [header_source("cuda.h") + header_source("norm_rope_row.h") + source for source in sources]
        elif "dtype_source(" in text:
            sources = [header_source("cuda.h") + source for source in sources]
        sources = [dependent + source for source in sources]
        if not sources:
            print(f"{path}: no R\"CUDA(...)CUDA\" source")
            failed += 1
        for source in sources:
            for dtype in (0, 1, 2):
                log = compile_source(nvrtc, f"#define DTYPE {dtype}\n{defines}{source}", path)
                print(f"{arg} DTYPE {dtype}: {'ok' if log is None else 'FAILED'}")
                if log is not None:
                    print(log)
                    failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
