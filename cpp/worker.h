// A second thread for splitting work in two: the training loop runs one half
// of a batch itself while the worker runs the other. Jobs are a function
// pointer and a context pointer, so posting one allocates nothing. Waiting
// spins briefly (a half batch takes microseconds), then sleeps, so a busy
// machine costs a wake-up, not a core spinning against the thread it waits for.
#pragma once
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

namespace fastmlp {

class Worker {
 public:
  using Job = void (*)(void* ctx);
  Worker();
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  // Starts job(ctx) on the worker thread; the previous job must have been waited for.
  void post(Job job, void* ctx);
  // Blocks until the posted job is done; rethrows what it threw.
  void wait();
  // False in a child process forked after the worker started: its thread was not copied.
  bool alive_here() const;

 private:
  void loop();
  enum State : int { Idle, Posted, Done, Quit };
  std::atomic<int> state_{Idle};
  Job job_ = nullptr;
  void* ctx_ = nullptr;
  std::exception_ptr error_;
  std::mutex mu_;
  std::condition_variable cv_;
  long pid_;
  std::thread thread_;
};

// The worker of `slot`, started on first use (and again in a forked child, whose
// copy of the parent's worker has no thread: that copy is abandoned, not joined).
Worker& worker_for(std::unique_ptr<Worker>& slot);

}  // namespace fastmlp
