// A Sequential model: a list of layers whose parameters, gradients and
// per-batch activations live in buffers the model owns. Parameters and
// gradients are each one contiguous buffer, laid out as torch.nn.Sequential's
// state_dict: for every Linear, weight (out, in) then bias (out).
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "activations.h"
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
  std::uint64_t seed = 0;
  std::uint64_t dropout_calls = 0;  // forward passes in training mode: dropout masks' stream

  // x is (B, in). The model keeps a pointer to x for backward unless
  // copy_input is set (then it keeps a copy). Returns the (B, out) output,
  // valid until the next forward.
  const T* forward(const T* x, idx B, idx in, bool copy_input);
  // dy is (B, out) for the last forward; parameter gradients are accumulated
  // (or overwritten when accumulate is false); dx is (B, in) or null.
  void backward(const T* dy, T* dx, bool accumulate);
  // Shape of the last forward: rows (-1 if none yet), input and output widths.
  idx last_rows() const { return last_B_; }
  idx last_in() const { return cap_in_; }
  idx last_out() const { return width_.empty() ? 0 : width_.back(); }

  // zero_grad + forward (training mode) + loss + backward + optimizer step,
  // on x (B, in) and labels (B) or target (B, out). Returns the loss before the step.
  double train_step(const T* x, idx B, idx in, const LossSpec<T>& loss, const std::int64_t* labels,
                    const T* target, Optimizer<T>& opt);

  // Serialises compute on this model (workspace and caches are shared).
  std::mutex mutex;

 private:
  void ensure_workspace(idx B, idx in);

  std::vector<LayerSpec> layers_;
  std::vector<ParamSlot> slots_;
  std::vector<idx> weight_offset_, bias_offset_;  // per layer, -1 if none
  Buffer<T> params_, grads_;

  // per-batch workspace, grown when a larger batch first arrives
  idx cap_rows_ = 0, cap_in_ = -1;
  std::vector<idx> width_;             // width_[i] = input width of layer i; width_[L] = output width
  std::vector<Buffer<T>> act_;         // act_[i] = output of layer i (B, width_[i + 1])
  std::vector<Buffer<std::uint8_t>> mask_;  // dropout masks
  Buffer<T> grad_a_, grad_b_, input_copy_, dout_;
  // the last forward
  idx last_B_ = -1;
  std::vector<const T*> out_ptr_;      // out_ptr_[0] = input, out_ptr_[i + 1] = output of layer i
  std::vector<bool> last_dropout_on_;
};

}  // namespace fastmlp
