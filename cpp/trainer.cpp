#include "trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "blas.h"
#include "finite.h"
#include "pool.h"
#include "rng.h"

namespace fastmlp {

namespace {
// Copy the parameters, the buffers (running statistics), the gradients if grads,
// and every group's optimizer state into (to_snapshot) or out of snap.
template <class T>
void snapshot_copy(Model<T>& m, Optimizer<T>& opt, Buffer<T>& snap, bool grads, bool to_snapshot) {
  idx total = checked_add(grads ? checked_mul(m.n_params(), 2) : m.n_params(), m.n_buffers());
  for (auto& g : opt.groups) total = checked_add(total, g.state.size());
  snap.reserve(total);
  T* s = snap.data();
  auto copy = [&](T* live, idx n) {
    if (to_snapshot) std::memcpy(s, live, sizeof(T) * n);
    else std::memcpy(live, s, sizeof(T) * n);
    s += n;
  };
  copy(m.params(), m.n_params());
  copy(m.buffers(), m.n_buffers());
  if (grads) copy(m.grads(), m.n_params());
  for (auto& g : opt.groups) copy(g.state.data(), g.state.size());
}
}  // namespace

template <class T>
void Snapshot<T>::save(Model<T>& m, Optimizer<T>& opt, bool grads) {
  // everything that can fail (allocations) first: a failed save leaves the previous snapshot whole
  steps.resize(opt.groups.size());
  momentum_ready.resize(opt.groups.size());
  mu_products.resize(opt.groups.size());
  snapshot_copy(m, opt, values, grads, true);
  with_grads = grads;
  dropout_calls = m.dropout_calls;
  for (size_t i = 0; i < opt.groups.size(); ++i) {
    steps[i] = opt.groups[i].step;
    momentum_ready[i] = opt.groups[i].momentum_ready;
    mu_products[i] = opt.groups[i].mu_product;
  }
}

template <class T>
void Snapshot<T>::restore(Model<T>& m, Optimizer<T>& opt) {
  snapshot_copy(m, opt, values, with_grads, false);
  if (with_grads) m.dropout_calls = dropout_calls;
  for (size_t i = 0; i < opt.groups.size(); ++i) {
    opt.groups[i].step = steps[i];
    opt.groups[i].momentum_ready = momentum_ready[i] != 0;
    opt.groups[i].mu_product = mu_products[i];
  }
}

namespace {
// g (n) += k w (n); returns sum w^2 (eight partial sums, so that it vectorizes)
template <class T>
FASTMLP_SIMD double l2_grad(const T* w, T* g, idx n, T k) {
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  idx i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      part[l] += double(w[i + l]) * double(w[i + l]);
      g[i + l] += k * w[i + l];
    }
  for (; i < n; ++i) {
    part[0] += double(w[i]) * double(w[i]);
    g[i] += k * w[i];
  }
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// scikit-learn's L2 step for a batch whose weights sum to wsum: every Linear
// weight's gradient += l2 / wsum * W; returns the penalty 0.5 l2 |W|^2 / wsum
template <class T>
double l2_penalty_step(Model<T>& m, double l2, double wsum) {
  double sq = 0;
  const T k = T(l2 / wsum);
  for (const ParamSlot& s : m.slots())
    if (s.decay) sq += l2_grad(m.params() + s.offset, m.grads() + s.offset, s.rows * s.cols, k);
  return 0.5 * l2 * sq / wsum;
}

// out (n) += in (n)
template <class T>
FASTMLP_SIMD void add_into(T* out, const T* in, idx n) {
  for (idx i = 0; i < n; ++i) out[i] += in[i];
}

// g (n) *= k
template <class T>
FASTMLP_SIMD void scale_by(T* g, idx n, T k) {
  for (idx i = 0; i < n; ++i) g[i] *= k;
}

// sum g^2 (n) (eight partial sums, so that it vectorizes)
template <class T>
FASTMLP_SIMD double sum_squares(const T* g, idx n) {
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  idx i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) part[l] += double(g[i + l]) * double(g[i + l]);
  for (; i < n; ++i) part[0] += double(g[i]) * double(g[i]);
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// g (n) clamped to [-v, v]
template <class T>
FASTMLP_SIMD void clamp_into(T* g, idx n, T v) {
  for (idx i = 0; i < n; ++i) g[i] = std::min(std::max(g[i], -v), v);
}

// abs += sum |a - b| (n), sq += sum (a - b)^2
template <class T>
FASTMLP_SIMD void error_sums(const T* a, const T* b, idx n, double& abs, double& sq) {
  double s1 = 0, s2 = 0;
  for (idx i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    s1 += std::fabs(d);
    s2 += d * d;
  }
  abs += s1;
  sq += s2;
}

constexpr idx kSumBlock = idx(1) << 12;  // elements

// g[0] (n) += g[1] + ... + g[k-1], g[c] = chunk c's gradients, summed in a fixed tree (for s = 1, 2,
// 4, ...: g[c] += g[c + s] for c = 0, 2s, 4s, ...), in blocks of elements over up to `threads` of the
// pool's threads: every element's sum is the same on any thread
// (elements [from, to) of them)
template <class T>
void sum_chunk_grads(const BatchChunk<T>* chunks, idx k, idx from, idx to, int threads) {
  struct Sum {
    const BatchChunk<T>* g;
    idx k, from, to;
    static void run(void* p, idx block) {
      auto* s = static_cast<Sum*>(p);
      const idx lo = s->from + block * kSumBlock, len = std::min(kSumBlock, s->to - lo);
      for (idx step = 1; step < s->k; step *= 2)
        for (idx c = 0; c + step < s->k; c += 2 * step) add_into(s->g[c].grads + lo, s->g[c + step].grads + lo, len);
    }
  } sum{chunks, k, from, to};
  const idx n = to - from, blocks = (n + kSumBlock - 1) / kSumBlock;
  if (n > 0) parallel_for(n < 2 * kSumBlock ? 1 : threads, blocks, &Sum::run, &sum);
}

// A step that failed on another rank (maps to Python RuntimeError).
struct peer_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The weights' forms set on a workspace for a scope (a batch's passes, a predict call), and dropped at its
// end: they hold only while the parameters stay unchanged.
template <class T>
struct FormsScope {
  Workspace<T>& ws;
  FormsScope(Workspace<T>& w, const std::uint32_t* const* forms) : ws(w) { ws.forms = forms; }
  ~FormsScope() { ws.forms = nullptr; }
  FormsScope(const FormsScope&) = delete;
  FormsScope& operator=(const FormsScope&) = delete;
};

// Everything a step over rows of one batch needs: the whole batch, or one
// chunk of a split batch on any thread.
template <class T>
struct BatchJob {
  Model<T>* m;
  const Dataset<T>* d;
  const idx* perm;       // the batch's rows in d (shuffled), or null: rows start..start+b
  idx start, C;
  const std::int64_t* lb;  // (b) the batch's labels, gathered, or null
  const T* wb;             // (b) the batch's sample weights, gathered, or null
  LossSpec<T> spec;        // for a chunk: reduction 'sum', scaled by 1 / the whole batch's denominator
  bool count, errors;
  BatchChunk<T>* chunks;
  std::int64_t stream = -1;  // a split batch: its random layers' stream position (Workspace::stream)
  const std::uint32_t* const* forms = nullptr;  // the weights' forms for the batch (Workspace::forms)
  const KeptRows<T>* keep = nullptr;          // a split batch's deferred gradients (Workspace::keep)

  static void run(void* ctx, idx c) {
    auto* self = static_cast<BatchJob*>(ctx);
    self->step(self->chunks[c]);
  }
  // forward + loss + backward of rows [h.r0, h.r1) of the batch, gradients into h.grads
  void step(BatchChunk<T>& h) const {
    const idx rows = h.r1 - h.r0, in = d->in;
    const T* x = d->X + (start + h.r0) * in;
    const T* t = d->target ? d->target + (start + h.r0) * d->C : nullptr;
    if (perm) {
      const idx* p = perm + h.r0;
      h.xb.reserve(checked_mul(rows, in));
      for (idx r = 0; r < rows; ++r) std::memcpy(h.xb.data() + r * in, d->X + p[r] * in, sizeof(T) * in);
      x = h.xb.data();
      if (d->target) {
        h.tb.reserve(checked_mul(rows, d->C));
        for (idx r = 0; r < rows; ++r)
          std::memcpy(h.tb.data() + r * d->C, d->target + p[r] * d->C, sizeof(T) * d->C);
        t = h.tb.data();
      }
    }
    check_rows_finite(x, rows, in, "X", start + h.r0, perm ? perm + h.r0 : nullptr);
    LossSpec<T> sp = spec;
    if (wb) sp.sample_weight = wb + h.r0;
    const std::int64_t* l = lb ? lb + h.r0 : nullptr;
    h.ws.bf16 = m->workspace().bf16;  // fit's passes take the products' precision of the model's own
    FormsScope<T> scope(h.ws, forms);
    h.ws.keep = keep;
    h.ws.row0 = h.r0;  // dropout draws the masks of these rows of the batch
    h.ws.stream = stream;
    const T* out = m->forward(h.ws, x, rows, in, true, false);
    h.value = loss_forward(sp, out, rows, C, l, t, h.ws.dout.data());
    h.scored = 0;
    h.correct = count ? count_correct(out, rows, C, l, t, sp.ignore_index, h.scored) : 0;
    h.abs_err = h.sq_err = 0;
    if (errors && t) error_sums(out, t, rows * C, h.abs_err, h.sq_err);
    m->backward(h.ws, h.ws.dout.data(), nullptr, false, h.grads);
  }
};

// The chunks' gradient buffers for batches of up to `most` chunks: chunk 0's gradients are the model's,
// the others' buffers of their own (a smaller batch has as many chunks or fewer).
// (Of the deferred gradients' elements, those buffers are never written nor read.)
template <class T>
void chunk_buffers(Model<T>& m, FitBuffers<T>& buf, idx most) {
  const idx P = m.n_params();
  buf.chunk_grads.reserve_uninitialized(checked_mul(most - 1, P));
  for (idx c = 0; c < kMaxChunks; ++c)
    buf.chunk[c].grads = c == 0 ? m.grads() : c < most ? buf.chunk_grads.data() + (c - 1) * P : nullptr;
}

// Where the chunks of a batch of b rows keep the rows of the deferred gradients (deferred_grad_size):
// buf.kept (products in T) or buf.kept_bf (bfloat16); null when there are none.
template <class T>
const KeptRows<T>* kept_rows(Model<T>& m, FitBuffers<T>& buf, idx b) {
  const bool bf16 = m.workspace().bf16;
  const idx L = m.n_layers();
  idx total = 0;
  for (idx i = 0; i < L; ++i)
    if (deferred_grad_size(m, i) > 0) total = checked_add(total, m.layer(i).deferred_kept_size(b, bf16));
  if (total == 0) return nullptr;
  if (bf16) buf.kept_bf.reserve(total);
  else buf.kept.reserve(total);
  buf.keep.assign(static_cast<size_t>(L), KeptRows<T>());  // (its capacity kept: no allocation after the first)
  for (idx i = 0, at = 0; i < L; ++i)
    if (deferred_grad_size(m, i) > 0) {
      KeptRows<T>& k = buf.keep[i];
      k.rows = b;
      if (bf16) k.bf = buf.kept_bf.data() + at;
      else k.dy = buf.kept.data() + at;
      at += m.layer(i).deferred_kept_size(b, bf16);
    }
  return buf.keep.data();
}

// The deferred gradients of a batch split into K chunks, from their kept rows, over up to `threads` threads.
template <class T>
void deferred_products(Model<T>& m, FitBuffers<T>& buf, idx K, int threads) {
  idx row0[kMaxChunks + 1];
  for (idx c = 0; c < K; ++c) row0[c] = buf.chunk[c].r0;
  row0[K] = buf.chunk[K - 1].r1;
  for (idx i = 0; i < m.n_layers(); ++i)
    if (deferred_grad_size(m, i) > 0) {
      const T* x[kMaxChunks];  // each chunk's input of layer i, from its last forward
      for (idx c = 0; c < K; ++c) x[c] = buf.chunk[c].ws.out[i];
      m.layer(i).deferred_grad(buf.keep[i], x, row0, K, m.grads() + m.param_offset(i), threads);
    }
}

// The chunks' sum of elements [lo, hi) of the gradient, but for the deferred weights' (whole already when
// `deferred`), over up to `threads` threads.
template <class T>
void sum_kept(const Model<T>& m, const FitBuffers<T>& buf, idx K, bool deferred, idx lo, idx hi, int threads) {
  idx from = lo;
  for (idx i = 0; deferred && i < m.n_layers() && from < hi; ++i) {
    const idx n = deferred_grad_size(m, i), at = m.param_offset(i);
    if (n == 0 || at + n <= from) continue;
    if (at > from) sum_chunk_grads(buf.chunk, K, from, std::min(at, hi), threads);
    from = at + n;
  }
  if (from < hi) sum_chunk_grads(buf.chunk, K, from, hi, threads);
}

// GradReady for a step that finishes the chunks' sum block by block (fused_sum): each block's sum just
// before its update, on its thread, in its core's caches, not in a pass of its own before the step.
template <class T>
struct SumBeforeStep {
  const Model<T>* m;
  const FitBuffers<T>* buf;
  idx K;
  bool deferred;
  static void run(void* p, const T* g, idx n) {
    const auto* s = static_cast<const SumBeforeStep*>(p);
    const idx lo = g - s->buf->chunk[0].grads;
    sum_kept(*s->m, *s->buf, s->K, s->deferred, lo, lo + n, 1);
  }
};

// The batch of job (b rows) into chunk 0 and the model's gradients. With denom > 0 (finite): in K chunks
// taken by up to `workers` threads, each chunk's loss with reduction 'sum' scaled by 1 / denom (the whole
// batch's denominator), then the chunks' losses, counts and gradients summed in chunk order and a fixed
// tree. Else the whole batch as chunk 0, with job's own reduction.
// Weights with deferred gradients (defers_grads): the chunks keep their rows, and the gradient is one
// product over the batch's rows after them.
// sum false: the chunks' gradients are left unsummed, for a step that sums them (SumBeforeStep).
template <class T>
void batch_grads(BatchJob<T>& job, FitBuffers<T>& buf, idx b, idx K, double denom, int workers, bool sum = true) {
  // every chunk reads the weights' forms (bfloat16 products; float32's fixed-order forward products: w's
  // packed panels), made once for the batch
  FormsFor f;
  f.bf16 = job.m->workspace().bf16, f.train = true, f.dx = true, f.rows = b / K;
  job.forms = job.m->weight_forms(job.m->workspace(), f, std::max(workers, pool_threads()));
  job.keep = nullptr;
  if (!(denom > 0 && std::isfinite(denom))) {
    job.chunks[0].r0 = 0;
    job.chunks[0].r1 = b;
    job.step(job.chunks[0]);
    return;
  }
  Model<T>& m = *job.m;
  job.spec.reduction = Reduction::Sum;
  job.spec.scale = job.spec.scale / denom;
  // every chunk draws the batch's one dropout stream (each the masks of its own rows), advanced once
  job.stream = static_cast<std::int64_t>(m.dropout_calls);
  for (idx c = 0; c < K; ++c) {  // even first rows (bfloat16's kept rows are pairs of rows)
    job.chunks[c].r0 = b * c / K / 2 * 2;
    job.chunks[c].r1 = c + 1 == K ? b : b * (c + 1) / K / 2 * 2;
  }
  job.keep = defers_grads(m, b) ? kept_rows(m, buf, b) : nullptr;
  parallel_take(workers, K, &BatchJob<T>::run, &job);
  if (m.has_dropout()) ++m.dropout_calls;
  BatchChunk<T>& whole = job.chunks[0];
  for (idx c = 1; c < K; ++c) {  // in chunk order
    const BatchChunk<T>& h = job.chunks[c];
    whole.value += h.value;
    whole.correct += h.correct;
    whole.scored += h.scored;
    whole.abs_err += h.abs_err;
    whole.sq_err += h.sq_err;
  }
  if (!std::isfinite(whole.value)) return;
  if (job.keep) deferred_products(m, buf, K, workers);
  if (sum) sum_kept(m, buf, K, job.keep != nullptr, 0, m.n_params(), workers);
}
}  // namespace

namespace {
// the flat gradient g (n) clipped in place by c
template <class T>
void clip_grads(T* g, idx n, const Clip& c) {
  if (c.max_norm != INFINITY) {
    // torch's formula: a non-finite norm makes the coefficient (and so the step) non-finite
    const double coef = c.max_norm / (std::sqrt(sum_squares(g, n)) + 1e-6);
    if (!(coef >= 1.0)) scale_by(g, n, T(coef));
  }
  if (c.value != INFINITY) clamp_into(g, n, T(c.value));
}
}  // namespace

template <class T>
EpochStats train_epoch(Model<T>& m, const Dataset<T>& d, const LossSpec<T>& loss, Optimizer<T>& opt, idx batch,
                       bool shuffle, bool count_accuracy, FitBuffers<T>& buf, const Progress& progress,
                       int workers, const BatchSchedule* sched, const Collective* comm, const Clip& clip,
                       bool errors, idx first, idx count) {
  if (batch <= 0) throw value_error("batch_size must be positive");
  EpochStats st;
  const idx N = d.N, B = std::min(batch, std::max<idx>(N, 1));
  if (comm) {  // every rank steps comm->steps batches from the pass's start
    first = 0;
    count = -1;
  }
  if (first < 0 || (first > 0 && first >= (N + B - 1) / B))
    throw value_error("first batch " + std::to_string(first) + " is out of range");
  const bool pass_ends = count < 0 || first + count >= (N + B - 1) / B;  // the call reaches the last batch
  if (shuffle) {
    buf.perm.resize(static_cast<size_t>(N));
    for (idx i = 0; i < N; ++i) buf.perm[i] = i;
    const std::uint64_t stream = derive_seed(derive_seed(m.seed, 0xF17ull), m.epochs_done);
    Rng rng(comm ? derive_seed(stream, std::uint64_t(comm->rank)) : stream);
    for (idx i = N - 1; i > 0; --i) {  // Fisher-Yates
      idx j = static_cast<idx>(rng.uniform() * double(i + 1));
      std::swap(buf.perm[i], buf.perm[j]);
    }
    if (loss.sample_weight) buf.wb.reserve(B);
    if (d.labels) buf.lb.resize(static_cast<size_t>(B));
  }
  // the chunks' gradients: chunk 0's in the model's, the others' in buffers of their own (the last
  // batch, smaller, has as many chunks or fewer)
  chunk_buffers(m, buf, model_chunks(m, B));
  buf.snapshot.save(m, opt, true);
  double loss_sum = 0, penalty_sum = 0;
  LossSpec<T> sp = loss;  // its sample_weight points at the batch's weights
  const idx C = m.out_features(d.in);
  // comm: whether this rank is inside a collective call, was interrupted (every rank stops at the
  // next step), or learnt from the reduction that another rank failed
  bool reducing = false, stop_here = false, peer_failed = false;
  using S = Collective::Stat;
  auto reduce_stats = [&] {  // the ranks' sums; false when every rank is to stop (st says why)
    reducing = true;
    comm->reduce_stats();
    reducing = false;
    const double* s = comm->stats;
    if (s[S::Failed] > 0) {
      peer_failed = true;
      const std::string who = s[S::Failed] == 1 ? "rank " + std::to_string(long(s[S::FailedRank]) - 1)
                                                : std::to_string(long(s[S::Failed])) + " ranks";
      throw peer_error(who + " failed at batch " + std::to_string(st.batches + 1) + " (the error is reported there); "
                       "every rank stopped, with the model and optimizer reset to the start of the epoch");
    }
    st.stopped = s[S::Stop] > 0;
    st.diverged = !st.stopped && s[S::Diverged] > 0;
    return !st.stopped && !st.diverged;
  };
  auto fail = [&] {  // a local failure: the other ranks wait in (or are bound for) the next reduce_stats
    if (comm && !reducing && !peer_failed) {
      std::fill(comm->stats, comm->stats + S::kStats, 0.0);
      comm->stats[S::Failed] = 1;
      comm->stats[S::FailedRank] = comm->rank + 1;
      reducing = true;
      comm->reduce_stats();
    }
    buf.snapshot.restore(m, opt);
  };
  try {  // bad data (a non-finite input row, a bad label) leaves the model as the epoch found it
  for (idx start = first * B, k = 0; comm ? k < comm->steps : start < N && k != count; start += B, ++k) {
    const idx b = std::min(B, N - start);
    const idx* p = shuffle ? buf.perm.data() + start : nullptr;
    const std::int64_t* lb = d.labels ? d.labels + start : nullptr;
    if (loss.sample_weight) sp.sample_weight = loss.sample_weight + start;
    if (p) {  // the labels and weights of the batch, gathered (the rows: by the job)
      if (d.labels) {
        for (idx r = 0; r < b; ++r) buf.lb[r] = d.labels[p[r]];
        lb = buf.lb.data();
      }
      if (loss.sample_weight) {
        for (idx r = 0; r < b; ++r) buf.wb.data()[r] = loss.sample_weight[p[r]];
        sp.sample_weight = buf.wb.data();
      }
    }
    double wsum = double(b);  // the batch's weight
    if (sp.sample_weight) {
      wsum = 0;
      for (idx r = 0; r < b; ++r) wsum += double(sp.sample_weight[r]);
    }
    // 'mean' over a batch with no weight (zero sample weights, every label ignored, zero class weights)
    // is 0/0: the batch carries no information, so it is skipped (its rows still checked); with comm
    // that is decided for the global batch, after the reduction
    const double denom_all = loss_mean_denominator(sp, b, C, lb);
    if ((wsum == 0 || denom_all == 0) && !comm) {
      for (idx r = 0; r < b; ++r) {
        const idx row = p ? p[r] : start + r;
        check_rows_finite(d.X + row * d.in, 1, d.in, "X", row);
      }
      continue;
    }
    BatchJob<T> job{&m, &d, p, start, C, lb, sp.sample_weight, sp, count_accuracy, errors, buf.chunk};
    const idx K = model_chunks(m, b);
    BatchChunk<T>& whole = buf.chunk[0];  // a whole batch, or where the chunks' results are summed
    double denom = K >= 2 ? denom_all : 0;
    if (comm) {  // this rank's sums: the global batch's mean comes after the reduction
      job.spec.reduction = Reduction::Sum;
      denom = K >= 2 ? 1 : 0;
    }
    // the chunks' sum in the step's blocks, where nothing reads the whole gradient before the step
    const bool fused_sum = K >= 2 && denom > 0 && std::isfinite(denom) && !comm && !(loss.l2 > 0) && !clip.active() &&
                           opt.steps_all_of(m.grads(), m.n_params());
    batch_grads(job, buf, b, K, denom, workers, !fused_sum);
    double value = whole.value, rows = double(b), correct = double(whole.correct), scored = double(whole.scored),
           abs_err = whole.abs_err, sq_err = whole.sq_err;
    if (comm) {  // the global batch: sums over the ranks, then the gradient's allreduce
      double* s = comm->stats;
      std::fill(s, s + S::kStats, 0.0);
      s[S::Diverged] = std::isfinite(value) ? 0 : 1;
      s[S::Stop] = stop_here || comm->interrupted();
      s[S::Rows] = rows;
      s[S::WeightSum] = wsum;
      s[S::Denominator] = loss_mean_denominator(sp, b, C, lb);
      s[S::Loss] = value;
      s[S::Correct] = correct;
      s[S::Scored] = scored;
      s[S::AbsErr] = abs_err;
      s[S::SqErr] = sq_err;
      if (!reduce_stats()) break;
      if (s[S::WeightSum] == 0 || s[S::Denominator] == 0) continue;  // nothing to learn in the global batch
      reducing = true;
      comm->reduce_grads();
      reducing = false;
      const bool mean = sp.reduction == Reduction::Mean;
      if (mean) scale_by(m.grads(), m.n_params(), T(1 / s[S::Denominator]));
      value = mean ? s[S::Loss] / s[S::Denominator] : s[S::Loss];
      rows = s[S::Rows];
      wsum = s[S::WeightSum];
      correct = s[S::Correct];
      scored = s[S::Scored];
      abs_err = s[S::AbsErr];
      sq_err = s[S::SqErr];
    }
    // the step, with the loss checked before the update
    if (!std::isfinite(value)) {
      st.diverged = true;
      break;
    }
    st.correct += idx(correct);
    st.scored += idx(scored);
    st.abs_err += abs_err;
    st.sq_err += sq_err;
    if (loss.l2 > 0) penalty_sum += l2_penalty_step(m, loss.l2, wsum) * rows;
    if (clip.active()) clip_grads(m.grads(), m.n_params(), clip);
    if (sched) sched->apply(opt, k);
    if (fused_sum) {
      SumBeforeStep<T> sum{&m, &buf, K, job.keep != nullptr};
      opt.step(std::max(workers, pool_threads()), &SumBeforeStep<T>::run, &sum);
    } else {
      opt.step(std::max(workers, pool_threads()));  // the threads of the chunks, or of the products
    }
    loss_sum += value * rows;
    st.samples += idx(rows);
    ++st.batches;
    if (progress && !progress(st.batches, st.samples, loss_sum / double(st.samples))) {
      stop_here = true;
      if (!comm) {
        st.stopped = true;
        break;
      }
    }
  }
  if (comm && !st.stopped && !st.diverged) {  // the epoch's end: a rank interrupted or failed after its last step
    std::fill(comm->stats, comm->stats + S::kStats, 0.0);
    comm->stats[S::Stop] = stop_here || comm->interrupted();
    reduce_stats();
  }
  } catch (const value_error&) {
    fail();
    throw;
  } catch (const std::bad_alloc&) {  // a batch's buffers did not fit: the same
    fail();
    throw;
  } catch (...) {  // anything else (an interrupt in a hook): the other ranks must still be told
    if (comm) fail();
    throw;
  }
  // on divergence go back to the start of the epoch, the last state known to be good: weights
  // before a non-finite loss can be finite but useless (1e299), and a step can overflow while
  // its loss was still finite
  if (st.diverged || !all_finite(m.params(), m.n_params()) || !all_finite(m.buffers(), m.n_buffers())) {
    buf.snapshot.restore(m, opt);
    st.diverged = st.restored = true;
  }
  st.loss = st.samples ? loss_sum / double(st.samples) : std::nan("");
  st.penalty = st.samples ? penalty_sum / double(st.samples) : 0.0;
  if (!st.stopped && !st.diverged && pass_ends) ++m.epochs_done;
  return st;
}

template <class T>
double train_step(Model<T>& m, const T* x, idx B, idx in, const LossSpec<T>& loss, const std::int64_t* labels,
                  const T* target, Optimizer<T>& opt, Snapshot<T>& snapshot, const Clip& clip,
                  FitBuffers<T>& buf) {
  snapshot.save(m, opt);  // before the forward, which updates the running statistics
  // fit's step on one batch: for a model whose rows are independent, the same chunks (of the batch and
  // the model, never of the threads) taken by the current threads, the products single-threaded; else
  // (batch statistics) one pass with the products on the threads
  const bool chunked = m.rows_independent(true);
  const idx K = model_chunks(m, B), C = m.out_features(in);
  const double denom = K >= 2 ? loss_mean_denominator(loss, B, C, labels) : 0;
  const int workers = pool_threads();
  double value;
  try {
    if (chunked) {
      const Dataset<T> d{x, B, in, labels, target, target ? C : 0};
      chunk_buffers(m, buf, K);
      BatchJob<T> job{&m, &d, nullptr, 0, C, labels, loss.sample_weight, loss, false, false, buf.chunk};
      ThreadsScope single(1);  // the products' threads (the pool's size too; the chunks take `workers`)
      batch_grads(job, buf, B, K, denom, workers);
      value = buf.chunk[0].value;
    } else {
      value = m.loss_and_grad(x, B, in, loss, labels, target, true);
    }
  } catch (...) {
    snapshot.restore(m, opt);
    throw;
  }
  // nothing to learn from ('mean' over no weight: every label ignored, or zero class weights):
  // no step and nothing changed, as fit skips such a batch; the loss is NaN, as PyTorch's
  if (loss_mean_denominator(loss, B, m.out_features(in), labels) == 0) {
    snapshot.restore(m, opt);
    return value;
  }
  if (!std::isfinite(value)) {
    snapshot.restore(m, opt);
    throw numeric_error("the loss is not finite (" + std::to_string(value) +
                        "); the step was not taken. Try a lower learning rate, or standardize the inputs");
  }
  if (clip.active()) clip_grads(m.grads(), m.n_params(), clip);
  opt.step(std::max(workers, pool_threads()));
  if (!all_finite(m.params(), m.n_params()) || !all_finite(m.buffers(), m.n_buffers())) {
    snapshot.restore(m, opt);
    throw numeric_error("the step diverged: it made the weights non-finite, so it was undone. "
                        "Try a lower learning rate, or standardize the inputs");
  }
  return value;
}

template <class T>
void predict(Model<T>& m, const T* X, idx N, idx in, T* out, idx chunk, bool bf16, Workspace<T>& ws) {
  if (chunk <= 0) throw value_error("batch_size must be positive");
  ws.bf16 = bf16;
  ws.forward_only = true;
  const idx C = m.out_features(in);
  // the weights' forms of this call, in ws itself (concurrent predicts have their own)
  FormsFor f;
  f.bf16 = bf16, f.rows = std::min(chunk, N);
  FormsScope<T> forms(ws, N > 0 ? m.weight_forms(ws, f, pool_threads()) : nullptr);
  // X's finiteness: probed by the first layer as it reads X for its product where it can, else a pass first
  const bool probed = m.probes_input(bf16);
  struct ProbeScope {  // ws.probe for this call only
    Workspace<T>& ws;
    ~ProbeScope() { ws.probe = nullptr; }
  } probe_scope{ws};
  for (idx start = 0; start < N; start += chunk) {
    const idx b = std::min(chunk, N - start);
    FiniteProbe probe;
    ws.probe = probed ? &probe : nullptr;
    if (!probed) check_rows_finite_parallel(X + start * in, b, in, "X", start, pool_threads());
    const T* y = m.forward(ws, X + start * in, b, in, false, false);
    if (probe.bad.load()) check_rows_finite(X + start * in, b, in, "X", start);  // names the row
    std::memcpy(out + start * C, y, sizeof(T) * b * C);
  }
}

template EpochStats train_epoch<float>(Model<float>&, const Dataset<float>&, const LossSpec<float>&, Optimizer<float>&,
                                       idx, bool, bool, FitBuffers<float>&, const Progress&, int,
                                       const BatchSchedule*, const Collective*, const Clip&, bool, idx,
                                       idx);
template EpochStats train_epoch<double>(Model<double>&, const Dataset<double>&, const LossSpec<double>&,
                                        Optimizer<double>&, idx, bool, bool, FitBuffers<double>&, const Progress&,
                                        int, const BatchSchedule*, const Collective*, const Clip&, bool, idx,
                                       idx);
template double train_step<float>(Model<float>&, const float*, idx, idx, const LossSpec<float>&, const std::int64_t*,
                                  const float*, Optimizer<float>&, Snapshot<float>&, const Clip&, FitBuffers<float>&);
template double train_step<double>(Model<double>&, const double*, idx, idx, const LossSpec<double>&,
                                   const std::int64_t*, const double*, Optimizer<double>&, Snapshot<double>&,
                                   const Clip&, FitBuffers<double>&);
template struct Snapshot<float>;
template struct Snapshot<double>;
template void predict<float>(Model<float>&, const float*, idx, idx, float*, idx, bool, Workspace<float>&);
template void predict<double>(Model<double>&, const double*, idx, idx, double*, idx, bool, Workspace<double>&);

}  // namespace fastmlp
