"""Zeroes the CUDA machine code in a shared library that a GPU of another architecture would use.

MLX's CUDA libmlx.so embeds each kernel for sm_75, 80, 90, 100, 120 and 121 plus sm_120 PTX (67 MB
of its 146). A lent H100/H200 (sm_90) only loads the sm_90 images, so for the trip to that machine
the others are overwritten with zeros in place: every header, offset and size stays as it was (the
driver still sees each entry and picks sm_90), the file keeps its size, and the zeros compress to
nothing. Never use the result on a GPU of another architecture.

usage: prune_fatbin.py LIBRARY KEEP_SM   (e.g. libmlx.so 90; edits LIBRARY in place)
"""

import struct
import sys
from collections.abc import Iterator

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_ELF = 1, 2


def fatbin_section(data: bytes) -> tuple[int, int]:
    """File offset and size of the .nv_fatbin section (64-bit little-endian ELF)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    def header(i: int):
        return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
    names_offset = header(shstrndx)[4]
    for i in range(shnum):
        name_at, _, _, _, offset, size, *_ = header(i)
        end = data.index(b"\0", names_offset + name_at)
        if data[names_offset + name_at:end] == b".nv_fatbin":
            return offset, size
    raise SystemExit("no .nv_fatbin section")


def fat_binaries(data: bytes) -> Iterator[tuple[int, int, int]]:
    """Each fat binary of the .nv_fatbin section: (its offset, header size, body size), read before
    it is yielded (a caller may rewrite it)."""
    start, size = fatbin_section(data)
    pos, end = start, start + size
    while pos + 16 <= end:
        magic, _, header_size, body_size = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:  # alignment padding between fat binaries
            pos += 8
            continue
        yield pos, header_size, body_size
        pos += header_size + body_size


def entries(data: bytes, body: int, body_end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """The entries of a fat binary's body: (offset, kind, header size, payload size, architecture)."""
    entry = body
    while entry < body_end:
        kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
        arch, = struct.unpack_from("<I", data, entry + 28)
        yield entry, kind, entry_header, payload, arch
        entry += entry_header + payload


def prune(data: bytearray, keep_sm: int) -> dict[str, int]:
    kept = zeroed = 0
    for pos, header_size, body_size in fat_binaries(data):
        for entry, kind, entry_header, payload, arch in entries(data, pos + header_size, pos + header_size + body_size):
            first = entry + entry_header
            if kind == KIND_ELF and arch == keep_sm:
                kept += payload
            elif kind in (KIND_ELF, KIND_PTX):
                data[first:first + payload] = bytes(payload)
                zeroed += payload
    if kept == 0:
        raise SystemExit(f"no sm_{keep_sm} machine code found; nothing written")
    return {"kept": kept, "zeroed": zeroed}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    path, keep = sys.argv[1], int(sys.argv[2])
    data = bytearray(open(path, "rb").read())
    counts = prune(data, keep)
    open(path, "wb").write(data)
    print(f"{path}: kept {counts['kept'] / 1e6:.1f} MB of sm_{keep} code, zeroed {counts['zeroed'] / 1e6:.1f} MB")
