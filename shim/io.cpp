// File mappings backing arrays: safetensors tensors become MLX arrays without a copy on the CPU.
// GGUF files through MLX's load_gguf (Q4_0, Q4_1 and Q8_0 as affine-quantized triples).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "internal.h"
#include "mlx/io.h"

using namespace mlxb;

namespace {

struct Mapping {
  void* base = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (base != nullptr && size > 0) munmap(base, size);
  }
};

// The handle given to TS: one shared reference; each array made from it holds another.
using MapHandle = std::shared_ptr<Mapping>;

MapHandle& mapping(mlx_file_map m) {
  if (m == nullptr) throw ArgumentError("file map argument is null");
  return *static_cast<MapHandle*>(m);
}

} // namespace

extern "C" {

int mlx_file_map_open(mlx_file_map* out, size_t* size, const char* path) {
  return guard([&] {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error(std::string("cannot open ") + path + ": " + std::strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
      ::close(fd);
      throw std::runtime_error(std::string("cannot stat ") + path + ": " + std::strerror(errno));
    }
    auto m = std::make_shared<Mapping>();
    m->size = static_cast<size_t>(st.st_size);
    if (m->size > 0) {
      // Private and writable: MLX may donate an input buffer to an op's output and write into it;
      // such writes land in private pages and never reach the file.
      void* base = mmap(nullptr, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      if (base == MAP_FAILED) {
        ::close(fd);
        throw std::runtime_error(std::string("cannot map ") + path + ": " + std::strerror(errno));
      }
      m->base = base;
    }
    ::close(fd);
    *size = m->size;
    *out = new MapHandle(std::move(m));
  });
}

int mlx_file_map_close(mlx_file_map map) {
  delete static_cast<MapHandle*>(map);
  return 0;
}

int mlx_array_new_mapped(mlx_array* out, mlx_file_map map, size_t offset, size_t nbytes, const int32_t* shape, int ndim, int dtype) {
  return guard([&] {
    MapHandle m = mapping(map);
    auto dt = to_dtype(dtype);
    auto s = shape_of(shape, ndim);
    size_t count = 1;
    for (auto d : s) count *= static_cast<size_t>(d);
    if (count * dt.size() != nbytes) throw ArgumentError("byte span does not match shape and dtype");
    if (offset > m->size || nbytes > m->size - offset) throw ArgumentError("byte span outside the file");
    char* src = static_cast<char*>(m->base) + offset;
    if (nbytes == 0 || reinterpret_cast<uintptr_t>(src) % dt.size() != 0) {
      void* copy = std::malloc(nbytes > 0 ? nbytes : 1);
      if (copy == nullptr) throw std::bad_alloc();
      if (nbytes > 0) std::memcpy(copy, src, nbytes);
      put(out, mx::array(copy, std::move(s), dt, [](void* p) { std::free(p); }));
      return;
    }
    put(out, mx::array(src, std::move(s), dt, [keep = std::move(m)](void*) {}));
  });
}

int mlx_gguf_load(mlx_gguf* out, const char* path) {
  return guard([&] {
    if (path == nullptr) throw ArgumentError("path is null");
    auto loaded = mx::load_gguf(path);
    *out = new std::unordered_map<std::string, mx::array>(std::move(loaded.first));
  });
}

int mlx_gguf_take(mlx_array* out, mlx_gguf g, const char* name) {
  return guard([&] {
    if (g == nullptr || name == nullptr) throw ArgumentError("gguf handle or name is null");
    auto& arrays = *static_cast<std::unordered_map<std::string, mx::array>*>(g);
    auto it = arrays.find(name);
    if (it == arrays.end()) throw ArgumentError(std::string("no array named ") + name);
    put(out, it->second);
    arrays.erase(it);
  });
}

int mlx_gguf_free(mlx_gguf g) {
  delete static_cast<std::unordered_map<std::string, mx::array>*>(g);
  return 0;
}

} // extern "C"
