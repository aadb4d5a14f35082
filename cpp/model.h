// A Sequential model: a flat list of layers (cpp/layer.h; a residual block is
// its layers between a residual_begin and a residual_end) whose parameters,
// gradients, buffers and per-batch activations live in buffers the model owns.
// Parameters, gradients and buffers are each one contiguous buffer, laid out in
// state_dict order: layer by layer, each layer's tensors in its declared order.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gate.h"
#include "layer.h"
#include "losses.h"
#include "optimizers.h"

namespace fastmlp {

// Where one parameter (or buffer) tensor lives in the flat buffers.
struct ParamSlot {
  idx layer;          // index of its layer in the model's flat list
  std::string name;   // "weight", "bias", "running_mean", ...
  idx offset;         // into params()/grads() (parameters) or buffers() (buffers)
  idx rows, cols;     // (rows, cols); vectors are (n, 1)
  bool vector;        // 1-D in the state_dict
  bool decay;         // scikit-learn's L2 penalty applies
  bool scalar;        // 0-D in the state_dict
};

// Per-batch buffers of one forward/backward: grown when a larger batch (or
// another input width) first arrives, then reused, so a training step
// allocates nothing. Training uses the model's own; predict makes its own
// so that predictions can run concurrently.
template <class T>
struct Workspace {
  idx in = -1;                              // input width the buffers were laid out for
  std::vector<idx> width;                   // width[i] = input width of layer i; width[L] = output width
  std::vector<Buffer<T>> act;               // act[i] = output of layer i (rows, width[i + 1]), unless it is
                                            // an identity or writes in place into its Linear's output
  std::vector<Buffer<T>> scratch;           // per layer, kept from forward to backward
  std::vector<Buffer<std::uint8_t>> bytes;  // per layer (dropout masks)
  std::vector<Buffer<std::uint16_t>> half;  // per layer, bfloat16 operands (when bf16)
  // per layer, its weights' forms (LayerIO::forms) or null; set for the passes of one batch (or predict
  // call) while the parameters stay unchanged, made for passes of this workspace's bf16, pointing into
  // some workspace's forms_store
  const std::uint32_t* const* forms = nullptr;
  Buffer<std::uint32_t> forms_store;        // Model::weight_forms: the forms, and per layer a pointer
  std::vector<const std::uint32_t*> forms_ptrs;
  // products of the passes on this workspace in bfloat16 (float32 models; set before a forward, and
  // kept until its backward): torch.autocast(dtype=torch.bfloat16)'s matmuls
  bool bf16 = false;
  // predict's: forwards only, so none of the backward's buffers (grad_a, grad_b, dout, skip_grad)
  bool forward_only = false;
  // predict's: layer 0's input probe (LayerIO::probe), where Model::probes_input
  FiniteProbe* probe = nullptr;
  std::vector<Buffer<T>> skip_grad;         // per residual_end: (rows, width) gradient of the skip
  Buffer<T> grad_a, grad_b, input_copy, dout;
  // the last forward: its rows; -1 none yet, -2 it failed (its buffers may have been reallocated)
  idx rows = -1;
  bool train = false;
  std::vector<const T*> out;                // out[0] = input, out[i + 1] = output of layer i
  std::vector<std::uint64_t> seeds;         // per layer: the random stream of the last forward
  // A pass over rows [row0, row0 + B) of a batch (a split batch's second half has row0 > 0): the random
  // layers draw those rows' numbers, so a batch's masks do not depend on how it is split.
  idx row0 = 0;
  // The random layers' stream position of a training pass: -1, the model's dropout_calls, advanced by
  // the pass; else this one, and the caller advances dropout_calls (once for a split batch's chunks)
  std::int64_t stream = -1;
  // per layer, where a backward keeps its rows for a deferred weight gradient (LayerIO::keep), or null
  const KeptRows<T>* keep = nullptr;
};

template <class T>
class Model {
 public:
  // specs: one Options per layer of the flat list (kind + arguments). Without
  // allocate, only the structure is built and checked (no parameter buffers).
  Model(std::vector<Options> specs, std::uint64_t seed, bool allocate = true);

  // Re-initialise every parameter and buffer from seed (each layer's own reset).
  void reset_parameters(std::uint64_t seed);

  idx n_layers() const { return static_cast<idx>(layers_.size()); }
  const Layer<T>& layer(idx i) const { return *layers_[i]; }
  const std::vector<Options>& specs() const { return specs_; }
  const std::vector<ParamSlot>& slots() const { return slots_; }          // parameters
  const std::vector<ParamSlot>& buffer_slots() const { return bslots_; }  // buffers
  idx n_params() const { return params_.size(); }
  idx n_buffers() const { return buffers_.size(); }
  T* params() { return params_.data(); }
  T* grads() { return grads_.data(); }
  T* buffers() { return buffers_.data(); }
  idx param_offset(idx i) const { return param_offset_[i]; }  // layer i's parameters in params(), or -1
  // Input width the model needs (-1: any), and the output width for an input width.
  idx in_features() const { return in_features_; }
  idx out_features(idx in) const;

  bool training = true;
  bool has_dropout() const;                 // a layer draws random numbers in training
  bool rows_independent(bool train) const;  // every layer's rows are independent in this mode
  std::uint64_t seed = 0;
  std::uint64_t dropout_calls = 0;  // batches of training-mode forwards: the random layers' stream
  std::uint64_t epochs_done = 0;    // epochs of fit: the shuffling stream

  // x is (B, in). The workspace keeps a pointer to x for backward unless
  // copy_input is set (then it keeps a copy). Returns the (B, out) output,
  // valid until the next forward on that workspace. train selects training
  // mode (dropout active, batch statistics; buffers such as running statistics
  // are updated).
  const T* forward(Workspace<T>& ws, const T* x, idx B, idx in, bool train, bool copy_input);
  // dy is (B, out) for the last forward on ws; parameter gradients are
  // accumulated (or overwritten when accumulate is false) into grads (n_params(),
  // laid out as grads(); null: the model's own); dx is (B, in) or null.
  // Forward and backward on different workspaces (and gradient buffers) may run
  // concurrently when no layer updates buffers in that mode (see rows_independent).
  void backward(Workspace<T>& ws, const T* dy, T* dx, bool accumulate, T* grads = nullptr);

  // The same on the model's own workspace, in the model's mode.
  const T* forward(const T* x, idx B, idx in, bool copy_input) { return forward(ws_, x, B, in, training, copy_input); }
  void backward(const T* dy, T* dx, bool accumulate) { backward(ws_, dy, dx, accumulate); }
  // Throws unless ws holds a successful forward: value_error if there was none, runtime_error if it failed.
  static void check_backward(const Workspace<T>& ws);
  idx last_rows() const { return ws_.rows; }
  idx last_in() const { return ws_.in; }
  idx last_out() const { return ws_.width.empty() ? 0 : ws_.width.back(); }

  // forward (training mode when train) + loss + backward with the gradients
  // overwritten (zero_grad + backward); returns the loss. For full-batch solvers.
  double loss_and_grad(const T* x, idx B, idx in, const LossSpec<T>& loss, const std::int64_t* labels,
                       const T* target, bool train);
  // The forms of every layer's weights (Layer::form_words) into ws.forms_store (and ws.forms_ptrs), over up
  // to `threads` threads; returns ws.forms_ptrs' data (null: no layer has any), for the passes that share
  // them (Workspace::forms): passes of f.rows rows or more, f.train's mode, f.bf16's products.
  // f.dx: also the forms of the backward's dx products (after the first layer with parameters, as a
  // backward without dx has them); else only the forward's.
  const std::uint32_t* const* weight_forms(Workspace<T>& ws, const FormsFor& f, int threads) const;
  // Whether an eval-mode forward's first layer tells Workspace::probe whether its input is finite.
  bool probes_input(bool bf16) const { return n_layers() > 0 && layers_[0]->probes_input(false, bf16); }
  // Bytes of the buffers a forward-only workspace holds for B rows of `in` features.
  idx forward_bytes(idx B, idx in, bool bf16) const;
  // The model's own workspace (training) and its loss-gradient buffer, (B, out) after a forward.
  Workspace<T>& workspace() { return ws_; }
  T* dout() { return ws_.dout.data(); }

  // Shared by readers of the parameters, exclusive for every call that writes the parameters,
  // the gradients or the model's own workspace (see gate.h).
  Gate gate;

 private:
  void check_input(idx in) const;  // value_error unless the model takes `in` features
  struct Needs { idx act = 0, scratch = 0, bytes = 0, skip = 0, half = 0; };  // elements layer i needs for B rows
  Needs needs(idx i, idx B, const std::vector<idx>& width, bool bf16, bool forward_only) const;
  std::vector<idx> widths(idx in) const;  // width[i] = input width of layer i; width[L] = output width
  bool fits(const Workspace<T>& ws, idx B, idx in) const;
  void ensure_workspace(Workspace<T>& ws, idx B, idx in) const;
  LayerIO<T> io(const Workspace<T>& ws, idx i, idx B, T* gbuf) const;
  // Linear i is followed by an element-wise layer that finishes its product
  bool fused(idx i) const { return fused_[i]; }
  // ... which writes in place into the Linear's output
  bool in_place(idx i) const { return fused_[i] && !layers_[i + 1]->backward_needs_input(); }

  std::vector<Options> specs_;
  std::vector<std::unique_ptr<Layer<T>>> layers_;
  std::vector<ParamSlot> slots_, bslots_;
  std::vector<idx> param_offset_, buffer_offset_;  // per layer, -1 if it has none
  std::vector<idx> partner_;                       // residual_begin <-> residual_end
  std::vector<bool> fused_;
  idx in_features_ = -1;
  Buffer<T> params_, grads_, buffers_;
  Workspace<T> ws_;
};

}  // namespace fastmlp
