// The CPU kernels' second core: one helper thread that shares a large kernel's work by chunks.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include <cpuid.h>
#include <immintrin.h>

#include "cpu_kernel.h"

namespace {

/** One more thread, so that a large kernel (a decode step's larger matvecs, a batch's attention) runs
 * on two cores: share(work) posts `work` to the helper and runs it here too; work takes chunks from a
 * counter until none is left, so whichever side starts late takes fewer (a sleeping helper wakes in
 * tens of microseconds; a fixed half each left the caller waiting for it). When the caller runs out
 * of chunks before the helper has taken the job, it takes the job back and returns at once.
 * Each side polls for a while before it sleeps on a condition variable: the helper for its next job
 * (a step's kernels come tens of microseconds apart), the caller for the helper's last chunk.
 * Unavailable on a single-core machine or when MLXB_QMV_THREADS=1. Made on first use and never
 * stopped (a detached thread). */
class Helper {
 public:
  Helper() {
    const char* threads = std::getenv("MLXB_QMV_THREADS");
    available_ = std::thread::hardware_concurrency() >= 2 && !(threads && std::string(threads) == "1");
    if (available_) std::thread([this] { loop(); }).detach();
  }

  bool available() const { return available_; }

  void share(const std::function<void()>& work) {
    std::lock_guard<std::mutex> one_caller(caller_); // one job at a time (MLX may run CPU streams concurrently)
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &work;
      state_.store(POSTED, std::memory_order_release);
    }
    wake_.notify_one();
    work();
    // Not taken yet: taken back (the chunks are all done).
    int expected = POSTED;
    if (state_.compare_exchange_strong(expected, IDLE, std::memory_order_acq_rel)) return;
    // Poll for the helper's last chunk, then sleep until it is done (the helper may have lost its core).
    const auto until = std::chrono::steady_clock::now() + POLL;
    while (state_.load(std::memory_order_acquire) != IDLE && std::chrono::steady_clock::now() < until) _mm_pause();
    if (state_.load(std::memory_order_acquire) != IDLE) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return state_.load(std::memory_order_acquire) == IDLE; });
    }
  }

 private:
  void loop() {
    for (;;) {
      // Poll, then sleep until a job comes.
      const auto until = std::chrono::steady_clock::now() + POLL;
      while (state_.load(std::memory_order_acquire) != POSTED && std::chrono::steady_clock::now() < until) _mm_pause();
      if (state_.load(std::memory_order_acquire) != POSTED) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return state_.load(std::memory_order_acquire) == POSTED; });
      }
      int expected = POSTED;
      if (!state_.compare_exchange_strong(expected, TAKEN, std::memory_order_acq_rel)) continue; // taken back
      (*job_)();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        state_.store(IDLE, std::memory_order_release);
      }
      done_.notify_one();
    }
  }

  static constexpr std::chrono::microseconds POLL{200};
  /** The job's state: none, posted (the helper may take it, or the caller take it back), taken. */
  enum : int { IDLE, POSTED, TAKEN };
  bool available_ = false;
  std::mutex caller_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void()>* job_ = nullptr;
  std::atomic<int> state_{IDLE};
};

Helper& helper() {
  static Helper* h = new Helper(); // never destroyed: its thread outlives static destruction
  return *h;
}

} // namespace

void mlxb::in_chunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& f) {
  // A helper thread is there when there are two cores or more (and not MLXB_QMV_THREADS=1).
  if (n <= chunk || !helper().available()) return f(0, n);
  std::atomic<int64_t> next{0};
  helper().share([&] {
    for (int64_t begin; (begin = next.fetch_add(chunk, std::memory_order_relaxed)) < n;) f(begin, std::min(n, begin + chunk));
  });
}

bool mlxb::avx512_available(bool vnni) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false; // OSXSAVE
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 0xE6) != 0xE6) return false; // XMM, YMM, opmask and ZMM state saved
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool f = b & (1u << 16), bw = b & (1u << 30), has_vnni = c & (1u << 11);
  return f && bw && (has_vnni || !vnni);
}
