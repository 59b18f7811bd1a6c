"""Keeps only one architecture's PTX in a shared library's CUDA fat binaries, its PTX ISA version
lowered, so that an older driver compiles it.

node-llama-cpp's CUDA 13 prebuilt (libggml-cuda.so) carries for sm_90 only compute_90 PTX, written
by CUDA 13.1 (`.version 9.1`); the lent H200's driver (580, CUDA 13.0) refuses it ("the provided PTX
was compiled with an unsupported toolchain"). llama.cpp's kernels use nothing of PTX 9.1, so each fat
binary is rewritten in place to hold that PTX alone (zstd-compressed as before, `.version` set to the
given one): its header's size is cut to the one entry and the rest of its bytes are zeroed, so the
file keeps its size and layout and compresses far better for the trip. Never use the result on a
GPU of another architecture. Needs the zstd command.

usage: retarget_ptx.py LIBRARY SM PTX_VERSION   (e.g. libggml-cuda.so 90 9.0; edits LIBRARY in place)
"""

import re
import struct
import subprocess
import sys

from prune_fatbin import KIND_PTX, entries, fat_binaries

COMPRESSED_SIZE, MINOR, RAW_SIZE = 16, 24, 56  # offsets in a PTX entry's header


def retarget(data: bytearray, sm: int, version: str) -> dict[str, int]:
    major, minor = (int(v) for v in version.split("."))
    kept = dropped = 0
    for pos, header_size, body_size in fat_binaries(data):
        body, body_end = pos + header_size, pos + header_size + body_size
        chosen = None
        for entry, kind, entry_header, payload, arch in entries(data, body, body_end):
            if kind == KIND_PTX and arch == sm:
                chosen = (entry, entry_header, payload)
        if chosen is None:
            dropped += 1
            continue
        entry, entry_header, payload = chosen
        header = bytearray(data[entry : entry + entry_header])
        compressed = struct.unpack_from("<I", header, COMPRESSED_SIZE)[0]
        ptx = subprocess.run(["zstd", "-d", "-c"], input=bytes(data[entry + entry_header : entry + entry_header + compressed]),
                             capture_output=True, check=True).stdout
        ptx, count = re.subn(rb"^\.version \d+\.\d+$", f".version {major}.{minor}".encode(), ptx, count=1, flags=re.M)
        if count != 1:
            raise SystemExit(f"fat binary at {pos:#x}: no .version line in its sm_{sm} PTX")
        packed = subprocess.run(["zstd", "-19", "-c"], input=ptx, capture_output=True, check=True).stdout
        padded = (len(packed) + 15) // 16 * 16
        struct.pack_into("<Q", header, 8, padded)
        struct.pack_into("<I", header, COMPRESSED_SIZE, len(packed))
        struct.pack_into("<HH", header, MINOR, minor, major)
        struct.pack_into("<Q", header, RAW_SIZE, len(ptx))
        new_body = bytes(header) + packed + bytes(padded - len(packed))
        if len(new_body) > body_size:
            raise SystemExit(f"fat binary at {pos:#x}: the retargeted PTX does not fit")
        data[body:body_end] = new_body + bytes(body_size - len(new_body))
        struct.pack_into("<Q", data, pos + 8, len(new_body))
        kept += 1
    if kept == 0:
        raise SystemExit(f"no compute_{sm} PTX found; nothing written")
    return {"kept": kept, "dropped": dropped}


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    path, sm, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    data = bytearray(open(path, "rb").read())
    counts = retarget(data, sm, version)
    open(path, "wb").write(data)
    print(f"{path}: {counts['kept']} fat binaries now hold compute_{sm} PTX {version} alone; "
          f"{counts['dropped']} without it left as they were")
