// A Sequential model: a list of layers whose parameters, gradients and
// per-batch activations live in buffers the model owns. Parameters and
// gradients are each one contiguous buffer, laid out as torch.nn.Sequential's
// state_dict: for every Linear, weight (out, in) then bias (out).
#pragma once
#include <cstdint>
#include <vector>

#include "activations.h"
#include "gate.h"
#include "init.h"
#include "losses.h"
#include "optimizers.h"

namespace fastmlp {

enum class LayerKind { Linear, Activation, Dropout };

struct LayerSpec {
  LayerKind kind = LayerKind::Activation;
  Act act = Act::Identity;  // Activation
  double param = 0;         // LeakyReLU negative_slope, Dropout p
  idx in = 0, out = 0;      // Linear
  bool bias = true;         // Linear
  InitSpec init;            // Linear weight (bias: LinearDefault -> +-1/sqrt(in), else zeros)
};

void check_layers(const std::vector<LayerSpec>& layers);

// Where one parameter tensor lives in the flat buffers.
struct ParamSlot {
  idx layer;    // index in the Sequential
  bool bias;    // weight or bias
  idx offset;   // into params()/grads()
  idx rows, cols;  // weight (out, in); bias (out, 1)
};

// Per-batch buffers of one forward/backward: each grown to what a batch needs
// when a larger batch (or another input width) first arrives, then reused, so
// a training step allocates nothing. cap_rows, cap_in and width describe what
// the buffers hold and change only once every allocation succeeded. Training uses the model's own; predict makes its own
// so that predictions can run concurrently.
template <class T>
struct Workspace {
  idx cap_rows = 0, cap_in = -1;
  std::vector<idx> width;                   // width[i] = input width of layer i; width[L] = output width
  std::vector<Buffer<T>> act;               // act[i] = output of layer i (rows, width[i + 1])
  std::vector<Buffer<std::uint8_t>> mask;   // dropout masks
  Buffer<T> grad_a, grad_b, input_copy, dout;
  // the last forward: its rows; -1 none yet, -2 it failed (its buffers may have been reallocated)
  idx rows = -1;
  std::vector<const T*> out;                // out[0] = input, out[i + 1] = output of layer i
  std::vector<bool> dropout_on;
};

template <class T>
class Model {
 public:
  Model(std::vector<LayerSpec> layers, std::uint64_t seed);

  // Re-initialise every Linear from seed (each layer's own init).
  void reset_parameters(std::uint64_t seed);

  const std::vector<LayerSpec>& layers() const { return layers_; }
  const std::vector<ParamSlot>& slots() const { return slots_; }
  idx n_params() const { return params_.size(); }
  T* params() { return params_.data(); }
  T* grads() { return grads_.data(); }
  // Input width the model needs (-1: any, no Linear), and the output width for an input width.
  idx in_features() const;
  idx out_features(idx in) const;

  bool training = true;
  bool has_dropout() const;
  std::uint64_t seed = 0;
  std::uint64_t dropout_calls = 0;  // forward passes in training mode: the dropout masks' stream
  std::uint64_t epochs_done = 0;    // epochs of fit: the shuffling stream

  // x is (B, in). The workspace keeps a pointer to x for backward unless
  // copy_input is set (then it keeps a copy). Returns the (B, out) output,
  // valid until the next forward on that workspace. Dropout is active when
  // train is set.
  const T* forward(Workspace<T>& ws, const T* x, idx B, idx in, bool train, bool copy_input);
  // dy is (B, out) for the last forward on ws; parameter gradients are
  // accumulated (or overwritten when accumulate is false) into grads (n_params(),
  // laid out as grads(); null: the model's own); dx is (B, in) or null.
  // Without dropout, forward and backward on different workspaces (and gradient
  // buffers) may run concurrently.
  void backward(Workspace<T>& ws, const T* dy, T* dx, bool accumulate, T* grads = nullptr);

  // The same on the model's own workspace, in the model's mode.
  const T* forward(const T* x, idx B, idx in, bool copy_input) { return forward(ws_, x, B, in, training, copy_input); }
  void backward(const T* dy, T* dx, bool accumulate) { backward(ws_, dy, dx, accumulate); }
  // Throws unless ws holds a successful forward: value_error if there was none, runtime_error if it failed.
  static void check_backward(const Workspace<T>& ws);
  idx last_rows() const { return ws_.rows; }
  idx last_out() const { return ws_.width.empty() ? 0 : ws_.width.back(); }

  // forward (dropout active when train) + loss + backward with the gradients
  // overwritten (zero_grad + backward); returns the loss. For full-batch solvers.
  double loss_and_grad(const T* x, idx B, idx in, const LossSpec<T>& loss, const std::int64_t* labels,
                       const T* target, bool train);
  // The model's own workspace (training) and its loss-gradient buffer, (B, out) after a forward.
  Workspace<T>& workspace() { return ws_; }
  T* dout() { return ws_.dout.data(); }

  // Shared by readers of the parameters, exclusive for every call that writes the parameters,
  // the gradients or the model's own workspace (see gate.h).
  Gate gate;

 private:
  void ensure_workspace(Workspace<T>& ws, idx B, idx in) const;
  bool fused(idx i) const;  // Linear i is followed by an activation fused into its epilogue
  bool in_place(idx i) const;  // ... which runs in place on the Linear's output

  std::vector<LayerSpec> layers_;
  std::vector<ParamSlot> slots_;
  std::vector<idx> weight_offset_, bias_offset_;  // per layer, -1 if none
  Buffer<T> params_, grads_;
  Workspace<T> ws_;
};

}  // namespace fastmlp
