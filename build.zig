//! Builds the shim: libmlxb.so, C++ against the MLX headers of the wheel whose libmlx.so it links.
//!
//! libmlx.so from PyPI is built by gcc against libstdc++ with the C++11 string ABI, and its API
//! passes std::string/std::vector/std::optional across the boundary. So the shim is compiled with
//! zig's clang against the system libstdc++ headers (not zig's bundled libc++), with
//! _GLIBCXX_USE_CXX11_ABI=1, and links the system libstdc++.so.6 by path: naming "stdc++" as a
//! system library would make zig substitute its own libc++.
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{});
    const mlx = b.option([]const u8, "mlx", "MLX prefix holding include/ and lib/libmlx.so (the wheel's mlx/ folder)") orelse
        @panic("pass -Dmlx=<prefix>; scripts/setup.sh does");
    const gcc_version = b.option([]const u8, "gcc-version", "libstdc++ header version under /usr/include/c++") orelse "12";
    const multiarch = b.option([]const u8, "multiarch", "Debian multiarch triple") orelse "x86_64-linux-gnu";
    // Where the shim looks for libmlx.so at run time: the wheel's lib/ by absolute path (a dev
    // checkout), or a path relative to the shim ($ORIGIN/...) for a runtime that may move.
    const rpath = b.option([]const u8, "rpath", "runtime search path for libmlx.so (default: <mlx>/lib)");
    // Against MLX's CUDA build: adds the shim's CUDA kernels (shim/ext/cuda.h: the matvec, the KV cache
    // write), which call the CUDA backend that build's libmlx.so exports.
    const cuda = b.option(bool, "cuda", "the libmlx.so is MLX's CUDA build (adds the shim's CUDA kernels)") orelse false;

    const module = b.createModule(.{
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .link_libcpp = false,
    });
    module.addIncludePath(b.path("shim"));
    module.addIncludePath(.{ .cwd_relative = b.fmt("/usr/include/c++/{s}", .{gcc_version}) });
    module.addIncludePath(.{ .cwd_relative = b.fmt("/usr/include/{s}/c++/{s}", .{ multiarch, gcc_version }) });
    module.addSystemIncludePath(.{ .cwd_relative = b.fmt("{s}/include", .{mlx}) });
    const cpu_flags = [_][]const u8{ "-std=c++20", "-nostdinc++", "-D_GLIBCXX_USE_CXX11_ABI=1", "-fvisibility=hidden", "-fno-sanitize=undefined", "-Wall" };
    const cuda_flags = cpu_flags ++ [_][]const u8{"-DMLXB_CUDA=1"};
    const flags: []const []const u8 = if (cuda) &cuda_flags else &cpu_flags;
    // shim/: the MLX wrapper in mlx-c's style (one file per MLX namespace, int status + out-param).
    module.addCSourceFiles(.{
        .root = b.path("shim"),
        .files = &.{ "error.cpp", "array.cpp", "ops.cpp", "fast.cpp", "quant.cpp", "io.cpp", "distributed.cpp" },
        .flags = flags,
    });
    // shim/ext/: our runtime and kernels (the tape, the KV cache object, the CPU and CUDA kernels),
    // built on MLX internals that shim/ext/README.md lists.
    module.addCSourceFiles(.{ .root = b.path("shim/ext"), .files = &.{ "cpu_kernel.cpp", "dequantize_cpu.cpp", "fast_cpu.cpp", "kv.cpp", "kv_write.cpp", "qmv_cpu.cpp", "qmv_cpu_int8.cpp", "qmv_cpu_tiles.cpp", "sample.cpp", "split_product.cpp", "tape.cpp" }, .flags = flags });
    if (cuda) module.addCSourceFiles(.{ .root = b.path("shim/ext"), .files = &.{ "attention_cuda.cpp", "cuda.cpp", "qmv_cuda.cpp", "kv_cuda.cpp", "norm_rope_cuda.cpp", "read_cuda.cpp", "sample_cuda.cpp", "step_graph_cuda.cpp" }, .flags = flags });
    module.addObjectFile(.{ .cwd_relative = b.fmt("{s}/lib/libmlx.so", .{mlx}) });
    module.addObjectFile(.{ .cwd_relative = b.fmt("/usr/lib/{s}/libstdc++.so.6", .{multiarch}) });
    module.addObjectFile(.{ .cwd_relative = b.fmt("/lib/{s}/libgcc_s.so.1", .{multiarch}) });
    module.addRPath(.{ .cwd_relative = rpath orelse b.fmt("{s}/lib", .{mlx}) });

    const lib = b.addLibrary(.{ .name = "mlxb", .linkage = .dynamic, .root_module = module });
    b.installArtifact(lib);
}
