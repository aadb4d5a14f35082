// fastmlp._core: the only Python-facing C++ file. It checks and converts
// arrays, releases the GIL around compute and maps C++ exceptions to Python
// ones. All numerics live in cpp/.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>

#include "blas.h"
#include "activations.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "init.h"
#include "losses.h"
#include "model.h"
#include "optimizers.h"
#include "pool.h"
#include "schedules.h"
#include "trainer.h"
#include "vmath.h"
#include <chrono>

namespace py = pybind11;
using namespace fastmlp;

namespace {

// ---------------------------------------------------------------- arrays
template <class T>
const char* dtype_name() { return sizeof(T) == 4 ? "float32" : "float64"; }

// The Python layer converts user input; here we only verify what it passes.
template <class T>
T* array_data(py::array& a, const char* what, bool writable) {
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().is(py::dtype::of<T>()))
    throw type_error(std::string(what) + " must be a " + dtype_name<T>() + " array, got " +
                     std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) throw value_error(std::string(what) + " must be C-contiguous");
  if (writable && !a.writeable()) throw value_error(std::string(what) + " is read-only");
  // inputs are only read, so read-only arrays are fine
  return writable ? static_cast<T*>(a.mutable_data()) : const_cast<T*>(static_cast<const T*>(a.data()));
}
// "auto", "amx", "avx512bf16", "avx512f", "avx2" or "emulation" -> the bfloat16 path, if this CPU runs it
Bf16Isa bf16_path(const std::string& isa) {
  Bf16Isa path;
  if (!bf16_isa_named(isa, path))
    throw value_error("isa must be " + bf16_isa_names() + ", got '" + isa + "'");
  if (!bf16_isa_available(path)) throw value_error("this CPU cannot run the '" + isa + "' kernel");
  return path;
}
// bfloat16 products (cpp/gemm_bf16.h) take float32 models only.
template <class T>
void check_bf16(bool bf16) {
  if (bf16 && sizeof(T) != 4) throw value_error("precision='bfloat16' needs a float32 model (this one is float64)");
}
const std::int64_t* label_data(py::array& a) {
  if (!a.dtype().is(py::dtype::of<std::int64_t>())) throw type_error("labels must be an int64 array");
  if (!(a.flags() & py::array::c_style)) throw value_error("labels must be C-contiguous");
  return const_cast<std::int64_t*>(static_cast<const std::int64_t*>(a.data()));
}
// A target as the kernels take it: int64 class labels, or floats of the model's dtype.
template <class T>
struct Target {
  const std::int64_t* labels = nullptr;
  const T* values = nullptr;
};
// y must hold B labels, or B * C values (C: the output width).
template <class T>
Target<T> target_of(py::array& y, idx B, idx C) {
  Target<T> t;
  if (y.dtype().is(py::dtype::of<std::int64_t>())) {
    if (y.ndim() != 1 || y.shape(0) != B)
      throw value_error("labels must have shape (" + std::to_string(B) + ",), one per row");
    t.labels = label_data(y);
  } else {
    if (static_cast<idx>(y.size()) != checked_mul(B, C) || (y.ndim() >= 1 && y.shape(0) != B))
      throw value_error("target must have shape (" + std::to_string(B) + ", " + std::to_string(C) +
                        "), the output's shape");
    t.values = array_data<T>(y, "target", false);
  }
  return t;
}

std::pair<idx, idx> rows_cols(const py::array& a, const char* what) {
  if (a.ndim() != 2) throw value_error(std::string(what) + " must be 2-D, got " + std::to_string(a.ndim()) + "-D");
  return {a.shape(0), a.shape(1)};
}

// Gradient clipping of fit/train_step: max_norm >= 0 and value >= 0 (inf: none).
Clip clip_of(double max_norm, double value) {
  if (!(max_norm >= 0)) throw value_error("clip_grad_norm must be a non-negative number, got " + std::to_string(max_norm));
  if (!(value >= 0)) throw value_error("clip_grad_value must be a non-negative number, got " + std::to_string(value));
  return Clip{max_norm, value};
}

// ---------------------------------------------------------------- dict configs
template <class V>
V get(const py::dict& d, const char* k, V dflt) {
  return d.contains(k) ? d[k].cast<V>() : dflt;
}

// The enum value named by `name` in a table of (name, value) pairs.
template <class E, size_t N>
E lookup(const std::string& name, const std::pair<const char*, E> (&table)[N], const char* what) {
  for (const auto& [k, v] : table)
    if (name == k) return v;
  throw value_error(std::string("unknown ") + what + " '" + name + "'");
}

// A spec dict as the engine's Options: numbers and bools as numbers (ints also
// exactly), strings as strings, nested dicts flattened with '.' ("init.name").
void flatten_options(const py::dict& d, const std::string& prefix, Options& o) {
  for (auto kv : d) {
    const std::string k = prefix + kv.first.cast<std::string>();
    py::handle v = kv.second;
    if (py::isinstance<py::dict>(v)) flatten_options(v.cast<py::dict>(), k + ".", o);
    else if (py::isinstance<py::str>(v)) o.str[k] = v.cast<std::string>();
    else if (py::isinstance<py::bool_>(v)) o.num[k] = v.cast<bool>() ? 1 : 0;
    else if (py::isinstance<py::int_>(v)) {
      o.num[k] = v.cast<double>();
      try { o.ints[k] = v.cast<std::int64_t>(); } catch (const py::cast_error&) {}
    } else if (py::isinstance<py::float_>(v)) o.num[k] = v.cast<double>();
    else if (!v.is_none()) throw type_error("layer argument '" + k + "' must be a number, a bool or a string");
  }
}

Options options_of(const py::dict& d) {
  Options o;
  flatten_options(d, "", o);
  auto it = o.str.find("kind");
  if (it == o.str.end()) throw value_error("a layer spec needs a 'kind'");
  o.kind = it->second;
  return o;
}

std::vector<Options> parse_layers(const py::list& layers) {
  std::vector<Options> out;
  for (auto item : layers) out.push_back(options_of(item.cast<py::dict>()));
  return out;
}

InitSpec parse_init(const py::dict& d) {
  Options o;
  flatten_options(d, "", o);
  return parse_init(o, "");
}

// 'none' trains on the mean of the per-sample losses (loss_forward handles 'none' itself);
// 'batchmean' (KLDivLoss) is 'mean' over the rows, set by parse_loss.
Reduction parse_reduction(const std::string& r) {
  if (r == "mean" || r == "none" || r == "batchmean") return Reduction::Mean;
  if (r == "sum") return Reduction::Sum;
  throw value_error("reduction must be 'none', 'mean' or 'sum', got '" + r + "'");
}

// A loss spec plus the arrays its pointers refer to (kept alive by the dict).
// rows: the rows the sample weights must cover; C: the output width (class weights).
template <class T>
LossSpec<T> parse_loss(const py::dict& d, idx rows, idx C) {
  LossSpec<T> s;
  static const std::pair<const char*, LossKind> names[] = {
      {"mse", LossKind::MSE}, {"l1", LossKind::L1}, {"huber", LossKind::Huber},
      {"cross_entropy", LossKind::CrossEntropy}, {"bce_with_logits", LossKind::BCEWithLogits},
      {"poisson_nll", LossKind::PoissonNLL}, {"nll", LossKind::NLL}, {"bce", LossKind::BCE},
      {"smooth_l1", LossKind::SmoothL1}, {"kl_div", LossKind::KLDiv}, {"gaussian_nll", LossKind::GaussianNLL},
      {"multilabel_soft_margin", LossKind::MultiLabelSoftMargin}};
  s.kind = lookup(d["kind"].cast<std::string>(), names, "loss");
  const std::string reduction = get<std::string>(d, "reduction", "mean");
  s.reduction = parse_reduction(reduction);
  s.batchmean = reduction == "batchmean";
  if (s.batchmean && s.kind != LossKind::KLDiv) throw value_error("reduction 'batchmean' is KLDivLoss's only");
  s.beta = get<double>(d, "beta", 1.0);
  s.log_target = get<bool>(d, "log_target", false);
  s.full = get<bool>(d, "full", false);
  if (!(s.beta >= 0) || !std::isfinite(s.beta)) throw value_error("beta must be a finite number >= 0");
  s.delta = get<double>(d, "delta", 1.0);
  s.label_smoothing = get<double>(d, "label_smoothing", 0.0);
  s.ignore_index = get<std::int64_t>(d, "ignore_index", -100);
  auto vec = [&](const char* key, idx n) -> const T* {
    if (!d.contains(key) || d[key].is_none()) return nullptr;
    py::array w = d[key].cast<py::array>();
    if (w.ndim() != 1 || static_cast<idx>(w.shape(0)) != n)
      throw value_error(std::string(key) + " must have shape (" + std::to_string(n) + ",)");
    return array_data<T>(w, key, false);
  };
  s.weight = vec("weight", C);
  s.pos_weight = vec("pos_weight", C);
  s.sample_weight = vec("sample_weight", rows);
  s.log_input = get<bool>(d, "log_input", true);
  s.eps = get<double>(d, "eps", 1e-8);
  s.scale = get<double>(d, "scale", 1.0);
  s.log_clip = get<double>(d, "log_clip", 0.0);
  s.l2 = get<double>(d, "l2", 0.0);
  if (!(s.log_clip >= 0 && s.log_clip < 0.5)) throw value_error("log_clip must be in [0, 0.5)");
  if (!(s.l2 >= 0) || !std::isfinite(s.l2)) throw value_error("l2 must be a finite number >= 0");
  return s;
}

OptimConfig parse_optim(const py::dict& d) {
  OptimConfig c;
  static const std::pair<const char*, OptimKind> names[] = {
      {"sgd", OptimKind::SGD}, {"adagrad", OptimKind::Adagrad}, {"rmsprop", OptimKind::RMSprop},
      {"adadelta", OptimKind::Adadelta}, {"adam", OptimKind::Adam}, {"adamw", OptimKind::AdamW},
      {"nadam", OptimKind::NAdam}, {"radam", OptimKind::RAdam}, {"adamax", OptimKind::Adamax},
      {"asgd", OptimKind::ASGD}};
  c.kind = lookup(d["kind"].cast<std::string>(), names, "optimizer");
  c.lr = get<double>(d, "lr", c.lr);
  c.weight_decay = get<double>(d, "weight_decay", c.weight_decay);
  c.momentum = get<double>(d, "momentum", c.momentum);
  c.dampening = get<double>(d, "dampening", c.dampening);
  c.nesterov = get<bool>(d, "nesterov", c.nesterov);
  c.maximize = get<bool>(d, "maximize", c.maximize);
  c.lr_decay = get<double>(d, "lr_decay", c.lr_decay);
  c.initial_accumulator_value = get<double>(d, "initial_accumulator_value", c.initial_accumulator_value);
  c.alpha = get<double>(d, "alpha", c.alpha);
  c.centered = get<bool>(d, "centered", c.centered);
  c.rho = get<double>(d, "rho", c.rho);
  if (d.contains("betas")) {
    auto b = d["betas"].cast<std::pair<double, double>>();
    c.beta1 = b.first;
    c.beta2 = b.second;
  }
  c.amsgrad = get<bool>(d, "amsgrad", c.amsgrad);
  c.decoupled_weight_decay = get<bool>(d, "decoupled_weight_decay", c.kind == OptimKind::AdamW);
  c.momentum_decay = get<double>(d, "momentum_decay", c.momentum_decay);
  c.lambd = get<double>(d, "lambd", c.lambd);
  c.t0 = get<double>(d, "t0", c.t0);
  c.eps = get<double>(d, "eps", c.eps);
  optim_check_config(c);
  c.sklearn_adam = get<bool>(d, "sklearn_adam", c.sklearn_adam);
  return c;
}

// ---------------------------------------------------------------- locks
// A hold on one or more models' gates for a Python `with` block: __enter__
// waits (GIL released) and takes them, __exit__ releases them.
struct PyHold {
  std::vector<Gate*> gates;  // sorted: several are always taken in the same order
  bool exclusive;
  py::object keep;  // what owns the gates
  void enter() {
    py::gil_scoped_release nogil;
    size_t n = 0;
    try {
      for (; n < gates.size(); ++n) gates[n]->lock(exclusive);
    } catch (...) {  // __exit__ does not run after a failed __enter__: release what was taken
      while (n > 0) gates[--n]->unlock(exclusive);
      throw;
    }
  }
  void exit() {
    for (auto it = gates.rbegin(); it != gates.rend(); ++it) (*it)->unlock(exclusive);
  }
};

// ---------------------------------------------------------------- model state kept by the binding
template <class T>
struct PyModel {
  Model<T> m;
  FitBuffers<T> fit_buffers;
  Snapshot<T> step_snapshot;  // train_step's undo copy
  FitBuffers<T> step_buffers;  // train_step's chunks (its own: a train_step may run between two of fit's steps)
  // predict's workspace for chunks of up to a few MB, kept between calls so that such a predict
  // allocates nothing; a predict that finds it taken (another thread's predict) makes its own
  std::mutex predict_mu;
  Workspace<T> predict_ws;
  std::atomic<long> fitting_pid{0};  // the process whose train_epoch uses fit_buffers (0: none)
  PyModel(const py::list& layers, std::uint64_t seed) : m(parse_layers(layers), seed) {}
};

// ---------------------------------------------------------------- optimizer
template <class T>
struct PyOptimizer {
  Optimizer<T> opt;
  // per group, per parameter: (p, g, n) before merging, for explicit gradients
  std::vector<std::vector<Segment<T>>> params;
  py::list keep;  // the arrays the raw pointers refer to
  std::vector<Gate*> gates;  // of the models whose parameters these are (sorted, no repeats)

  // groups: list of (config dict, [(param, grad or None), ...])
  explicit PyOptimizer(const py::list& groups) {
    for (auto item : groups) {
      auto pair = item.cast<py::tuple>();
      ParamGroup<T> g;
      g.config = parse_optim(pair[0].cast<py::dict>());
      std::vector<Segment<T>> ps;
      for (auto pg : pair[1].cast<py::list>()) {
        auto t = pg.cast<py::tuple>();
        py::array p = t[0].cast<py::array>();
        T* pd = array_data<T>(p, "parameter", true);
        const T* gd = nullptr;
        if (!t[1].is_none()) {
          py::array ga = t[1].cast<py::array>();
          gd = array_data<T>(ga, "gradient", false);
          if (ga.size() != p.size()) throw value_error("gradient and parameter sizes differ");
          keep.append(ga);
        }
        keep.append(p);
        // a model's parameter has the model at the end of its chain of bases (a view of a view, such as
        // p.data.view(dtype), has the first view as its own base)
        py::object base = p.base();
        while (base && py::isinstance<py::array>(base)) base = base.cast<py::array>().base();
        if (base && py::isinstance<PyModel<T>>(base)) gates.push_back(&base.cast<PyModel<T>&>().m.gate);
        ps.push_back({pd, gd, static_cast<idx>(p.size()), g.n_total});
        g.n_total = checked_add(g.n_total, static_cast<idx>(p.size()));
      }
      g.segments = merged(ps, {});
      g.reset_state();
      params.push_back(std::move(ps));
      opt.groups.push_back(std::move(g));
    }
    std::sort(gates.begin(), gates.end());
    gates.erase(std::unique(gates.begin(), gates.end()), gates.end());
  }

  // ps without those flagged in frozen (one flag each, or none), runs adjacent in memory (a
  // model's flat buffers) merged into one segment
  static std::vector<Segment<T>> merged(const std::vector<Segment<T>>& ps, const std::vector<bool>& frozen) {
    std::vector<Segment<T>> out;
    for (size_t k = 0; k < ps.size(); ++k) {
      const Segment<T>& s = ps[k];
      if (!frozen.empty() && frozen[k]) continue;
      if (!out.empty()) {
        Segment<T>& b = out.back();
        if (b.g && s.g && b.p + b.n == s.p && b.g + b.n == s.g && b.offset + b.n == s.offset) {
          b.n += s.n;
          continue;
        }
      }
      out.push_back(s);
    }
    return out;
  }

  // The frozen parameters (requires_grad False; one flag per parameter, in order, over all groups):
  // every later step() (opt.step, train_step, fit's C++ loop) leaves them and their state alone.
  void set_frozen(const std::vector<bool>& frozen) {
    size_t total = 0;
    for (const auto& ps : params) total += ps.size();
    if (frozen.size() != total) throw value_error("set_frozen needs one flag per parameter");
    size_t k = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      std::vector<bool> f(frozen.begin() + k, frozen.begin() + k + params[i].size());
      k += params[i].size();
      auto& g = opt.groups[i];
      g.has_frozen = std::find(f.begin(), f.end(), true) != f.end();
      g.live = g.has_frozen ? merged(params[i], f) : std::vector<Segment<T>>{};
    }
  }

  // Writes the models' parameters: exclusive, so a step from another thread during fit waits for a
  // batch boundary instead of racing fit's own step.
  void lock() {
    size_t n = 0;
    try {
      for (; n < gates.size(); ++n) gates[n]->lock(true);
    } catch (...) {
      while (n > 0) gates[--n]->unlock(true);
      throw;
    }
  }
  void unlock() {
    for (auto it = gates.rbegin(); it != gates.rend(); ++it) (*it)->unlock(true);
  }

  bool has_grads() const {
    for (const auto& g : opt.groups)
      for (const auto& s : g.segments)
        if (!s.g) return false;
    return true;
  }

  void step() {
    if (!has_grads()) throw value_error("these parameters have no .grad: pass the gradients, opt.step(grads)");
    py::gil_scoped_release nogil;
    lock();
    try {
      opt.step(pool_threads());
    } catch (...) {
      unlock();
      throw;
    }
    unlock();
  }

  // One step over the parameters flagged in active (one flag per parameter, in order, over all
  // groups), as torch skips a parameter whose .grad is None; a group with none is not stepped.
  void step_some(const std::vector<bool>& active) {
    if (!has_grads()) throw value_error("these parameters have no .grad: pass the gradients, opt.step(grads)");
    std::vector<std::vector<Segment<T>>> segs(params.size());
    size_t k = 0;
    for (size_t i = 0; i < params.size(); ++i)
      for (const auto& s : params[i]) {
        if (k >= active.size()) throw value_error("step_some needs one flag per parameter");
        if (active[k++]) segs[i].push_back(s);
      }
    if (k != active.size()) throw value_error("step_some needs one flag per parameter");
    py::gil_scoped_release nogil;
    lock();  // as step(): between two steps of a fit running in another thread
    try {
      for (size_t i = 0; i < segs.size(); ++i)
        if (!segs[i].empty()) opt.groups[i].step_with(segs[i], pool_threads());
    } catch (...) {
      unlock();
      throw;
    }
    unlock();
  }

  // grads: one array per parameter, in order, over all groups
  void step_with(const py::list& grads) {
    idx total = 0;
    for (const auto& ps : params) total += static_cast<idx>(ps.size());
    if (static_cast<idx>(grads.size()) != total)
      throw value_error("step(grads) needs " + std::to_string(total) + " gradients, got " + std::to_string(grads.size()));
    std::vector<std::vector<Segment<T>>> segs = params;
    std::vector<py::array> hold;
    idx k = 0;
    for (auto& ps : segs)
      for (auto& s : ps) {
        py::array ga = grads[k++].cast<py::array>();
        if (static_cast<idx>(ga.size()) != s.n)
          throw value_error("gradient " + std::to_string(k - 1) + " has " + std::to_string(ga.size()) +
                            " elements, its parameter " + std::to_string(s.n));
        s.g = array_data<T>(ga, "gradient", false);
        hold.push_back(ga);
      }
    py::gil_scoped_release nogil;
    lock();
    try {
      for (size_t i = 0; i < segs.size(); ++i) opt.groups[i].step_with(segs[i]);
    } catch (...) {
      unlock();
      throw;
    }
    unlock();
  }
};

// ---------------------------------------------------------------- model

template <class T>
py::array view_of(T* p, std::vector<idx> shape, py::handle base) {
  std::vector<py::ssize_t> sh(shape.begin(), shape.end()), st(shape.size());
  py::ssize_t s = sizeof(T);
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) { st[i] = s; s *= sh[i]; }
  return py::array_t<T>(sh, st, p, base);
}

// A tensor's shape in the state_dict: 0-D, 1-D or 2-D.
std::vector<idx> shape_of(const ParamSlot& sl) {
  if (sl.scalar) return {};
  return sl.vector ? std::vector<idx>{sl.rows} : std::vector<idx>{sl.rows, sl.cols};
}

template <class T>
void bind_dtype(py::module_& m, const char* suffix) {
  using PM = PyModel<T>;
  py::class_<PM>(m, (std::string("Model") + suffix).c_str())
      .def(py::init<const py::list&, std::uint64_t>())
      .def("reset_parameters", [](PM& s, std::uint64_t seed) {
        py::gil_scoped_release nogil;
        GateHold hold(s.m.gate, true);
        s.m.reset_parameters(seed);
      })
      .def_property("training", [](PM& s) { return s.m.training; }, [](PM& s, bool v) { s.m.training = v; })
      .def_property_readonly("seed", [](PM& s) { return s.m.seed; })
      .def_property("dropout_calls", [](PM& s) { return s.m.dropout_calls; },
                    [](PM& s, std::uint64_t v) { s.m.dropout_calls = v; })
      .def_property_readonly("n_params", [](PM& s) { return s.m.n_params(); })
      // every layer's rows independent in training (no BatchNorm on batch statistics): fit may split a batch
      .def_property_readonly("rows_independent", [](PM& s) { return s.m.rows_independent(true); })
      // the parameters whose gradients each of fit's chunks keeps (the others' are deferred: trainer.h)
      .def_property_readonly("chunked_params", [](PM& s) { return chunked_params(s.m); })
      .def("defers_grads", [](PM& s, idx rows) { return defers_grads(s.m, rows); }, py::arg("rows"))
      .def("in_features", [](PM& s) { return s.m.in_features(); })
      .def("out_features", [](PM& s, idx in) { return s.m.out_features(in); })
      .def("flat_params", [](py::object self) {
        PM& s = self.cast<PM&>();
        return view_of<T>(s.m.params(), {s.m.n_params()}, self);
      })
      .def("flat_grads", [](py::object self) {
        PM& s = self.cast<PM&>();
        return view_of<T>(s.m.grads(), {s.m.n_params()}, self);
      })
      // [(layer, is_bias, param view, grad view)]
      .def("parameters", [](py::object self) {
        PM& s = self.cast<PM&>();
        py::list out;
        for (const auto& sl : s.m.slots()) {
          const std::vector<idx> shape = shape_of(sl);
          out.append(py::make_tuple(sl.layer, sl.name, view_of<T>(s.m.params() + sl.offset, shape, self),
                                    view_of<T>(s.m.grads() + sl.offset, shape, self)));
        }
        return out;
      })
      // [(layer, name, buffer view)]: state_dict entries that are not trained
      .def("buffers", [](py::object self) {
        PM& s = self.cast<PM&>();
        py::list out;
        for (const auto& sl : s.m.buffer_slots())
          out.append(py::make_tuple(sl.layer, sl.name, view_of<T>(s.m.buffers() + sl.offset, shape_of(sl), self)));
        return out;
      })
      .def("forward", [](PM& s, py::array x, bool bf16) {
        auto [B, in] = rows_cols(x, "input");
        const T* xd = array_data<T>(x, "input", false);
        const idx out = s.m.out_features(in);
        check_bf16<T>(bf16);
        py::array_t<T> y({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(out)});
        T* yd = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          GateHold hold(s.m.gate, true);
          s.m.workspace().bf16 = bf16;
          const T* r = s.m.forward(xd, B, in, true);
          std::copy(r, r + B * out, yd);
        }
        return y;
      }, py::arg("x"), py::arg("bf16") = false)
      .def("backward", [](PM& s, py::array dy, bool want_dx) -> py::object {
        auto [B, C] = rows_cols(dy, "gradient");
        const T* dyd = array_data<T>(dy, "gradient", false);
        // without a Linear every layer keeps the width, so dx is as wide as dy
        const idx in = s.m.in_features() >= 0 ? s.m.in_features() : C;
        py::array_t<T> dx;
        T* dxd = nullptr;
        if (want_dx) {
          dx = py::array_t<T>({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(in)});
          dxd = dx.mutable_data();
        }
        {
          py::gil_scoped_release nogil;
          GateHold hold(s.m.gate, true);
          Model<T>::check_backward(s.m.workspace());
          if (B != s.m.last_rows() || C != s.m.last_out())
            throw value_error("gradient has shape (" + std::to_string(B) + ", " + std::to_string(C) +
                              ") but the last output had shape (" + std::to_string(s.m.last_rows()) + ", " +
                              std::to_string(s.m.last_out()) + ")");
          s.m.backward(dyd, dxd, true);
        }
        if (want_dx) return std::move(dx);
        return py::none();
      })
      // One epoch of mini-batch training; progress(batches, samples, loss) is called
      // at most every 0.1 s with the GIL held, and Ctrl-C stops at a batch boundary.
      // schedule: None, or (lr (batches, groups), momentum (batches, groups) or None, momentum is beta1)
      // bf16: the products in bfloat16 (cpp/gemm_bf16.h).
      // comm (fastmlp.distributed): None, or (stats, reduce_stats, reduce_grads, rank, steps) with stats a
      // float64 array of Collective::kStats and the reductions callables taking no arguments.
      // clip_norm, clip_value: gradient clipping before each step (inf: none); errors: the
      // training outputs' error sums abs_err, sq_err (a target y only); first, count: batches
      // [first, first + count) of the pass only (count -1: to its end)
      .def("train_epoch", [](PM& s, py::array x, py::array y, py::dict loss, PyOptimizer<T>& opt, idx batch,
                             bool shuffle, bool count_accuracy, py::object progress, int workers,
                             py::object schedule, bool bf16, double clip_norm, double clip_value, bool errors,
                             idx first, idx count, py::object comm) {
        check_bf16<T>(bf16);
        if (workers < 1) throw value_error("workers must be >= 1, got " + std::to_string(workers));
        const Clip clip = clip_of(clip_norm, clip_value);
        BatchSchedule sched;
        py::array_t<double, py::array::c_style | py::array::forcecast> sched_lr, sched_mom;
        if (!schedule.is_none()) {
          auto t = schedule.cast<py::tuple>();
          sched_lr = t[0].cast<decltype(sched_lr)>();
          const idx groups = static_cast<idx>(opt.opt.groups.size());
          if (sched_lr.ndim() != 2 || sched_lr.shape(1) != groups)
            throw value_error("the schedule's lr table must be (batches, " + std::to_string(groups) + ")");
          sched.lr = sched_lr.data();
          sched.batches = static_cast<idx>(sched_lr.shape(0));
          sched.groups = groups;
          if (!t[1].is_none()) {
            sched_mom = t[1].cast<decltype(sched_mom)>();
            if (sched_mom.ndim() != 2 || sched_mom.shape(0) != sched_lr.shape(0) || sched_mom.shape(1) != groups)
              throw value_error("the schedule's momentum table must have the lr table's shape");
            sched.momentum = sched_mom.data();
            sched.beta1 = t[2].cast<bool>();
          }
        }
        auto [N, in] = rows_cols(x, "X");
        Dataset<T> d;
        d.X = array_data<T>(x, "X", false);
        d.N = N;
        d.in = in;
        const idx C = s.m.out_features(in);
        const Target<T> t = target_of<T>(y, N, C);
        d.labels = t.labels;
        d.target = t.values;
        d.C = C;
        LossSpec<T> spec = parse_loss<T>(loss, N, C);
        if (!opt.has_grads()) throw value_error("fit needs an optimizer over this model's parameters");
        Collective coll;
        py::object reduce_stats, reduce_grads;
        py::array stats, flag;
        if (!comm.is_none()) {
          auto c = comm.cast<py::tuple>();
          stats = c[0].cast<py::array>();
          if (stats.size() != Collective::kStats) throw value_error("comm stats must hold " + std::to_string(Collective::kStats) + " values");
          coll.stats = array_data<double>(stats, "comm stats", true);
          reduce_stats = c[1];
          reduce_grads = c[2];
          coll.rank = c[3].cast<int>();
          coll.steps = c[4].cast<idx>();
          if (batch > 0 && (coll.steps < 0 || coll.steps > (N + batch - 1) / batch))
            throw value_error("comm steps must be in [0, ceil(N / batch)], got " + std::to_string(coll.steps));
          if (c.size() > 5) {  // the deferred Ctrl-C flag (one double), read at every reduction
            flag = c[5].cast<py::array>();
            if (flag.size() != 1) throw value_error("comm interrupt flag must hold 1 value");
            coll.interrupt = array_data<double>(flag, "comm interrupt flag", true);
          }
          // the GIL only for the call (fastmlp.distributed defers SIGINT, so no KeyboardInterrupt is raised inside)
          coll.reduce_stats = [&] { py::gil_scoped_acquire gil; reduce_stats(); };
          coll.reduce_grads = [&] { py::gil_scoped_acquire gil; reduce_grads(); };
        }
        // Ctrl-C: the KeyboardInterrupt, kept until the epoch returns (with comm, the other ranks stop at the next step)
        std::unique_ptr<py::error_already_set> interrupted;
        auto last = std::chrono::steady_clock::now();
        // Called after every step, between two batches: the model is consistent there, so threads
        // waiting for it get their turn, and Python code (the progress callback, a signal handler) runs
        // with the model's gate released, free to call the model itself.
        Progress cb = [&](idx batches, idx samples, double running) {
          s.m.gate.boundary();
          auto now = std::chrono::steady_clock::now();
          if (now - last < std::chrono::milliseconds(100)) return true;
          last = now;
          struct Reopen {  // releases the gate for the Python call, takes it back however that call ends
            Gate& g;
            explicit Reopen(Gate& gate) : g(gate) { g.release_all(); }
            ~Reopen() { g.retake(); }
          } reopen(s.m.gate);
          py::gil_scoped_acquire gil;
          if (PyErr_CheckSignals() != 0) {
            interrupted = std::make_unique<py::error_already_set>();
            return false;
          }
          if (!progress.is_none()) progress(batches, samples, running);
          return true;
        };
        const long pid = static_cast<long>(getpid());
        long none = 0;
        if (!s.fitting_pid.compare_exchange_strong(none, pid) && none == pid)
          throw std::runtime_error("this model is already training (fit is running in this or another thread)");
        s.fitting_pid = pid;  // (a fit of the parent process, copied by fork, does not run here)
        struct Done {
          std::atomic<long>& f;
          ~Done() { f = 0; }
        } done{s.fitting_pid};
        EpochStats st;
        {
          py::gil_scoped_release nogil;
          GateHold hold(s.m.gate, true);
          s.m.workspace().bf16 = bf16;
          st = train_epoch(s.m, d, spec, opt.opt, batch, shuffle, count_accuracy, s.fit_buffers, cb, workers,
                           schedule.is_none() ? nullptr : &sched, comm.is_none() ? nullptr : &coll, clip,
                           errors, first, count);
        }
        if (interrupted) throw *interrupted;
        py::dict out;
        out["loss"] = st.loss;
        out["l2_penalty"] = st.penalty;
        out["samples"] = st.samples;
        out["correct"] = st.correct;
        out["scored"] = st.scored;
        out["abs_err"] = st.abs_err;
        out["sq_err"] = st.sq_err;
        out["batches"] = st.batches;
        out["stopped"] = st.stopped;
        out["diverged"] = st.diverged;
        out["restored"] = st.restored;
        return out;
      }, py::arg("x"), py::arg("y"), py::arg("loss"), py::arg("opt"), py::arg("batch"), py::arg("shuffle"),
         py::arg("count_accuracy"), py::arg("progress"), py::arg("workers"), py::arg("schedule") = py::none(),
         py::arg("bf16") = false, py::arg("clip_norm") = INFINITY, py::arg("clip_value") = INFINITY,
         py::arg("errors") = false, py::arg("first") = 0, py::arg("count") = -1, py::arg("comm") = py::none())
      // threads > 0: OpenBLAS's and the pool's threads for the call (0: as they are)
      .def("predict", [](PM& s, py::array x, idx chunk, bool bf16, int threads) {
        check_bf16<T>(bf16);
        auto [N, in] = rows_cols(x, "X");
        const T* xd = array_data<T>(x, "X", false);
        const idx want = s.m.in_features();
        if (want >= 0 && in != want)
          throw value_error("X has " + std::to_string(in) + " features, but the model is expecting " + std::to_string(want) +
                            " features as input");
        const idx C = s.m.out_features(in);
        py::array_t<T> out({static_cast<py::ssize_t>(N), static_cast<py::ssize_t>(C)});
        T* od = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          ThreadsScope scope(threads);
          GateHold hold(s.m.gate, false);  // one set of weights for every chunk; other predicts run alongside
          // the kept workspace: for chunks whose buffers take at most 16 MiB (a 4096-row chunk of a
          // 256-wide net; a fresh one's pages cost about what its forward does)
          constexpr idx kKeptBytes = idx(16) << 20;
          std::unique_lock<std::mutex> kept(s.predict_mu, std::defer_lock);
          if (N > 0 && chunk > 0 && s.m.forward_bytes(std::min(N, chunk), in, bf16) <= kKeptBytes) kept.try_lock();
          Workspace<T> own;
          predict(s.m, xd, N, in, od, chunk, bf16, kept.owns_lock() ? s.predict_ws : own);
        }
        return out;
      }, py::arg("x"), py::arg("chunk"), py::arg("bf16") = false, py::arg("threads") = 0)
      // with model._core.hold(exclusive): the model's gate for a block of Python code
      .def("hold", [](py::object self, bool exclusive) {
        return PyHold{{&self.cast<PM&>().m.gate}, exclusive, self};
      })
      .def_property("epochs_done", [](PM& s) { return s.m.epochs_done; },
                    [](PM& s, std::uint64_t v) { s.m.epochs_done = v; })
      // forward + loss + backward over one batch, gradients overwritten; returns the loss
      .def("loss_and_grad", [](PM& s, py::array x, py::array y, py::dict loss, bool bf16) {
        check_bf16<T>(bf16);
        auto [B, in] = rows_cols(x, "input");
        const T* xd = array_data<T>(x, "input", false);
        const idx C = s.m.out_features(in);
        LossSpec<T> spec = parse_loss<T>(loss, B, C);
        const Target<T> t = target_of<T>(y, B, C);
        py::gil_scoped_release nogil;
        GateHold hold(s.m.gate, true);
        s.m.workspace().bf16 = bf16;
        return s.m.loss_and_grad(xd, B, in, spec, t.labels, t.values, s.m.training);
      }, py::arg("x"), py::arg("y"), py::arg("loss"), py::arg("bf16") = false)
      .def("train_step", [](PM& s, py::array x, py::array y, py::dict loss, PyOptimizer<T>& opt, bool bf16,
                            double clip_norm, double clip_value) {
        check_bf16<T>(bf16);
        const Clip clip = clip_of(clip_norm, clip_value);
        auto [B, in] = rows_cols(x, "input");
        const T* xd = array_data<T>(x, "input", false);
        const idx C = s.m.out_features(in);
        LossSpec<T> spec = parse_loss<T>(loss, B, C);
        const Target<T> t = target_of<T>(y, B, C);
        if (!opt.has_grads()) throw value_error("train_step needs an optimizer over this model's parameters");
        py::gil_scoped_release nogil;
        GateHold hold(s.m.gate, true);
        s.m.workspace().bf16 = bf16;
        return train_step(s.m, xd, B, in, spec, t.labels, t.values, opt.opt, s.step_snapshot, clip, s.step_buffers);
      }, py::arg("x"), py::arg("y"), py::arg("loss"), py::arg("opt"), py::arg("bf16") = false,
         py::arg("clip_norm") = INFINITY, py::arg("clip_value") = INFINITY);

  using PO = PyOptimizer<T>;
  py::class_<PO>(m, (std::string("Optimizer") + suffix).c_str())
      .def(py::init<const py::list&>())
      .def("step", &PO::step)
      .def("step_with", &PO::step_with)
      .def("step_some", &PO::step_some)
      .def("set_frozen", &PO::set_frozen)
      .def_property_readonly("n_groups", [](PO& s) { return s.opt.groups.size(); })
      // the gates of the models whose parameters it updates (none for plain arrays)
      .def("hold", [](py::object self, bool exclusive) { return PyHold{self.cast<PO&>().gates, exclusive, self}; })
      .def("set_config", [](PO& s, size_t i, py::dict d) { s.opt.groups.at(i).config = parse_optim(d); })
      .def("get_step", [](PO& s, size_t i) { return s.opt.groups.at(i).step; })
      .def("set_step", [](PO& s, size_t i, std::int64_t v) { s.opt.groups.at(i).step = v; })
      .def("get_lr", [](PO& s, size_t i) { return s.opt.groups.at(i).config.lr; })
      .def("get_momentum_ready", [](PO& s, size_t i) { return s.opt.groups.at(i).momentum_ready; })
      .def("set_momentum_ready", [](PO& s, size_t i, bool v) { s.opt.groups.at(i).momentum_ready = v; })
      .def("get_mu_product", [](PO& s, size_t i) { return s.opt.groups.at(i).mu_product; })
      .def("set_mu_product", [](PO& s, size_t i, double v) { s.opt.groups.at(i).mu_product = v; })
      // (slots, n_total) view of a group's state
      .def("state", [](py::object self, size_t i) {
        PO& s = self.cast<PO&>();
        auto& g = s.opt.groups.at(i);
        return view_of<T>(g.state.data(), {optim_state_slots(g.config.kind), g.n_total}, self);
      })
      .def("reset_state", [](PO& s) { for (auto& g : s.opt.groups) g.reset_state(); });

  // reduction 'none': the per-sample losses go to a new array (PyTorch's shape, 2-D as
  // (B, C) / (B, C / 2) or 1-D (B)), returned third; the gradient is each sample's own
  m.def((std::string("loss_forward") + suffix).c_str(), [](py::dict spec, py::array out, py::array y, bool want_grad) {
    auto [B, C] = rows_cols(out, "input");
    LossSpec<T> sp = parse_loss<T>(spec, B, C);
    py::object values = py::none();
    if (get<std::string>(spec, "reduction", "mean") == "none") {
      sp.reduction = Reduction::Sum;
      const bool rows = sp.kind == LossKind::CrossEntropy || sp.kind == LossKind::NLL ||
                        sp.kind == LossKind::MultiLabelSoftMargin;
      py::array_t<T> v = rows ? py::array_t<T>(static_cast<py::ssize_t>(B))
                              : py::array_t<T>({static_cast<py::ssize_t>(B),
                                                static_cast<py::ssize_t>(sp.kind == LossKind::GaussianNLL ? C / 2 : C)});
      sp.values = v.mutable_data();
      values = v;
    }
    const T* od = array_data<T>(out, "input", false);
    const Target<T> t = target_of<T>(y, B, C);
    py::array_t<T> g;
    T* gd = nullptr;
    if (want_grad) {
      g = py::array_t<T>({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(C)});
      gd = g.mutable_data();
    }
    double v;
    {
      py::gil_scoped_release nogil;
      v = loss_forward(sp, od, B, C, t.labels, t.values, gd);
    }
    py::object grad = want_grad ? py::object(g) : py::object(py::none());
    if (values.is_none()) return py::tuple(py::make_tuple(v, grad));
    return py::tuple(py::make_tuple(v, grad, values));
  });
  // (correct, scored): rows labelled ignore_index are not scored
  m.def((std::string("count_correct") + suffix).c_str(), [](py::array out, py::array y, std::int64_t ignore_index) {
    auto [B, C] = rows_cols(out, "output");
    const T* od = array_data<T>(out, "output", false);
    const Target<T> t = target_of<T>(y, B, C);
    for (idx r = 0; t.labels && r < B; ++r)
      if (t.labels[r] != ignore_index && (t.labels[r] < 0 || t.labels[r] >= std::max<idx>(C, 2)))
        throw value_error("label " + std::to_string(t.labels[r]) + " is out of range for " + std::to_string(C) + " outputs");
    idx scored = 0;
    const idx correct = count_correct<T>(od, B, C, t.labels, t.values, ignore_index, scored);
    return py::make_tuple(correct, scored);
  });
  // Test and benchmark hook: the forward product y = x w^T (+ b) on a chosen kernel path,
  // or on OpenBLAS ("openblas": sgemm/dgemm with `threads` threads, then + b).
  m.def((std::string("dense_forward") + suffix).c_str(), [](py::array x, py::array w, py::object b,
                                                            const std::string& isa, int threads) {
    auto [B, in] = rows_cols(x, "x");
    auto [out, win] = rows_cols(w, "w");
    if (win != in) throw value_error("w has " + std::to_string(win) + " columns, x " + std::to_string(in));
    const T* xd = array_data<T>(x, "x", false);
    const T* wd = array_data<T>(w, "w", false);
    const T* bd = nullptr;
    py::array ba;
    if (!b.is_none()) {
      ba = b.cast<py::array>();
      if (ba.ndim() != 1 || ba.shape(0) != out) throw value_error("b must have shape (" + std::to_string(out) + ",)");
      bd = array_data<T>(ba, "b", false);
    }
    py::array_t<T> y({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(out)});
    T* yd = y.mutable_data();
    if (isa == "openblas") {
      py::gil_scoped_release nogil;
      blas_set_num_threads(threads);
      gemm<T>(false, true, B, out, in, T(1), xd, in, wd, in, T(0), yd, out);
      if (bd) bias_identity_forward(yd, bd, B, out);
      return y;
    }
    const GemmIsa path = isa == "auto" ? GemmIsa::Auto : isa == "avx512" ? GemmIsa::Avx512
                         : isa == "avx2" ? GemmIsa::Avx2 : isa == "reference" ? GemmIsa::Reference
                         : throw value_error("isa must be 'auto', 'avx512', 'avx2' or 'reference', got '" + isa + "'");
    if (!gemm_isa_available(path)) throw value_error("this CPU cannot run the '" + isa + "' kernel");
    py::gil_scoped_release nogil;
    dense_forward<T>(xd, wd, bd, yd, B, in, out, threads, path);
    return y;
  });
  // x[...] = f(x) for f a function of cpp/vmath.h, in place (tests/test_vmath.py checks them)
  m.def((std::string("vmath") + suffix).c_str(), [](const std::string& f, py::array x) {
    T* d = array_data<T>(x, "x", true);
    T (*fn)(T) = f == "exp" ? &vexp<T> : f == "expm1" ? &vexpm1<T> : f == "tanh" ? &vtanh<T> : f == "log1p"
                 ? &vlog1p<T> : f == "erf" ? static_cast<T (*)(T)>(&verf) : nullptr;
    if (!fn) throw value_error("unknown vmath function '" + f + "'");
    for (py::ssize_t i = 0; i < x.size(); ++i) d[i] = fn(d[i]);
  });
  m.def((std::string("init_fill") + suffix).c_str(), [](py::array w, py::dict spec, idx fan_in, idx fan_out, std::uint64_t seed) {
    T* wd = array_data<T>(w, "tensor", true);
    InitSpec s = parse_init(spec);
    py::gil_scoped_release nogil;
    init_fill(s, wd, static_cast<idx>(w.size()), fan_in, fan_out, seed);
  });
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastmlp's C++ engine (private: use the fastmlp package)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const type_error& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const numeric_error& e) {
      PyErr_SetString(PyExc_FloatingPointError, e.what());
    }
  });
  py::class_<PyHold>(m, "Hold")
      .def("__enter__", [](PyHold& h) { h.enter(); })
      .def("__exit__", [](PyHold& h, py::args) { h.exit(); return false; });
  bind_dtype<float>(m, "32");
  bind_dtype<double>(m, "64");

  m.def("optim_state_slots", [](py::dict cfg) { return optim_state_slots(parse_optim(cfg).kind); });
  m.def("check_optim", [](py::dict cfg) { parse_optim(cfg); });
  m.def("check_layers", [](py::list layers) { Model<double> check(parse_layers(layers), 0, false); });
  m.def("layer_kinds", &layer_kinds);
  // [(layer, name, shape, is_buffer)] of the parameters, then the buffers, a model of these layers
  // has, without allocating them
  m.def("layer_tensors", [](py::list layers) {
    Model<double> check(parse_layers(layers), 0, false);
    py::list out;
    for (const auto& sl : check.slots()) out.append(py::make_tuple(sl.layer, sl.name, py::tuple(py::cast(shape_of(sl))), false));
    for (const auto& sl : check.buffer_slots())
      out.append(py::make_tuple(sl.layer, sl.name, py::tuple(py::cast(shape_of(sl))), true));
    return out;
  });
  m.def("calculate_gain", &calculate_gain, py::arg("nonlinearity"), py::arg("param") = 0.0);
  m.def("blas_set_num_threads", &blas_set_num_threads);
  m.def("blas_get_num_threads", &blas_get_num_threads);
  m.def("batch_chunks", &batch_chunks, py::arg("rows"), py::arg("n_params"), py::arg("elem_size"), py::arg("kept") = -1);
  m.def("blas_core_name", &blas_core_name);
  m.def("gemm_isa_available", [](const std::string& isa) {
    return isa == "avx512" ? gemm_isa_available(GemmIsa::Avx512) : isa == "avx2" ? gemm_isa_available(GemmIsa::Avx2)
                                                                                   : isa == "reference";
  });
  m.def("blas_config", &blas_config);
  // Test and benchmark hooks of cpp/gemm_bf16.h (float32 in and out).
  m.def("bf16_isa_available", [](const std::string& isa) {
    Bf16Isa path;
    return bf16_isa_named(isa, path) && bf16_isa_available(path);
  });
  // the path "auto" takes on this CPU (FASTMLP_BF16_ISA included)
  m.def("bf16_auto_path", [] { return std::string(bf16_isa_name(bf16_resolve(Bf16Isa::Auto))); });
  // x (rows, cols) -> its bfloat16 words (bf16x2) in a layout of gemm_bf16.h: "rows" (rows, pairs(cols)),
  // "pairs" (pairs(rows), cols), "panels" (panels(cols), pairs(rows), NR), "panels_of_rows" (panels(rows),
  // pairs(cols), NR); on a chosen path (bf16_path's names; "amx" converts as "avx512bf16")
  m.def("to_bf16", [](py::array x, const std::string& layout, const std::string& isa, int threads) {
    auto [rows, cols] = rows_cols(x, "x");
    const float* xd = array_data<float>(x, "x", false);
    const Bf16Isa path = bf16_path(isa);
    std::vector<py::ssize_t> shape;
    if (layout == "rows") shape = {rows, bf16_pairs(cols)};
    else if (layout == "pairs") shape = {bf16_pairs(rows), cols};
    else if (layout == "panels") shape = {bf16_panels(cols), bf16_pairs(rows), kBf16NR};
    else if (layout == "panels_of_rows") shape = {bf16_panels(rows), bf16_pairs(cols), kBf16NR};
    else throw value_error("layout must be 'rows', 'pairs', 'panels' or 'panels_of_rows', got '" + layout + "'");
    py::array_t<std::uint32_t> out(shape);
    bf16x2* od = out.mutable_data();
    py::gil_scoped_release nogil;
    if (layout == "rows") bf16_rows(xd, rows, cols, od, path, threads);
    else if (layout == "pairs") bf16_pairs(xd, rows, cols, cols, od, path, threads);
    else if (layout == "panels") bf16_pairs(xd, rows, cols, kBf16NR, od, path, threads);
    else bf16_panels_of_rows(xd, rows, cols, od, path, threads);
    return out;
  }, py::arg("x"), py::arg("layout"), py::arg("isa") = "auto", py::arg("threads") = 1);
  // c = bf16(x) bf16(w) (+ b) on a chosen path, with the operand layouts of the engine's three products:
  // form "nt" c = x w^T (forward: x rows, w^T panels), "nn" c = x w (dx: x rows, w pair panels),
  // "tn" c = x^T w (dw: x pairs, w pair panels)
  // (repeats: the conversions and the product run that many times, for bench/bf16_speed.py's timings)
  m.def("gemm_bf16", [](py::array x, py::array w, py::object b, const std::string& isa, int threads,
                        const std::string& form, int repeats) {
    auto [xr, xc] = rows_cols(x, "x");
    auto [wr, wc] = rows_cols(w, "w");
    if (form != "nt" && form != "nn" && form != "tn")
      throw value_error("form must be 'nt', 'nn' or 'tn', got '" + form + "'");
    const idx M = form == "tn" ? xc : xr, K = form == "tn" ? xr : xc, N = form == "nt" ? wr : wc;
    const idx wk = form == "nt" ? wc : wr;
    if (wk != K) throw value_error("w has " + std::to_string(wk) + " rows or columns to sum over, x " + std::to_string(K));
    if (threads < 1 || repeats < 1) throw value_error("threads and repeats must be >= 1");
    const float* xd = array_data<float>(x, "x", false);
    const float* wd = array_data<float>(w, "w", false);
    const float* bd = nullptr;
    py::array ba;
    if (!b.is_none()) {
      ba = b.cast<py::array>();
      if (ba.ndim() != 1 || ba.shape(0) != N) throw value_error("b must have shape (" + std::to_string(N) + ",)");
      bd = array_data<float>(ba, "b", false);
    }
    const Bf16Isa path = bf16_path(isa);
    py::array_t<float> y({static_cast<py::ssize_t>(M), static_cast<py::ssize_t>(N)});
    float* yd = y.mutable_data();
    py::gil_scoped_release nogil;
    const idx P = bf16_pairs(K);
    std::vector<bf16x2> xb(static_cast<std::size_t>(std::max(M * P, idx(1)))),
        wb(static_cast<std::size_t>(std::max(bf16_panel_words(K, N), idx(1))));
    for (int r = 0; r < repeats; ++r) {
      if (form == "tn") bf16_pairs(xd, K, M, M, xb.data(), path, threads);
      else bf16_rows(xd, M, K, xb.data(), path, threads);
      if (form == "nt") bf16_panels_of_rows(wd, N, K, wb.data(), path, threads);
      else bf16_pairs(wd, K, N, kBf16NR, wb.data(), path, threads);
      if (form == "tn") gemm_bf16(xb.data(), 1, M, wb.data(), bd, yd, M, N, K, false, threads, path);
      else gemm_bf16(xb.data(), P, 1, wb.data(), bd, yd, M, N, K, false, threads, path);
    }
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("isa") = "auto", py::arg("threads") = 1,
     py::arg("form") = "nt", py::arg("repeats") = 1);
}
