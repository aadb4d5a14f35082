// Loss functions with PyTorch's definitions. Each computes the scalar loss
// and, when dout is given, writes dL/dout in the same pass.
#pragma once
#include <cstdint>

#include "common.h"

namespace fastmlp {

enum class LossKind {
  MSE, L1, Huber, CrossEntropy, BCEWithLogits, PoissonNLL,
  NLL, BCE, SmoothL1, KLDiv, GaussianNLL, MultiLabelSoftMargin
};

template <class T>
struct LossSpec {
  LossKind kind = LossKind::MSE;
  Reduction reduction = Reduction::Mean;
  double delta = 1.0;            // HuberLoss
  double label_smoothing = 0.0;  // CrossEntropyLoss
  std::int64_t ignore_index = -100;  // CrossEntropyLoss / NLLLoss with class labels
  const T* weight = nullptr;      // (C) class weights of CrossEntropyLoss / NLLLoss, per-column weights of
                                  // BCELoss / BCEWithLogitsLoss / MultiLabelSoftMarginLoss, or null
  const T* pos_weight = nullptr;  // (C) positive-class weights of BCEWithLogitsLoss, or null
  bool log_input = true;          // PoissonNLLLoss: the input is log(rate)
  double eps = 1e-8;              // PoissonNLLLoss with log_input false; GaussianNLLLoss's variance clamp
  double beta = 1.0;              // SmoothL1Loss
  bool log_target = false;        // KLDivLoss: the target is log-probabilities
  bool batchmean = false;         // KLDivLoss 'batchmean': reduction Mean divides by the rows, not the elements
  bool full = false;              // GaussianNLLLoss: add 0.5 log(2 pi)
  // Reduction 'none' (run with reduction Sum): when set, each sample's term of the sum is written here,
  // PyTorch's shape: (B, C) element-wise, (B) for row losses (cross-entropy, NLL, MultiLabelSoftMargin),
  // (B, C / 2) for GaussianNLLLoss. dout is then d(sum)/dout, each sample's own gradient.
  T* values = nullptr;
  // Extensions beyond PyTorch (used by the scikit-learn estimators):
  const T* sample_weight = nullptr;  // (B) per-row weights: 'mean' becomes the weighted mean over rows
  double scale = 1.0;                // multiplies the loss and its gradient (e.g. 0.5 for half squared error)
  double log_clip = 0;  // > 0: the reported value of cross-entropy / BCE takes probabilities clipped to
                        // [log_clip, 1 - log_clip], as scikit-learn's log_loss (the gradient is not clipped)
  double l2 = 0;        // train_epoch only: scikit-learn's alpha, an L2 penalty 0.5 l2 |W|^2 / (the batch's
                        // weight sum) on every Linear weight (not biases), added to the gradient and
                        // reported apart from the loss
};

// out is (B, C). GaussianNLLLoss: out is (B, 2D), the means then the variances, and
// target (B, 2D) of which only the first D columns are read. With sample weights w, 'mean' is sum_r w_r l_r / sum_r w_r,
// where l_r is the row's mean over its C elements (cross-entropy: the row's
// loss, its class weight folded into w_r). The target is either labels, (B) class indices (cross-entropy
// only), or target, (B, C) values / class probabilities. dout is (B, C) or
// null. Bad labels throw before anything is written.
template <class T>
double loss_forward(const LossSpec<T>& spec, const T* out, idx B, idx C, const std::int64_t* labels,
                    const T* target, T* dout);

// The denominator of reduction 'mean' over a batch of B rows (1 for 'sum'):
// the sum of the rows' weights (cross-entropy with labels: times their class
// weights, ignored rows left out; element-wise losses: times C). A batch split
// in parts gives the whole batch's loss and gradient when each part runs with
// reduction 'sum' and scale / denominator. Out-of-range labels count 0 (the
// loss itself rejects them).
template <class T>
double loss_mean_denominator(const LossSpec<T>& spec, idx B, idx C, const std::int64_t* labels);

// Number of rows of out whose argmax equals the label (or the argmax of the
// target row), for accuracy. out is (B, C); for C == 1, a logit > 0 is class 1.
// Rows labelled ignore_index are not scored; scored counts the rows that are.
template <class T>
idx count_correct(const T* out, idx B, idx C, const std::int64_t* labels, const T* target,
                  std::int64_t ignore_index, idx& scored);

}  // namespace fastmlp
