// The one layer interface of the engine, and the table every layer kind is
// registered in. A layer kind is one class in one file of cpp/layers/ (its
// forward and backward side by side) plus one FASTMLP_REGISTER_LAYER line in
// that file; the model, the binding and serialization find it by its kind name.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "finite.h"

namespace fastmlp {

// A layer's arguments as Python's spec dict gives them: numbers (bools are 0/1;
// integers are also kept exactly in ints) and strings; a nested dict's keys are
// joined with '.' ("init.name").
struct Options {
  std::string kind;
  std::map<std::string, double> num;
  std::map<std::string, std::int64_t> ints;
  std::map<std::string, std::string> str;

  double number(const std::string& key, double dflt) const;
  double number(const std::string& key) const;  // required
  idx integer(const std::string& key, idx dflt) const;
  idx integer(const std::string& key) const;  // required
  bool flag(const std::string& key, bool dflt) const { return number(key, dflt ? 1 : 0) != 0; }
  std::string string(const std::string& key, const std::string& dflt) const;
};

// One tensor a layer owns: a parameter (trained, with a gradient) or a buffer
// (state_dict entry that is not trained: BatchNorm's running statistics).
struct TensorDecl {
  std::string name;  // its state_dict suffix: "weight", "bias", "running_mean", ...
  idx rows, cols;    // (rows, cols); a vector is (n, 1) with vector = true
  bool vector;       // 1-D in the state_dict
  bool decay;        // scikit-learn's L2 penalty applies (Linear weights)
  bool scalar = false;  // 0-D in the state_dict (a (1, 1) count: num_batches_tracked)
};

// Where the passes over a split batch's chunks keep a layer's rows for its deferred weight gradient
// (Layer::deferred_grad), for the whole batch of `rows` rows: products in T, dy (rows, out); in
// bfloat16, dy's pairs and x's pair panels (gemm_bf16.h), as the product reads them, in bf.
template <class T>
struct KeptRows {
  idx rows = 0;
  T* dy = nullptr;
  std::uint32_t* bf = nullptr;
};

// What a layer's forward and backward see of one pass over a batch.
// What weight forms serve (Layer::form_words): passes with bfloat16 products (float32 models) or not, in
// training mode or not, of `rows` rows or more; dx: also the forms a backward's dx product reads.
struct FormsFor {
  bool bf16 = false, train = false, dx = false;
  idx rows = 0;
};

template <class T>
struct LayerIO {
  idx B = 0, in = 0, out = 0;
  const T* x = nullptr;       // (B, in) the layer's input
  T* y = nullptr;             // (B, out) its output (forward writes it; == x for identity layers)
  const T* w = nullptr;       // its parameters, in TensorDecl order, contiguous (null: none)
  T* g = nullptr;             // their gradients, same layout (null: none, or not wanted)
  T* buf = nullptr;           // its buffers, in TensorDecl order (null: none)
  T* scratch = nullptr;       // scratch_size(B, in) elements, kept from forward to backward
  std::uint8_t* bytes = nullptr;  // byte_scratch(B, in) bytes, kept from forward to backward
  std::uint16_t* half = nullptr;  // products in bfloat16 (gemm_bf16.h): bf16_scratch(B, in) elements,
                                  // kept from forward to backward; null: products in T
  const std::uint32_t* forms = nullptr;  // w's forms (weight_forms; bfloat16 ones with half), prepared once
                                         // for the passes over a batch's chunks; null: the layer prepares w itself
  const T* skip = nullptr;    // residual_end: the input of its block
  T* skip_grad = nullptr;     // residual pair: (B, out) gradient of the skip connection
  bool train = false;         // training mode (dropout active, batch statistics)
  bool accumulate = true;     // backward: add into g (true) or overwrite it
  std::uint64_t seed = 0;     // random layers: the stream of this forward pass
  idx row0 = 0;               // random layers: x's first row is row row0 of the batch (Workspace::row0);
                              // element (r, c) draws the number of the batch's flat index (row0 + r) * in + c
  // a split batch's deferred weight gradient (Layer::deferred_grad): backward leaves those elements of g
  // alone and keeps its rows (at row row0) in the whole batch's buffers instead
  const KeptRows<T>* keep = nullptr;
  // predict's first layer, where it probes_input: told whether x has a NaN or an infinity as x is read
  FiniteProbe* probe = nullptr;
};

// An element-wise layer that can finish a Linear's product in one pass:
// pre (B, C) += b (C), y (B, C) = f(pre); and backward dpre = f'(dy, pre, y),
// db (+)= column sums of dpre.
template <class T>
struct Epilogue {
  virtual ~Epilogue() = default;
  virtual void bias_forward(T* pre, const T* b, T* y, idx B, idx C) const = 0;
  virtual void bias_backward(const T* dy, const T* pre, const T* y, T* dpre, T* db, idx B, idx C,
                             bool accumulate) const = 0;
};

template <class T>
class Layer {
 public:
  virtual ~Layer() = default;
  // The output width for an input of `in` features; throws value_error if the
  // layer cannot take it. in is -1 when unknown (first layers of a model that
  // accept any width): return -1 unless the layer fixes its width.
  virtual idx out_width(idx in) const = 0;
  // The input width the layer requires, or -1 (any).
  virtual idx in_width() const { return -1; }
  virtual std::vector<TensorDecl> params() const { return {}; }
  virtual std::vector<TensorDecl> buffers() const { return {}; }
  // Fill parameters and buffers as torch's reset_parameters / reset_running_stats
  // do; seed0 and seed1 are the layer's two random streams (weight, bias).
  virtual void reset(T* /*params*/, T* /*buffers*/, std::uint64_t /*seed0*/, std::uint64_t /*seed1*/) const {}
  // Each output row depends only on the same input row (in this mode).
  virtual bool rows_independent(bool /*train*/) const { return true; }
  // Draws random numbers in training (dropout): forward advances the model's stream.
  virtual bool random(bool /*train*/) const { return false; }
  // Output is the input itself in this mode (no buffer, no copy).
  virtual bool identity(bool /*train*/) const { return false; }
  // backward reads only the output (not the input): the output may overwrite the
  // input's buffer when this layer finishes a Linear.
  virtual bool backward_needs_input() const { return true; }
  // Per-batch scratch kept from forward to backward.
  virtual idx scratch_size(idx /*B*/, idx /*in*/) const { return 0; }
  virtual idx byte_scratch(idx /*B*/, idx /*in*/) const { return 0; }
  // Per-batch bfloat16 scratch when the products are in bfloat16 (LayerIO::half).
  virtual idx bf16_scratch(idx /*B*/, idx /*in*/) const { return 0; }
  // Forms of the parameters w that the products read (LayerIO::forms), prepared once for the passes over a
  // batch's chunks or a predict's: their 32-bit words (0: none), and their making into dst over up to
  // `threads` threads.
  virtual idx form_words(const FormsFor& /*f*/) const { return 0; }
  virtual void weight_forms(const T* /*w*/, std::uint32_t* /*dst*/, const FormsFor& /*f*/, int /*threads*/) const {}
  // The gradient of the first deferred_grad_size() parameters, deferred by a split batch (trainer.h) to
  // one product over the whole batch, dw (overwritten) from the rows its chunks kept (LayerIO::keep;
  // deferred_kept_size(rows, bf16) elements of KeptRows::dy, or words of bf), x[c] the input of chunk c,
  // which has rows row0[c] to row0[c + 1], over up to `threads` threads.
  virtual idx deferred_grad_size() const { return 0; }
  virtual idx deferred_kept_size(idx /*rows*/, bool /*bf16*/) const { return 0; }
  virtual void deferred_grad(const KeptRows<T>& /*kept*/, const T* const* /*x*/, const idx* /*row0*/, idx /*chunks*/,
                             T* /*dw*/, int /*threads*/) const {}
  // +1: opens a residual block, -1: closes one.
  virtual int nesting() const { return 0; }
  // Linear: an element-wise next layer may finish its product (forward_product
  // and backward_product then skip the bias, which the epilogue handles).
  virtual bool hosts_epilogue() const { return false; }
  // Whether a forward (in that mode) tells LayerIO::probe about its input's finiteness.
  virtual bool probes_input(bool /*train*/, bool /*bf16*/) const { return false; }
  virtual const Epilogue<T>* epilogue() const { return nullptr; }
  virtual const T* bias_of(const T* /*w*/) const { return nullptr; }
  virtual T* bias_of(T* /*g*/) const { return nullptr; }
  virtual void forward_product(const LayerIO<T>& /*io*/) const {}
  virtual void backward_product(const LayerIO<T>& /*io*/, const T* /*dy*/, T* /*dx*/) const {}

  virtual void forward(const LayerIO<T>& io) const = 0;
  // dy is (B, out); dx is (B, in) or null (not wanted); parameter gradients
  // go to io.g (added, or overwritten when !io.accumulate) when io.g is set.
  virtual void backward(const LayerIO<T>& io, const T* dy, T* dx) const = 0;
};

template <class T>
using LayerFactory = std::unique_ptr<Layer<T>> (*)(const Options&);

struct LayerEntry {
  const char* kind;
  LayerFactory<float> make32;
  LayerFactory<double> make64;
};

// The table. register_layer is called by FASTMLP_REGISTER_LAYER at load time.
bool register_layer(const LayerEntry& e);
const LayerEntry* find_layer(const std::string& kind);
std::vector<std::string> layer_kinds();

template <class T>
std::unique_ptr<Layer<T>> make_layer(const Options& o);

namespace detail {
template <template <class> class L, class T>
std::unique_ptr<Layer<T>> make(const Options& o) { return std::make_unique<L<T>>(o); }
}  // namespace detail

#define FASTMLP_CAT2(a, b) a##b
#define FASTMLP_CAT(a, b) FASTMLP_CAT2(a, b)
// FASTMLP_REGISTER_LAYER("relu", ReLULayer): CLASS is a template over the float type
// whose constructor takes const Options&.
#define FASTMLP_REGISTER_LAYER(KIND, CLASS)                                                       \
  static const bool FASTMLP_CAT(fastmlp_registered_, __LINE__) = ::fastmlp::register_layer(      \
      {KIND, &::fastmlp::detail::make<CLASS, float>, &::fastmlp::detail::make<CLASS, double>})

}  // namespace fastmlp
