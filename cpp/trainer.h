// The training loop: one epoch of mini-batch training, evaluation and
// chunked prediction, all in C++ so that Python is called only between
// epochs (and, throttled, for progress and Ctrl-C).
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "model.h"
#include "schedules.h"

namespace fastmlp {

// A data set: X is (N, in); the target is labels (N) or target (N, C).
template <class T>
struct Dataset {
  const T* X = nullptr;
  idx N = 0, in = 0;
  const std::int64_t* labels = nullptr;
  const T* target = nullptr;
  idx C = 0;  // columns of target
};

struct EpochStats {
  double loss = 0;      // mean of the batch losses, weighted by batch size
  double penalty = 0;   // the same mean of the batches' L2 penalties (LossSpec::l2)
  idx samples = 0;      // samples trained on (fewer than N if stopped)
  idx correct = 0;      // argmax matches, when counted
  idx scored = 0;       // rows counted for accuracy (ignored labels left out)
  double abs_err = 0;   // with errors: sum of |output - target| over the trained batches' entries
  double sq_err = 0;    // with errors: the same sum of (output - target)^2
  idx batches = 0;
  bool stopped = false;  // progress asked to stop (Ctrl-C)
  bool diverged = false;  // a non-finite loss (that batch's step was not taken) or non-finite weights
  bool restored = false;  // diverged: the weights and optimizer state were reset to the epoch's start
};

// Called after each batch with (batches done, samples done, running loss);
// returns false to stop at this batch boundary.
using Progress = std::function<bool(idx, idx, double)>;

// An undo copy of everything a step changes: the parameters, the buffers
// (running statistics), every group's
// optimizer state, step count and momentum flag; with_grads, also the
// gradients and the dropout stream's position (all a failed epoch may have
// touched). Its buffers are reused, so saving allocates only the first time
// (or when the model grows).
template <class T>
struct Snapshot {
  Buffer<T> values;
  std::vector<std::int64_t> steps;
  std::vector<std::uint8_t> momentum_ready;
  std::vector<double> mu_products;
  bool with_grads = false;
  std::uint64_t dropout_calls = 0;
  void save(Model<T>& m, Optimizer<T>& opt, bool with_grads = false);
  void restore(Model<T>& m, Optimizer<T>& opt);
};

// fit splits a batch of `rows` rows (of a model whose rows are independent in
// training) into this many chunks: a function of the batch and the model's size
// alone, never of the threads, so that every n_threads gives the same bits.
// Each chunk's gradient goes to a buffer of its own (the first to the model's),
// and they are summed in a fixed tree; of n_params, `kept` are in those buffers
// (the others' gradients deferred, below). One chunk below 64 rows, two from 64;
// four or eight when each chunk keeps 128 rows or more (256 when the parameters
// pass 4 MiB: each chunk reads them all again, and 128-row chunks made the large
// net's epoch 7-11% slower on two cores) and the extra gradient buffers stay
// within 8 MiB (bigger ones: summing them costs more than the threads bring).
constexpr idx kMaxChunks = 8;
inline idx batch_chunks(idx rows, idx n_params, idx elem_size, idx kept = -1) {
  constexpr idx kMinRows = 32, kBudget = idx(8) << 20, kBigModel = idx(4) << 20;
  if (kept < 0 || kept > n_params) kept = n_params;
  const idx wide = n_params > kBigModel / elem_size ? 256 : 128;
  if (rows < 2 * kMinRows) return 1;
  idx k = 2;
  while (2 * k <= kMaxChunks && rows / (2 * k) >= wide && (2 * k - 1) * kept <= kBudget / elem_size) k *= 2;
  return k;
}

// A split batch can defer the gradient of every weight with kDeferMin elements or more (Layer::deferred_grad:
// a Linear's) to one product over the whole batch, split by the product's columns, after its chunks: the
// chunks keep that layer's rows instead of a gradient each, so neither the gradients nor their sum grow
// with the chunks, and the product is one long one (k = the batch's rows, not a chunk's). Its bits do
// not depend on the chunks or the threads either. It does where that gives the batch more chunks than
// keeping them would, or where the chunks are short (under 128 rows: their products over k = a chunk's
// rows are slow); elsewhere each chunk's product, on data still in its core's caches, is faster (measured
// on two cores: the seed net's epoch 6% faster without, the mid net's 7-15% faster with).
constexpr idx kDeferMin = idx(1) << 16;
template <class T>
idx deferred_grad_size(const Model<T>& m, idx i) {
  const idx n = m.param_offset(i) >= 0 ? m.layer(i).deferred_grad_size() : 0;
  return n >= kDeferMin ? n : 0;
}
// The parameters whose gradients each chunk keeps.
template <class T>
idx chunked_params(const Model<T>& m) {
  idx P = m.n_params();
  for (idx i = 0; i < m.n_layers(); ++i) P -= deferred_grad_size(m, i);
  return P;
}
// fit's chunks for a batch of `rows` rows of m (1: none).
template <class T>
idx model_chunks(const Model<T>& m, idx rows) {
  return m.rows_independent(true) ? batch_chunks(rows, m.n_params(), idx(sizeof(T)), chunked_params(m)) : 1;
}
// Whether those chunks defer the big weights' gradients.
template <class T>
bool defers_grads(const Model<T>& m, idx rows) {
  const idx K = model_chunks(m, rows), P = m.n_params();
  if (K < 2 || chunked_params(m) == P) return false;
  return batch_chunks(rows, P, idx(sizeof(T))) < K || rows / K < 128;
}

// The rows of a batch one chunk steps on: its gathered rows, its
// forward/backward buffers and the result of its step.
template <class T>
struct BatchChunk {
  Buffer<T> xb, tb;  // gathered inputs (rows, in) and targets (rows, C)
  Workspace<T> ws;
  T* grads = nullptr;  // where its parameter gradients go (n_params)
  // the job: rows [r0, r1) of the batch
  idx r0 = 0, r1 = 0;
  double value = 0;
  idx correct = 0, scored = 0;  // accuracy counts of its rows
  double abs_err = 0, sq_err = 0;  // error sums of its rows (metrics mae, mse)
};

// Buffers of a fit call, kept by the model between calls: the permutation,
// the batch's gathered labels and weights, the chunks (chunk[0] also serves a
// whole batch) and the gradients of chunks 1.. (n_params each).
template <class T>
struct FitBuffers {
  Buffer<T> wb;
  Snapshot<T> snapshot;  // the model and optimizer at the start of the epoch
  std::vector<std::int64_t> lb;
  std::vector<idx> perm;
  BatchChunk<T> chunk[kMaxChunks];
  Buffer<T> chunk_grads;
  std::vector<KeptRows<T>> keep;  // per layer: a split batch's rows for its deferred gradient, in
  Buffer<T> kept;                 // these (products in T)
  Buffer<std::uint32_t> kept_bf;  // or these (bfloat16)
};

// Data-parallel training (fastmlp.distributed): the sums over all ranks that
// make every rank take the same steps. After computing its batch, each rank
// writes its sums into stats and calls reduce_stats() (an allreduce SUM of
// stats in place); only when no rank failed, diverged or was interrupted does it
// call reduce_grads() (an allreduce SUM of the model's flat gradient buffer in
// place). Every rank makes the same calls, whatever fails, so none is left
// waiting: a failing rank still joins the next reduce_stats() with Failed set.
struct Collective {
  // Failed: ranks whose step raised; FailedRank: the sum of (rank + 1) over them
  enum Stat { Failed, FailedRank, Diverged, Stop, Rows, WeightSum, Denominator, Loss, Correct, Scored, AbsErr, SqErr,
              kStats };
  double* stats = nullptr;  // (kStats)
  std::function<void()> reduce_stats, reduce_grads;
  int rank = 0;
  idx steps = 0;  // batches per epoch, the same on every rank (at most ceil(N / batch) on each)
  // set (nonzero) by a deferred Ctrl-C on this rank (fastmlp.distributed's SIGINT handler only records
  // it, so that no KeyboardInterrupt can break into a collective call): shared as Stop at the next reduction
  const volatile double* interrupt = nullptr;
  bool interrupted() const { return interrupt && *interrupt != 0; }
};

// Gradient clipping between backward and step, as torch.nn.utils.clip_grad_norm_
// (total 2-norm over every parameter's gradient, scaled by
// min(1, max_norm / (norm + 1e-6))) then clip_grad_value_ (each element clamped
// to [-value, value]); infinity switches either off.
struct Clip {
  double max_norm = INFINITY;
  double value = INFINITY;
  bool active() const { return max_norm != INFINITY || value != INFINITY; }
};

// One epoch over d in batches (loss.sample_weight, if set, holds the N
// rows' weights and is gathered with the batches) of `batch` rows, shuffled with a stream derived
// from (model seed, model.epochs_done) when shuffle is set. A model whose rows
// are independent in training has each batch split into batch_chunks() chunks,
// taken by up to `workers` of the pool's threads (products single-threaded, the
// caller sets BLAS's threads); the chunks' gradients are summed in a fixed tree
// before the step. The result is the whole batch's computation in another
// summation order, and the same bits for any `workers`: dropout's masks are the
// whole batch's (each chunk draws its rows' numbers of the batch's one stream,
// Workspace::row0).
// sched, if given, sets each batch's lr (and momentum) before its step.
// With comm, d is this rank's shard and batch its share of the global batch:
// comm->steps batches, each rank's shuffle stream also derived from its rank,
// the loss and gradient of each step those of the global batch (its mean over
// the global denominator), and the returned stats global. clip applies to
// each step's whole gradient (the chunks' sum; with comm, after the
// allreduce), just before the step. errors (a target d.target): the stats'
// abs_err and sq_err (the metrics 'mae' and 'mse', from the training outputs).
// Without comm, first and count (>= 0) take only batches [first, first + count)
// of the pass (fit's steps_per_epoch); epochs_done, which seeds the shuffle,
// advances only when the call reaches the pass's last batch.
template <class T>
EpochStats train_epoch(Model<T>& m, const Dataset<T>& d, const LossSpec<T>& loss, Optimizer<T>& opt, idx batch,
                       bool shuffle, bool count_accuracy, FitBuffers<T>& buf, const Progress& progress,
                       int workers = 1, const BatchSchedule* sched = nullptr, const Collective* comm = nullptr,
                       const Clip& clip = Clip(), bool errors = false, idx first = 0, idx count = -1);

// zero_grad + forward (dropout active) + loss + backward + optimizer step on
// x (B, in) and labels (B) or target (B, out); returns the loss before the
// step. A non-finite loss throws numeric_error before the step; a step that
// makes the weights non-finite is undone (weights and optimizer state) and
// throws numeric_error. snapshot and buf are scratch space, kept by the caller. clip
// applies to the gradient before the step. The batch is chunked as fit chunks it
// (batch_chunks), the chunks taken by the pool's current threads with single-threaded
// products: the same bits as fit's step on that batch, for any thread count.
template <class T>
double train_step(Model<T>& m, const T* x, idx B, idx in, const LossSpec<T>& loss, const std::int64_t* labels,
                  const T* target, Optimizer<T>& opt, Snapshot<T>& snapshot, const Clip& clip, FitBuffers<T>& buf);

// Eval-mode forward of X (N, in) into out (N, out) in chunks of `chunk` rows on
// ws, which no other call may use meanwhile (one per concurrent predict; a
// workspace kept from an earlier call allocates nothing for a batch that fits).
// bf16: the products in bfloat16 (Workspace::bf16).
template <class T>
void predict(Model<T>& m, const T* X, idx N, idx in, T* out, idx chunk, bool bf16, Workspace<T>& ws);

}  // namespace fastmlp
