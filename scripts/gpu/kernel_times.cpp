// GPU kernel times of a window of a process's run, through CUPTI's activity API: a profiling tool for
// the lent GPU machine (scripts/gpu/profile-step.ts loads it with bun:ffi), not part of the library.
// kt_start() begins a window (records of earlier kernels are dropped), kt_stop(path) flushes CUPTI's
// buffers and writes one JSON object to path: the window's span (first kernel start to last kernel
// end), busy time (union of kernel intervals), and per kernel name (demangled, template arguments
// kept) and grid its count and total ns. Built by scripts/gpu/pack.sh against nvidia-cuda-cupti's headers; on
// the machine it finds libcupti.so.13 in its PyTorch's nvidia/cu13/lib.
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace {

struct Kernel {
  std::string name;
  uint64_t start;
  uint64_t end;
};

std::mutex lock;
std::vector<Kernel> kernels;
bool collecting = false;
bool enabled = false;
constexpr size_t BUFFER_BYTES = 8 << 20;

void CUPTIAPI requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = BUFFER_BYTES;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, BUFFER_BYTES));
  *max_records = 0;
}

std::string demangled(const char* name) {
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string s = status == 0 && out != nullptr ? out : name;
  std::free(out);
  return s;
}

void CUPTIAPI completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::lock_guard<std::mutex> guard(lock);
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || !collecting) continue;
    auto* k = reinterpret_cast<CUpti_ActivityKernel10*>(record);
    // The grid tells calls of one kernel apart (a matvec's matrices by their rows).
    std::string grid = " [" + std::to_string(k->gridX) + "," + std::to_string(k->gridY) + "," + std::to_string(k->gridZ) + "]";
    kernels.push_back({demangled(k->name) + grid, k->start, k->end});
  }
  std::free(buffer);
}

std::string escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (static_cast<unsigned char>(c) >= 0x20) out.push_back(c);
  }
  return out;
}

} // namespace

extern "C" {

// 0 when CUPTI took the request, else CUPTI's error code.
__attribute__((visibility("default"))) int kt_start() {
  if (!enabled) {
    if (int r = cuptiActivityRegisterCallbacks(requested, completed)) return r;
    if (int r = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL)) return r;
    enabled = true;
  }
  cuptiActivityFlushAll(1);
  std::lock_guard<std::mutex> guard(lock);
  kernels.clear();
  collecting = true;
  return 0;
}

__attribute__((visibility("default"))) int kt_stop(const char* path) {
  if (int r = cuptiActivityFlushAll(1)) return r;
  std::lock_guard<std::mutex> guard(lock);
  collecting = false;
  std::sort(kernels.begin(), kernels.end(), [](const Kernel& a, const Kernel& b) { return a.start < b.start; });
  uint64_t busy = 0, covered_to = 0;
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_name; // count, total ns
  for (auto& k : kernels) {
    uint64_t from = std::max(k.start, covered_to);
    if (k.end > from) busy += k.end - from;
    covered_to = std::max(covered_to, k.end);
    auto& entry = by_name[k.name];
    entry.first++;
    entry.second += k.end - k.start;
  }
  FILE* f = std::fopen(path, "w");
  if (f == nullptr) return -1;
  uint64_t span = kernels.empty() ? 0 : covered_to - kernels.front().start;
  std::fprintf(f, "{\"kernels\":%zu,\"spanNs\":%llu,\"busyNs\":%llu,\"byName\":[", kernels.size(), static_cast<unsigned long long>(span),
               static_cast<unsigned long long>(busy));
  bool first = true;
  for (auto& [name, entry] : by_name) {
    std::fprintf(f, "%s{\"name\":\"%s\",\"count\":%llu,\"ns\":%llu}", first ? "" : ",", escaped(name).c_str(), static_cast<unsigned long long>(entry.first),
                 static_cast<unsigned long long>(entry.second));
    first = false;
  }
  std::fprintf(f, "]}\n");
  std::fclose(f);
  kernels.clear();
  return 0;
}

} // extern "C"
