// The lock of one model: shared for readers (predict, state_dict, save),
// exclusive for everything that writes (forward's workspace, backward, steps,
// fit's batches). fit holds it exclusively but lets waiting threads in at batch
// boundaries (boundary()), so another thread's save or state_dict waits at most
// one batch and always sees the state between two steps.
//
// - Re-entrant per thread: a thread that holds a gate may take it again (either
//   mode); only the outermost release frees it.
// - Writers first: a waiting writer keeps new readers out, so a stream of
//   predicts cannot starve a fit.
// - fork(): every gate is taken (for at most a second) before a fork, so the
//   child's models are copied between two steps, and every gate starts free in
//   the child, whose copies of the other threads do not exist.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace fastmlp {

class Gate {
 public:
  Gate();
  ~Gate();
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  void lock(bool exclusive);
  void unlock(bool exclusive);
  // The holder of the exclusive lock, between two steps of its own: if other
  // threads wait, release, let every one of them in, then take it back.
  void boundary();
  // Release the exclusive lock around code that may call back into the model
  // from this thread (fit's Python progress callback, a signal handler).
  void release_all();
  void retake();

 private:
  friend struct GateForkHandlers;
  void reset_after_fork();

  std::mutex mu_;
  std::condition_variable cv_;
  int readers_ = 0;           // threads holding it shared
  bool writer_ = false;       // a thread holds it exclusively
  int want_write_ = 0;        // writers waiting
  std::atomic<int> waiting_{0};   // threads waiting, either mode (read without mu_ by boundary())
  std::uint64_t admitted_ = 0;    // waiters let in so far
  int saved_depth_ = 0;           // release_all: the depth to restore
};

// RAII: holds g (exclusive or shared) for a scope.
class GateHold {
 public:
  GateHold(Gate& g, bool exclusive) : g_(g), ex_(exclusive) { g_.lock(ex_); }
  ~GateHold() { g_.unlock(ex_); }
  GateHold(const GateHold&) = delete;
  GateHold& operator=(const GateHold&) = delete;

 private:
  Gate& g_;
  bool ex_;
};

}  // namespace fastmlp
