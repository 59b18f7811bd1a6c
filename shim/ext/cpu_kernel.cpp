// The CPU kernels' second core: one helper thread that takes half of a large kernel's work.
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "cpu_kernel.h"

namespace {

/** One more thread, so that a large kernel (a decode step's larger matvecs, a batch's attention) runs
 * on two cores: together(a, b) runs a on the helper and b here and returns when both are done.
 * Unavailable on a single-core machine or when MLXB_QMV_THREADS=1. Made on first use and never
 * stopped (a detached thread waiting on a condition variable). */
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
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = a;
    pending_ = true;
    lock.unlock();
    wake_.notify_one();
    b();
    lock.lock();
    done_.wait(lock, [this] { return !pending_; });
    job_ = nullptr;
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return pending_; });
      auto job = job_;
      lock.unlock();
      job();
      lock.lock();
      pending_ = false;
      done_.notify_one();
    }
  }

  bool available_ = false;
  std::mutex caller_, mutex_;
  std::condition_variable wake_, done_;
  std::function<void()> job_;
  bool pending_ = false;
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
