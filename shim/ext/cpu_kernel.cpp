// The CPU kernels' second core: one helper thread that takes half of a large kernel's work.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include <immintrin.h>

#include "cpu_kernel.h"

namespace {

/** One more thread, so that a large kernel (a decode step's larger matvecs, a batch's attention) runs
 * on two cores: together(a, b) runs a on the helper and b here and returns when both are done.
 * Each side polls for a while before it sleeps on a condition variable: the helper for its next job
 * (a step's kernels come tens of microseconds apart; waking a sleeping thread costs about as much as
 * a small kernel), the caller for the helper's half. Unavailable on a single-core machine or when
 * MLXB_QMV_THREADS=1. Made on first use and never stopped (a detached thread). */
class Helper {
 public:
  Helper() {
    const char* threads = std::getenv("MLXB_QMV_THREADS");
    available_ = std::thread::hardware_concurrency() >= 2 && !(threads && std::string(threads) == "1");
    if (available_) std::thread([this] { loop(); }).detach();
  }

  bool available() const { return available_; }

  void together(const std::function<void()>& a, const std::function<void()>& b) {
    std::lock_guard<std::mutex> one_caller(caller_); // one split at a time (MLX may run CPU streams concurrently)
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &a;
      pending_.store(true, std::memory_order_release);
    }
    wake_.notify_one();
    b();
    // Poll for the helper's half, then sleep until it is done (the helper may have lost its core).
    const auto until = std::chrono::steady_clock::now() + POLL;
    while (pending_.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until) _mm_pause();
    if (pending_.load(std::memory_order_acquire)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return !pending_.load(std::memory_order_acquire); });
    }
  }

 private:
  void loop() {
    for (;;) {
      // Poll, then sleep until a job comes.
      const auto until = std::chrono::steady_clock::now() + POLL;
      while (!pending_.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until) _mm_pause();
      if (!pending_.load(std::memory_order_acquire)) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return pending_.load(std::memory_order_acquire); });
      }
      (*job_)();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        pending_.store(false, std::memory_order_release);
      }
      done_.notify_one();
    }
  }

  static constexpr std::chrono::microseconds POLL{200};
  bool available_ = false;
  std::mutex caller_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void()>* job_ = nullptr;
  std::atomic<bool> pending_{false};
};

Helper& helper() {
  static Helper* h = new Helper(); // never destroyed: its thread outlives static destruction
  return *h;
}

} // namespace

bool mlxb::two_cores() {
  return helper().available();
}

void mlxb::together(const std::function<void()>& a, const std::function<void()>& b) {
  helper().together(a, b);
}
