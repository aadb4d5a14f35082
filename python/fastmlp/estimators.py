"""scikit-learn estimators: ``fastmlp.MLPClassifier`` and ``fastmlp.MLPRegressor``.

Drop-in replacements for :class:`sklearn.neural_network.MLPClassifier` and
:class:`sklearn.neural_network.MLPRegressor`: the same constructor parameters
(names, defaults, meaning), fitted attributes and methods, with the training
running in fastmlp's C++ engine. Requires the ``sklearn`` extra
(``pip install fastmlp[sklearn]``: scikit-learn and SciPy).

What follows scikit-learn exactly
    The network (hidden layers of ``hidden_layer_sizes``; softmax + cross-entropy
    for multiclass targets, one logistic unit per label + binary cross-entropy
    for binary and multilabel targets, identity + half squared error or
    exp + half Poisson deviance for regression), the weight initialisation
    (Glorot uniform drawn from ``random_state`` in scikit-learn's order), the L2
    penalty ``0.5 * alpha * ||W||^2 / (the batch's weight sum)`` on the weights
    of every batch, Adam's update (``epsilon`` before the bias correction), the
    log-loss clipped at the dtype's epsilon in ``loss_curve_``,
    the SGD velocity rule (momentum, Nesterov), the learning-rate schedules
    ('constant', 'invscaling', 'adaptive'), ``tol``/``n_iter_no_change``
    convergence, ``early_stopping`` with a ``validation_fraction`` split,
    ``warm_start``, ``partial_fit`` and L-BFGS through ``scipy.optimize``.

Known small differences
    The rows are shuffled by fastmlp's
    generator (seeded from ``random_state``), not NumPy's; the
    ``early_stopping`` split is stratified for binary and multiclass targets
    (as scikit-learn documents), not only for binary ones (multiclass targets
    with a class too small to stratify are split as scikit-learn splits them).
    For several regression outputs the L-BFGS objective is the one whose
    gradient scikit-learn uses (half squared error summed over outputs);
    ``loss_`` is reported as scikit-learn reports it (averaged over outputs).
    The network's precision is ``dtype``, not X's dtype. ``warm_start`` and
    ``partial_fit`` raise when ``hidden_layer_sizes``, ``activation``,
    ``dropout``, ``normalization`` or ``residual`` changed; masked arrays
    with masked entries raise (scikit-learn uses the values under the mask);
    class weights must be finite and >= 0.

Beyond scikit-learn
    ``dropout`` (after every hidden activation, or a list with one rate per
    hidden layer), ``activation`` as a list (one per hidden layer),
    ``normalization`` ('batch' or 'layer') and ``residual`` blocks,
    ``class_weight`` (classifier), the solvers 'rmsprop', 'adagrad',
    'adadelta' and 'adamw', a user validation set ``fit(X, y, X_val=...,
    y_val=...)`` with ``validation_scores_`` and ``validation_loss_curve_``,
    ``dtype`` ('float32', the default, or 'float64'), ``precision``
    ('float32' or 'bfloat16' products) and ``n_threads``.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from .nn import loss as _losses
from . import optim as _optim
from ._mlp import ACTIVATIONS as _ACTIVATIONS
from ._mlp import NORMALIZATIONS as _NORMALIZATIONS
from ._mlp import mlp_layers, residual_flags
from .nn import Dropout, Linear, Residual, Sequential

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

__all__ = ["MLPClassifier", "MLPRegressor"]
_STOCHASTIC_SOLVERS = ("sgd", "adam", "rmsprop", "adagrad", "adadelta", "adamw")


def _validate_data(est: Any, *args: Any, **kwargs: Any) -> Any:
    if _sk_validate_data is not None:
        return _sk_validate_data(est, *args, **kwargs)
    return est._validate_data(*args, **kwargs)  # pragma: no cover


def _dense(X: Any) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else X


def _as_dtype(a: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """a as a C-contiguous array of dtype; finite values beyond float32's range raise (the cast
    would make them infinite)."""
    with np.errstate(over="raise"):
        try:
            return np.ascontiguousarray(a, dtype=dtype)
        except FloatingPointError:
            raise ValueError(f"{name} has values beyond the float32 range (magnitudes above "
                             f"{np.finfo(np.float32).max:.4g}): use dtype='float64', or scale the data") from None


def _reject_masked(**arrays: Any) -> None:
    """Raise for masked arrays with masked entries: the estimators cannot honour a mask.
    (scikit-learn's MLP silently uses the values under it.)"""
    for name, a in arrays.items():
        if isinstance(a, np.ma.MaskedArray) and np.ma.is_masked(a):
            raise ValueError(f"{name} is a masked array with {np.ma.count_masked(a)} masked entries, which the "
                             f"estimators cannot honour: fill them ({name}.filled(value)) or impute them "
                             "(sklearn.impute.SimpleImputer) first")


def _check_sample_weight(sample_weight: Any, n: int) -> np.ndarray | None:
    """(n,) float64 weights: finite, >= 0, not all zero (None stays None)."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        w: np.ndarray = np.full(n, np.asarray(sample_weight, dtype=np.float64))
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"sample_weight.shape == {w.shape}, expected {(n,)}!")
    if not np.isfinite(w).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if (w < 0).any():
        raise ValueError("Negative values in data passed to sample_weight")
    if n and not w.any():
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return w


def _balanced_weights(y: np.ndarray, sw: np.ndarray | None) -> np.ndarray:
    """class_weight='balanced' per sample: sum(w) / (n_classes * sum of w in the class),
    with the sample weights w counted as repetitions (classes of zero weight do not count);
    the product over the columns of a multilabel y."""
    cols = y.reshape(len(y), -1) if np.ndim(y) == 2 else np.asarray(y).reshape(-1, 1)
    w = np.ones(cols.shape[0]) if sw is None else sw
    out = np.ones(cols.shape[0])
    for j in range(cols.shape[1]):
        _, inv = np.unique(cols[:, j], return_inverse=True)
        inv = inv.ravel()
        wc = np.bincount(inv, weights=w)
        present = wc > 0
        per_class = np.zeros(len(wc))
        per_class[present] = w.sum() / (present.sum() * wc[present])
        out *= per_class[inv]
    return out


def _logistic(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _weighted_mean(v: np.ndarray, sw: np.ndarray | None) -> np.ndarray:
    """Mean over rows (axis 0), weighted by sw."""
    return np.average(v, weights=sw, axis=0)


# ---- the engine's losses with scikit-learn's extras: a scale factor (half squared error,
# sums over outputs), the L2 penalty applied per batch, log-loss clipping in the reported value
class _Extras:
    _extras: dict = {}

    def _spec(self, dtype: np.dtype) -> dict:
        spec = super()._spec(dtype)  # type: ignore[misc]
        spec.update(self._extras)
        return spec


class _MSELoss(_Extras, _losses.MSELoss):
    pass


class _BCEWithLogitsLoss(_Extras, _losses.BCEWithLogitsLoss):
    pass


class _CrossEntropyLoss(_Extras, _losses.CrossEntropyLoss):
    pass


class _PoissonNLLLoss(_Extras, _losses.PoissonNLLLoss):
    pass


def _with(loss: Any, **extras: float) -> Any:
    loss._extras = {**loss._extras, **extras}
    return loss


class _SklearnAdam(_optim.Adam):
    """Adam in scikit-learn's form: epsilon added before the bias correction."""

    def __init__(self, params: Any, lr: float, betas: tuple, eps: float) -> None:
        _optim.Optimizer.__init__(self, params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=0.0,
                                                     amsgrad=False, maximize=False, sklearn_adam=True))


_LAYER_ATTRS = {"weight": "coefs_", "bias": "intercepts_"}
_INITIAL = {"weight": "_initial_coefs", "bias": "_initial_intercepts"}  # where they are kept before a fit


class _LayerArrays(list):
    """coefs_ or intercepts_ of a fitted estimator: a list of views of the network's parameters,
    one per layer. Assigning an element (``est.coefs_[i] = a``) copies a into the network, as
    assigning into scikit-learn's list changes its model. The number of layers is fixed by
    hidden_layer_sizes: methods that would change it raise."""

    def __init__(self, est: "_BaseMLP", kind: str) -> None:
        layers = est._linear_layers()
        super().__init__(la.weight.data.T if kind == "weight" else la.bias.data for la in layers)
        self._est, self._kind = est, kind

    def __setitem__(self, i: Any, value: Any) -> None:
        index = range(len(self))[i]  # IndexError as a list's
        if isinstance(index, range):
            value = list(value)
            if len(value) != len(index):
                raise ValueError(f"{_LAYER_ATTRS[self._kind]}[{i}] takes {len(index)} arrays, got {len(value)}")
            self._est._load_layer_arrays(self._kind, dict(zip(index, value)))
        else:
            self._est._load_layer_arrays(self._kind, {index: value})  # the list's views now hold the values

    def _fixed(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{_LAYER_ATTRS[self._kind]} has one array per layer; set hidden_layer_sizes and refit "
                        "to change the layers")

    append = extend = insert = pop = remove = clear = sort = reverse = __delitem__ = __iadd__ = __imul__ = _fixed

    def __reduce_ex__(self, protocol: Any) -> Any:  # copies and pickles are plain lists of arrays
        return list, (list(self),)


class _BaseMLP(BaseEstimator):
    """Shared implementation of MLPClassifier and MLPRegressor."""

    # Fitted attributes (set by fit; declared here for the type checker only: they are not
    # class attributes, so hasattr and check_is_fitted see them only after a fit)
    _model: Sequential
    loss_curve_: list[float]
    loss_: float
    best_loss_: float | None  # None with early_stopping
    validation_scores_: list[float] | None  # None without a validation set
    validation_loss_curve_: list[float] | None  # None without a validation set
    best_validation_score_: float | None  # None without a validation set

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_ACTIVATIONS)), list, tuple],
        "solver": [StrOptions({"lbfgs", *_STOCHASTIC_SOLVERS})],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "power_t": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(numbers.Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"), Options(numbers.Real, {np.inf})],
        "max_fun": [Interval(numbers.Integral, 1, None, closed="left")],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left"), list, tuple],
        "normalization": [StrOptions(set(_NORMALIZATIONS)), None],
        "residual": ["boolean"],
        "dtype": [StrOptions({"float32", "float64"}), type, np.dtype],
        "precision": [StrOptions({"float32", "bfloat16"})],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
    }

    # ------------------------------------------------------------------ parameters
    def _hidden_sizes(self) -> list:
        h = self.hidden_layer_sizes
        if not hasattr(h, "__iter__"):
            h = [h]
        h = list(h)
        if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) for v in h):
            raise ValueError(f"hidden_layer_sizes must be integers, got {h}.")
        if np.any(np.array(h) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {h}.")
        return [int(v) for v in h]

    def _activation_list(self, n_hidden: int) -> list:
        a = self.activation
        if isinstance(a, str):
            return [a] * n_hidden
        a = list(a)
        if len(a) != n_hidden:
            raise ValueError(f"activation has {len(a)} entries, but there are {n_hidden} hidden layers")
        for v in a:
            if v not in _ACTIVATIONS:
                raise ValueError(f"activation entries must be in {sorted(_ACTIVATIONS)}, got {v!r}")
        return a

    def _dropout_list(self, n_hidden: int) -> list:
        d = self.dropout
        if isinstance(d, numbers.Real) and not isinstance(d, bool):
            return [float(d)] * n_hidden
        d = list(d)
        if len(d) != n_hidden:
            raise ValueError(f"dropout has {len(d)} entries, but there are {n_hidden} hidden layers")
        for v in d:
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= float(v) < 1:
                raise ValueError(f"dropout rates must be numbers in [0, 1), got {v!r}")
        return [float(v) for v in d]

    def _np_dtype(self) -> np.dtype:
        try:
            dt = np.dtype(self.dtype)
        except TypeError:
            dt = None
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return dt

    def _check_solver(self) -> bool:
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                "partial_fit is only available for stochastic optimizers. %s is not stochastic." % self.solver)
        return True

    # ------------------------------------------------------------------ model
    def _linear_layers(self) -> list:
        """The network's Linear layers in order (inside residual blocks too)."""
        return [m for m in self._model.modules() if isinstance(m, Linear)]

    def _linear_names(self) -> list:
        """The state_dict prefixes of the Linear layers ('0', '3.block.0', ...), in order."""
        return [name for name, m in self._model.named_modules() if isinstance(m, Linear)]

    @property
    def coefs_(self) -> list:
        """Weight matrices, (n_in, n_out) each: views of the network's weights (writing into them
        changes the network, and so does assigning an element, ``coefs_[i] = a``)."""
        return self._layer_arrays("weight")

    @coefs_.setter
    def coefs_(self, value: list) -> None:
        self._set_layer_arrays("weight", value)

    @property
    def intercepts_(self) -> list:
        """Bias vectors: views of the network's biases (as coefs_)."""
        return self._layer_arrays("bias")

    @intercepts_.setter
    def intercepts_(self, value: list) -> None:
        self._set_layer_arrays("bias", value)

    def _layer_arrays(self, kind: str) -> list:
        if "_model" in self.__dict__:
            return _LayerArrays(self, kind)
        if _INITIAL[kind] in self.__dict__:  # assigned before the first fit: the list as given
            return self.__dict__[_INITIAL[kind]]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{_LAYER_ATTRS[kind]}'")

    def _set_layer_arrays(self, kind: str, value: list) -> None:
        """Assign coefs_ or intercepts_: into the network once fitted; before, kept as the initial
        weights of a first partial_fit or warm-started fit (as scikit-learn uses them)."""
        if "_model" not in self.__dict__:
            self.__dict__[_INITIAL[kind]] = list(value)
            return
        value = list(value)
        n = len(self._linear_layers())
        if len(value) != n:
            raise ValueError(f"{_LAYER_ATTRS[kind]} needs {n} arrays (one per layer), got {len(value)}")
        self._load_layer_arrays(kind, dict(enumerate(value)))

    def _load_layer_arrays(self, kind: str, arrays: dict) -> None:
        """Copy {layer index: (n_in, n_out) weights or (n_out,) biases} into the network; everything
        is checked before anything changes."""
        layers, names = self._linear_layers(), self._linear_names()
        sd = {}
        for i, v in arrays.items():
            la, a = layers[i], np.asarray(v)
            want = (la.in_features, la.out_features) if kind == "weight" else (la.out_features,)
            if a.shape != want:
                raise ValueError(f"{_LAYER_ATTRS[kind]}[{i}] has shape {want}, got an array of shape {a.shape}")
            sd[f"{names[i]}.{kind}"] = a.T
        self._model.load_state_dict(sd, strict=False)

    def __sklearn_is_fitted__(self) -> bool:
        return "_model" in self.__dict__

    def _hidden_layout(self, hidden: list) -> list:
        """One (activation, dropout, normalization, residual) per hidden layer, as the parameters ask
        (see _mlp.residual_flags for which layers are residual)."""
        n_hidden = len(hidden)
        return list(zip(self._activation_list(n_hidden), self._dropout_list(n_hidden),
                        [self.normalization] * n_hidden, residual_flags(hidden, self.residual)))

    def _build_model(self, layer_units: list, init: list, seed: int, dtype: np.dtype) -> Sequential:
        """The network of _mlp.mlp_layers with the initial (coef, intercept) pairs init."""
        model = Sequential(*mlp_layers(layer_units, self._hidden_layout(layer_units[1:-1]), init="zeros"),
                           seed=seed, dtype=dtype)
        names = [name for name, m in model.named_modules() if isinstance(m, Linear)]
        sd = {}
        for name, (coef, intercept) in zip(names, init):
            sd[f"{name}.weight"], sd[f"{name}.bias"] = coef.T, intercept
        model.load_state_dict(sd, strict=False)  # the normalization layers keep their initial state
        return model

    def _draw_weights(self, layer_units: list, rs: np.random.RandomState) -> list:
        """The initial (coef, intercept) pairs of a first fit, drawn as scikit-learn draws them."""
        n_hidden = len(layer_units) - 2
        acts = self._activation_list(n_hidden)
        init = []
        for i in range(len(layer_units) - 1):
            act = acts[min(i, n_hidden - 1)] if n_hidden else self.activation
            factor = 2.0 if act == "logistic" else 6.0
            fan_in, fan_out = layer_units[i], layer_units[i + 1]
            bound = np.sqrt(factor / (fan_in + fan_out))
            coef = rs.uniform(-bound, bound, (fan_in, fan_out))
            intercept = rs.uniform(-bound, bound, fan_out)
            init.append((coef, intercept))
        return init

    def _assigned_weights(self, layer_units: list) -> list:
        """The (coef, intercept) pairs assigned to coefs_ and intercepts_ before the first fit, checked
        against the network that the data and hidden_layer_sizes need."""
        coefs, intercepts = self.__dict__.get(_INITIAL["weight"]), self.__dict__.get(_INITIAL["bias"])
        if coefs is None or intercepts is None:
            raise ValueError("assign both coefs_ and intercepts_ to start a fit from given weights")
        n = len(layer_units) - 1
        if len(coefs) != n or len(intercepts) != n:
            raise ValueError(f"the data and hidden_layer_sizes need {n} layers (units {layer_units}), but coefs_ "
                             f"has {len(coefs)} arrays and intercepts_ {len(intercepts)}")
        init = []
        for i, (c, b) in enumerate(zip(coefs, intercepts)):
            c, b = np.asarray(c, dtype=np.float64), np.asarray(b, dtype=np.float64)
            if c.shape != (layer_units[i], layer_units[i + 1]) or b.shape != (layer_units[i + 1],):
                raise ValueError(f"coefs_[{i}] and intercepts_[{i}] have shapes {c.shape} and {b.shape}; the data "
                                 f"and hidden_layer_sizes need {(layer_units[i], layer_units[i + 1])} and "
                                 f"{(layer_units[i + 1],)}")
            init.append((c, b))
        return init

    def _initialize(self, Y: np.ndarray, layer_units: list) -> None:
        """Set the fitted attributes of a first fit."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = Y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        if self.solver in _STOCHASTIC_SOLVERS:
            self._init_stochastic_attributes()
        self.validation_loss_curve_ = None
        for key in ("_model", "_optimizer_state", *_INITIAL.values()):
            self.__dict__.pop(key, None)

    def _init_stochastic_attributes(self) -> None:
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    # ------------------------------------------------------------------ fitting
    def _fit(self, X: Any, y: Any, sample_weight: Any = None, incremental: bool = False,
             X_val: Any = None, y_val: Any = None) -> "_BaseMLP":
        self._validate_params()
        hidden = self._hidden_sizes()
        drops = [h[1] for h in self._hidden_layout(hidden)]  # checks activation, dropout and residual
        dtype = self._np_dtype()
        if self.precision == "bfloat16" and dtype != np.float32:
            raise ValueError("precision='bfloat16' needs dtype='float32'")
        if self.solver == "lbfgs" and any(drops):
            raise ValueError("dropout needs a stochastic solver ('sgd', 'adam', ...); solver='lbfgs' "
                             "minimises a deterministic objective")
        if (X_val is None) != (y_val is None):
            raise ValueError("pass both X_val and y_val, or neither")
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        _reject_masked(X=X, y=y, sample_weight=sample_weight, X_val=X_val, y_val=y_val)

        saved = self.__dict__.copy()  # a call that fails before training changes nothing
        try:
            X, Y, sw, rs, init, layer_units, val = self._prepare(X, y, sample_weight, incremental, X_val, y_val,
                                                                 hidden, dtype)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

        if self.solver in _STOCHASTIC_SOLVERS:
            self._fit_stochastic(X, Y, sw, incremental, rs, init, layer_units, dtype, val)
        else:
            self._fit_lbfgs(X, Y, sw, rs, init, layer_units, dtype, val)

        if not np.isfinite(self._model._core.flat_params()).all():
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.")
        return self

    def _prepare(self, X: Any, y: Any, sample_weight: Any, incremental: bool, X_val: Any, y_val: Any,
                 hidden: list, dtype: np.dtype) -> tuple:
        """Check the data and set the fitted attributes a fit starts from: (X, Y, sample weights,
        random state, initial weights or None to continue the network, layer units, validation set)."""
        fitted = "_model" in self.__dict__
        assigned = not fitted and any(k in self.__dict__ for k in _INITIAL.values())  # set before a first fit
        # as scikit-learn: warm_start and partial_fit continue from existing (or assigned) weights
        first_pass = (not fitted and not assigned) or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass or assigned)
        X = _as_dtype(_dense(X), dtype, "X")
        n_samples, n_features = X.shape
        sw = _check_sample_weight(sample_weight, n_samples)
        sw = self._apply_class_weight(sw, y, incremental)
        Y = self._encode(y)
        layer_units = [n_features] + hidden + [Y.shape[1]]

        rs = check_random_state(self.random_state)
        if first_pass:
            init = self._draw_weights(layer_units, rs)
        elif assigned:
            init = self._assigned_weights(layer_units)
        else:
            init = None
            self._check_architecture(layer_units)

        if init is not None:
            self._initialize(Y, layer_units)
        elif self._model.dtype != dtype:  # the dtype changed between warm-started fits
            self._model = self._convert_model(dtype)

        val = None
        if X_val is not None:
            val = self._validation_set(X_val, y_val, dtype)
        elif self.early_stopping and self.solver in _STOCHASTIC_SOLVERS:
            X, Y, sw, val = self._early_stopping_split(X, Y, sw, rs)
        self._check_batch_statistics(X.shape[0])
        return X, Y, sw, rs, init, layer_units, val

    def _batch_size(self, n_samples: int) -> int:
        """The mini-batch size of the stochastic solvers for n_samples rows (L-BFGS: the whole set)."""
        if self.solver not in _STOCHASTIC_SOLVERS:
            return n_samples
        if self.batch_size == "auto":
            return min(200, n_samples)
        return int(np.clip(self.batch_size, 1, n_samples))

    def _check_batch_statistics(self, n_samples: int) -> None:
        """normalization='batch' normalizes each batch by its own statistics, which one sample does not
        have (torch.nn.BatchNorm1d raises for it in training): refuse a fit with a batch of one sample."""
        if self.normalization != "batch":
            return
        b = self._batch_size(n_samples)
        if n_samples == 1:
            raise ValueError("normalization='batch' cannot train on 1 sample: BatchNorm1d needs at least 2 samples "
                             "per batch (the statistics of a single sample are undefined)")
        if n_samples % b == 1:
            raise ValueError(f"normalization='batch' needs at least 2 samples in every batch, but {n_samples} "
                             f"training samples in batches of {b} leave a last batch of 1 sample: choose another "
                             "batch_size")

    def _built_layout(self) -> list:
        """(activation, dropout, normalization, residual) of each hidden layer of the network, as built."""
        names: dict = {cls: name for name, cls in _ACTIVATIONS.items()}
        norms: dict = {cls: name for name, cls in _NORMALIZATIONS.items()}
        out: list = []
        for top in list(self._model)[:-1]:
            inner = list(top.block) if isinstance(top, Residual) else [top]
            for layer in inner:
                if isinstance(layer, Linear):
                    out.append(["", 0.0, None, isinstance(top, Residual)])
                elif isinstance(layer, Dropout):
                    out[-1][1] = layer.p
                elif type(layer) in norms:
                    out[-1][2] = norms[type(layer)]
                else:
                    out[-1][0] = names[type(layer)]
        return [tuple(h) for h in out]

    def _check_architecture(self, layer_units: list) -> None:
        """warm_start and partial_fit continue the fitted network: raise if the data or the parameters
        ask for another one (scikit-learn cannot continue with other hidden_layer_sizes either)."""
        old = [self._linear_layers()[0].in_features] + [la.out_features for la in self._linear_layers()]
        if old != layer_units:
            raise ValueError(f"the network has layer sizes {old}, but the data and hidden_layer_sizes "
                             f"need {layer_units}; refit with warm_start=False")
        built, wanted = self._built_layout(), self._hidden_layout(layer_units[1:-1])
        if built != wanted:
            def show(layout: list) -> str:
                cols = [[h[k] for h in layout] for k in range(4)]
                return f"activation {cols[0]}, dropout {cols[1]}, normalization {cols[2]}, residual {cols[3]}"
            raise ValueError(f"the network's hidden layers have {show(built)}, but the parameters now ask for "
                             f"{show(wanted)}; warm_start and partial_fit continue the fitted network: refit with "
                             "warm_start=False")

    def _early_stopping_split(self, X: np.ndarray, Y: np.ndarray, sw: np.ndarray | None,
                              rs: np.random.RandomState) -> tuple:
        """scikit-learn's validation_fraction split: (X, Y, sample weights) of the training part and
        the validation set (X, labels as given to score, targets of the loss, sample weights)."""
        stratify, required = self._stratify(Y)
        arrays = (X, Y) if sw is None else (X, Y, sw)
        try:
            parts = train_test_split(*arrays, random_state=rs, test_size=self.validation_fraction, stratify=stratify)
        except ValueError:
            if stratify is None or required:
                raise
            # a multiclass target with too few rows per class: unstratified, as scikit-learn splits it
            parts = train_test_split(*arrays, random_state=rs, test_size=self.validation_fraction)
        X_train, X_v, Y_train, Y_v = parts[:4]
        sw_train, sw_v = (parts[4], parts[5]) if sw is not None else (None, None)
        if X_v.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size "
                             "of your dataset.")
        return X_train, Y_train, sw_train, (X_v, self._decode(Y_v), self._target(Y_v), sw_v)

    def _convert_model(self, dtype: np.dtype) -> Sequential:
        state = self._model.__getstate__()
        state["dtype"] = np.dtype(dtype).name
        model = Sequential.__new__(Sequential)
        model.__setstate__(state)
        return model

    def _ensure_model(self, init: list | None, layer_units: list, rs: np.random.RandomState,
                      dtype: np.dtype) -> Sequential:
        if init is not None:
            seed = int(rs.randint(np.iinfo(np.int32).max))
            self._model = self._build_model(layer_units, init, seed, dtype)
            self._best_params = self._snapshot()
        return self._model

    def _validation_set(self, X_val: Any, y_val: Any, dtype: np.dtype) -> tuple:
        """(X, labels as given to score, targets of the loss, None) for a user validation set."""
        X_val = _validate_data(self, X_val, accept_sparse=["csr", "csc"], dtype=(np.float64, np.float32),
                               reset=False)
        X_val = _as_dtype(_dense(X_val), dtype, "X_val")
        y_val = self._check_y_val(y_val)
        if y_val.shape[0] != X_val.shape[0]:
            raise ValueError(f"X_val has {X_val.shape[0]} samples, y_val has {y_val.shape[0]}")
        return X_val, y_val, self._encode_val(y_val), None

    def _weight_decay(self) -> float:
        """The optimizer's weight decay: alpha for 'adamw' (decoupled); 0 for the
        others, whose L2 penalty is scikit-learn's, applied per batch by the C++
        loop (the loss spec's 'l2')."""
        return float(self.alpha) if self.solver == "adamw" else 0.0

    def _make_optimizer(self, lr: float, wd: float) -> Any:
        weights = [la.weight for la in self._linear_layers()]
        others = [p for p in self._model.parameters() if not any(p is w for w in weights)]  # biases, norms' affine
        groups = [{"params": weights, "weight_decay": wd}, {"params": others, "weight_decay": 0.0}]
        s = self.solver
        if s == "sgd":
            return _optim.SGD(groups, lr=lr, momentum=float(self.momentum),
                              nesterov=bool(self.nesterovs_momentum) and self.momentum > 0)
        if s == "adam":
            return _SklearnAdam(groups, lr=lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon)
        if s == "adamw":
            return _optim.AdamW(groups, lr=lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon)
        if s == "rmsprop":
            return _optim.RMSprop(groups, lr=lr, eps=self.epsilon)
        if s == "adagrad":
            return _optim.Adagrad(groups, lr=lr)
        return _optim.Adadelta(groups, lr=lr)

    def _set_lr(self, opt: Any, lr: float) -> None:
        """Set the learning rate; SGD's momentum buffers are rescaled so that
        the velocity (scikit-learn's, -lr * buffer) carries over unchanged."""
        old = opt.param_groups[0]["lr"]
        if old == lr:
            return
        if self.solver == "sgd" and self.momentum > 0:
            for st in opt.state.values():
                if st.get("momentum_buffer") is not None:
                    st["momentum_buffer"] *= old / lr
        for g in opt.param_groups:
            g["lr"] = lr

    def _fit_stochastic(self, X_train: np.ndarray, Y_train: np.ndarray, sw_train: np.ndarray | None,
                        incremental: bool, rs: np.random.RandomState, init: list | None, layer_units: list,
                        dtype: np.dtype, val: tuple | None) -> None:
        early_stopping = self.early_stopping
        model = self._ensure_model(init, layer_units, rs, dtype)
        if "loss_curve_" not in self.__dict__:  # warm start after an L-BFGS fit
            self._init_stochastic_attributes()
        if val is not None:
            if self.validation_scores_ is None:
                self.validation_scores_ = []
            if self.best_validation_score_ is None:
                self.best_validation_score_ = -np.inf
            if self.validation_loss_curve_ is None:
                self.validation_loss_curve_ = []
        if not early_stopping and self.best_loss_ is None:
            self.best_loss_ = np.inf

        n_samples = X_train.shape[0]
        if self.batch_size != "auto" and self.batch_size > n_samples:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
        batch_size = self._batch_size(n_samples)
        n_batches = -(-n_samples // batch_size)
        Xc = np.ascontiguousarray(X_train, dtype=dtype)
        t = self._target(Y_train)
        swc = None if sw_train is None else _as_dtype(sw_train, dtype, "sample_weight")
        loss_fn, factor = self._loss()
        # scikit-learn's L2 penalty (per batch, over the batch's weight sum) except for 'adamw',
        # whose decay is decoupled; its log-loss clips probabilities at the dtype's epsilon
        loss_fn = _with(loss_fn, l2=0.0 if self.solver == "adamw" else float(self.alpha),
                        log_clip=float(np.finfo(dtype).eps) if isinstance(self, ClassifierMixin) else 0.0)
        const = self._loss_constant(Y_train, sw_train)

        wd = self._weight_decay()
        state = self.__dict__.get("_optimizer_state")
        if incremental and state is not None and state["solver"] == self.solver:
            opt = self._make_optimizer(state["param_groups"][0]["lr"], wd)
            opt.load_state_dict(state)
            opt.param_groups[0]["weight_decay"] = wd
            steps = state["steps"]
        else:
            steps = 0
            self._lr = float(self.learning_rate_init)
            opt = self._make_optimizer(self._lr, wd)

        stopped = False

        def end_of_epoch(epoch: int, logs: dict) -> bool:
            """scikit-learn's bookkeeping after each epoch; True stops the fit."""
            nonlocal steps, stopped
            steps += n_batches
            loss = logs["loss"] * factor + const + logs.get("l2_penalty", 0.0)

            self.n_iter_ += 1
            self.loss_ = float(loss)
            self.t_ += n_samples
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))

            self._update_no_improvement_count(early_stopping, val)

            if self.solver == "sgd" and self.learning_rate == "invscaling":
                self._lr = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t

            if self._no_improvement_count > self.n_iter_no_change:
                if early_stopping:
                    msg = ("Validation score did not improve more than tol=%f for %d consecutive epochs."
                           % (self.tol, self.n_iter_no_change))
                else:
                    msg = ("Training loss did not improve more than tol=%f for %d consecutive epochs."
                           % (self.tol, self.n_iter_no_change))
                if self._trigger_stopping(msg):
                    stopped = True
                    return True
                self._no_improvement_count = 0
            self._set_lr(opt, self._lr)  # the coming epoch's rate (invscaling, adaptive)
            return False

        # one call into the C++ epoch loop for the whole fit; end_of_epoch runs between epochs
        try:
            self.n_iter_ = 0
            self._set_lr(opt, self._lr)
            try:
                model.fit(Xc, t, loss_fn, opt, epochs=1 if incremental else self.max_iter, batch_size=batch_size,
                          shuffle=self.shuffle, verbose=0, n_threads=self.n_threads, sample_weight=swc,
                          callbacks=[end_of_epoch], precision=self.precision)
            except FloatingPointError as e:
                if not early_stopping:
                    raise ValueError("Solver produced non-finite parameter weights. The input data may contain "
                                     "large values and need to be preprocessed.") from e
                self._record_divergence(n_samples)
            if not stopped and not incremental and self.n_iter_ == self.max_iter:
                warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the optimization "
                              "hasn't converged yet." % self.max_iter, ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        finally:
            self._set_lr(opt, self._lr)
            self._optimizer_state = {**opt.state_dict(), "solver": self.solver, "steps": steps}

        if early_stopping:
            params, buffers = self._best_params
            model._core.flat_params()[...] = params
            for k, v in model.named_buffers():
                v[...] = buffers[k]

    def _snapshot(self) -> tuple:
        """(parameters, buffers) of the network: what early stopping restores (BatchNorm's running
        statistics go with the weights they were estimated for)."""
        return self._model._core.flat_params().copy(), {k: v.copy() for k, v in self._model.named_buffers()}

    def _record_divergence(self, n_samples: int) -> None:
        """Finish a fit with early stopping whose training diverged as scikit-learn does: its weights
        turn NaN, so that epoch and every later one up to max_iter get a NaN loss and validation score
        (a NaN score never counts as no improvement), and the best weights are restored at the end.
        fastmlp's engine stops at the diverging epoch; the later epochs are recorded, not run."""
        scores, curve = self.validation_scores_, self.validation_loss_curve_
        assert scores is not None  # early stopping always has a validation set
        warnings.warn(f"training diverged in epoch {self.n_iter_ + 1} (the loss or the weights became non-finite): "
                      "as in scikit-learn, the epochs from there to max_iter are recorded with a NaN loss and "
                      "validation score, and the weights of the best validation score are restored",
                      RuntimeWarning, stacklevel=4)
        while self.n_iter_ < self.max_iter:
            self.n_iter_ += 1
            self.t_ += n_samples
            self.loss_ = np.nan
            self.loss_curve_.append(np.nan)
            scores.append(np.nan)
            if curve is not None:
                curve.append(np.nan)
            self._no_improvement_count = 0
            if self.verbose:
                print("Iteration %d, loss = %.8f\nValidation score: %f" % (self.n_iter_, np.nan, np.nan))

    def _trigger_stopping(self, msg: str) -> bool:
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._lr <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._lr /= 5.0
        if self.verbose:
            print(msg + " Setting learning rate to %f" % self._lr)
        return False

    def _score_validation(self, model: Sequential, val: tuple) -> float:
        """Score the network on a validation set (X, y, loss targets, sample weights): append its
        loss to validation_loss_curve_ and its score to validation_scores_; return the score."""
        X_v, y_v, t_v, sw_v = val
        out = model.predict(X_v, n_threads=self.n_threads, precision=self.precision).astype(np.float64)
        curve, scores = self.validation_loss_curve_, self.validation_scores_
        # the solvers make both lists before the first epoch when there is a validation set
        assert curve is not None and scores is not None
        curve.append(float(self._data_loss(out, t_v, sw_v)))
        score = self._score_out(out, y_v, sw_v)
        scores.append(score)
        return score

    def _update_no_improvement_count(self, early_stopping: bool, val: tuple | None) -> None:
        score = None
        if val is not None:
            score = self._score_validation(self._model, val)
            if self.verbose:
                print("Validation score: %f" % score)
        best_score = self.best_validation_score_
        if early_stopping:
            # early stopping always has a validation set (X_val or its own split), and then
            # _fit_stochastic has set best_validation_score_ to a number
            assert score is not None and best_score is not None
            if score < best_score + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > best_score:
                self.best_validation_score_ = score
                self._best_params = self._snapshot()
        else:
            if score is not None and best_score is not None and score > best_score:
                self.best_validation_score_ = score
            best_loss = self.best_loss_
            assert best_loss is not None  # a number (np.inf before the first epoch) without early stopping
            if self.loss_curve_[-1] > best_loss - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < best_loss:
                self.best_loss_ = self.loss_curve_[-1]

    def _weight_slices(self) -> list:
        """Where the Linear weights (those the L2 penalty applies to) are in the flat parameters."""
        weights = {f"{name}.weight" for name in self._linear_names()}
        out, off = [], 0
        for name, p in self._model.named_parameters():
            if name in weights:
                out.append(slice(off, off + p.size))
            off += p.size
        return out

    def _fit_lbfgs(self, X: np.ndarray, Y: np.ndarray, sw: np.ndarray | None, rs: np.random.RandomState,
                   init: list | None, layer_units: list, dtype: np.dtype, val: tuple | None) -> None:
        model = self._ensure_model(init, layer_units, rs, dtype)
        # deterministic full-batch objective: BatchNorm normalizes by the whole training set's statistics
        model.train(self.normalization == "batch")
        Xc = np.ascontiguousarray(X, dtype=dtype)
        t = self._target(Y)
        loss_fn, factor = self._loss()
        const = self._loss_constant(Y, sw)
        spec = loss_fn._spec(model.dtype)
        if sw is not None:
            spec["sample_weight"] = _as_dtype(sw, dtype, "sample_weight")
        sw_sum = X.shape[0] if sw is None else float(np.sum(sw))
        c = float(self.alpha) / sw_sum
        flat, grads = model._core.flat_params(), model._core.flat_grads()
        wsl = self._weight_slices()
        core = model._core

        def penalty(x: np.ndarray) -> float:
            return 0.5 * c * sum(float(np.dot(x[s], x[s])) for s in wsl)

        def fun(x: np.ndarray) -> tuple:
            flat[...] = x
            value = core.loss_and_grad(Xc, t, spec, self.precision == "bfloat16") + const + penalty(x)
            g = grads.astype(np.float64)
            for s in wsl:
                g[s] += c * x[s]
            return value, g

        if val is not None:
            if getattr(self, "validation_scores_", None) is None:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
            if self.validation_loss_curve_ is None:
                self.validation_loss_curve_ = []
        it = [0]

        def callback(xk: np.ndarray) -> None:
            it[0] += 1
            if val is not None:
                flat[...] = xk
                score = self._score_validation(model, val)
                best = self.best_validation_score_
                self.best_validation_score_ = score if best is None else max(best, score)
            if self.verbose:
                print("Iteration %d" % it[0])

        from .training import blas_threads

        # scipy's L-BFGS-B does its vector work through scipy's own OpenBLAS: its idle threads spin
        # on the cores this fit's products need (a 5x slow-down on digits, measured), and vectors of
        # the parameters' length gain nothing from threads, so every other BLAS gets one thread
        with threadpool_limits(limits=1, user_api="blas"), \
                blas_threads(self.n_threads, model, Xc.shape[0]):  # full batch: the whole data set per product
            res = scipy.optimize.minimize(fun, flat.astype(np.float64), method="L-BFGS-B", jac=True,
                                          callback=callback,
                                          options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        n_iter = min(res.nit, self.max_iter)
        if res.status != 0:
            msg = f"lbfgs failed to converge after {n_iter} iteration(s) (status={res.status}):\n{res.message}\n"
            if n_iter == self.max_iter:
                msg += f"\nIncrease the number of iterations to improve the convergence (max_iter={self.max_iter})."
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        self.n_iter_ = n_iter
        flat[...] = res.x
        pen = penalty(res.x)
        self.loss_ = float((res.fun - pen - const) * factor + const + pen)
        if self.normalization == "batch":
            self._set_full_batch_statistics(Xc)
        model.eval()

    def _set_full_batch_statistics(self, X: np.ndarray) -> None:
        """After L-BFGS, whose objective normalizes by the statistics of the whole training set: set every
        BatchNorm1d's running estimates to those statistics at the final weights (mean and unbiased
        variance), as one training-mode pass over X with momentum=1 computes them."""
        def exact(spec: dict) -> dict:
            if spec["kind"] == "batch_norm":
                return {**spec, "momentum": 1.0}
            if spec["kind"] == "residual":
                return {**spec, "block": [exact(b) for b in spec["block"]]}
            return spec

        state = self._model.__getstate__()
        state["layers"] = [exact(spec) for spec in state["layers"]]
        probe = Sequential.__new__(Sequential)
        probe.__setstate__(state)
        probe.train()
        probe.forward(X)
        self._model.load_state_dict(dict(probe.named_buffers()), strict=False)

    # ------------------------------------------------------------------ prediction
    def _forward(self, X: Any) -> np.ndarray:
        """Network outputs (before the output activation) for X, in the network's dtype (as
        scikit-learn computes in its network's dtype)."""
        _reject_masked(X=X)
        X = _validate_data(self, X, accept_sparse=["csr", "csc"], dtype=(np.float64, np.float32), reset=False)
        return self._model.predict(_as_dtype(_dense(X), self._model.dtype, "X"), n_threads=self.n_threads,
                                   precision=self.precision)

    def _score_out(self, out: np.ndarray, y: np.ndarray, sw: np.ndarray | None) -> float:
        y_pred = self._predict_from_out(out)
        if np.issubdtype(np.asarray(y_pred).dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return float(self._score_function(y, y_pred, sample_weight=sw))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


_COMMON_DOC = """
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer.
    activation : {'identity', 'logistic', 'tanh', 'relu', 'leaky_relu', 'elu', 'selu', 'celu', 'silu', \
'mish', 'gelu', 'softplus', 'softsign', 'hardtanh', 'relu6', 'hardswish', 'hardsigmoid', 'logsigmoid'} \
or list of them, default='relu'
        Activation of the hidden layers (scikit-learn's four, then torch.nn's with their default
        arguments); a list gives one per hidden layer.
    solver : {'lbfgs', 'sgd', 'adam', 'rmsprop', 'adagrad', 'adadelta', 'adamw'}, default='adam'
        'lbfgs' runs scipy's L-BFGS-B on fastmlp's loss and gradient; 'sgd' and
        'adam' are scikit-learn's; 'rmsprop', 'adagrad', 'adadelta' and 'adamw'
        are torch.optim's rules with ``lr=learning_rate_init`` (rmsprop, adam
        and adamw use ``epsilon``, adam and adamw ``beta_1``/``beta_2``; other
        settings are PyTorch's defaults; adadelta usually wants
        ``learning_rate_init=1.0``). They stop like 'adam' does.
    alpha : float, default=0.0001
        Strength of the L2 penalty on the weights, divided by the sample size
        (of each batch) as in scikit-learn. With 'adamw' it is the decoupled
        weight decay (``w -= lr * alpha * w`` per step) instead (``loss_curve_``
        still adds scikit-learn's L2 term).
    batch_size : int or 'auto', default='auto'
        Mini-batch size of the stochastic solvers; 'auto' is min(200, n_samples).
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Schedule of solver='sgd', as in scikit-learn.
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
    max_iter : int, default=200
        Epochs of the stochastic solvers, iterations of 'lbfgs'.
    shuffle : bool, default=True
    random_state : int, RandomState instance or None, default=None
        Drives the weight initialisation (the same draws as scikit-learn), the
        early-stopping split, and the seed of the shuffling and dropout.
    tol : float, default=1e-4
    verbose : bool, default=False
    warm_start : bool, default=False
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Stop when the validation score stops improving by ``tol`` for
        ``n_iter_no_change`` epochs; the best weights are restored. The
        validation set is the one passed to fit (``X_val``, ``y_val``) if any,
        else a ``validation_fraction`` split of the training data.
    validation_fraction : float, default=0.1
    beta_1 : float, default=0.9
    beta_2 : float, default=0.999
    epsilon : float, default=1e-8
    n_iter_no_change : int, default=10
    max_fun : int, default=15000
        Maximum number of loss evaluations of 'lbfgs'.
    dropout : float or list of float, default=0.0
        Dropout rate after every hidden activation (or one per hidden layer);
        stochastic solvers only.
    normalization : {None, 'batch', 'layer'}, default=None
        A normalization layer between each hidden Linear and its activation
        (Linear -> BatchNorm1d | LayerNorm -> activation -> Dropout), with
        torch.nn's defaults (eps=1e-5, BatchNorm1d's momentum=0.1); its
        weight and bias are trained without the L2 penalty. 'batch' uses the
        batch's statistics in training and the running estimates in predict;
        every batch needs at least 2 samples. With 'lbfgs' the objective
        normalizes by the whole training set, and the running estimates are
        set to its statistics at the final weights. Sample weights weigh the
        loss, not BatchNorm's statistics (as in PyTorch).
    residual : bool, default=False
        Wrap every hidden layer whose input width equals its output width in
        a residual block, ``x + f(x)`` (``fm.Residual``; f is the layer's
        Linear, normalization, activation and dropout). The first hidden
        layer projects the inputs and is never residual, so hidden layer i
        (i >= 1) is residual when ``hidden_layer_sizes[i - 1] ==
        hidden_layer_sizes[i]``; fit raises if no layer is.
    dtype : {'float32', 'float64'}, default='float32'
        Precision of the network and of the training.
    precision : {'float32', 'bfloat16'}, default='float32'
        'bfloat16' (dtype='float32' only): the products of training and
        prediction in bfloat16 with float32 accumulation, as
        ``torch.autocast`` (see ``Sequential.fit``); weights stay float32.
    n_threads : int or None, default=None
        Threads for training and prediction (None: every available core); see
        ``Sequential.fit`` for how a batch is shared between two threads.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = """Multi-layer perceptron classifier, a drop-in replacement for
    :class:`sklearn.neural_network.MLPClassifier` trained by fastmlp's C++ engine.

    Parameters
    ----------""" + _COMMON_DOC + """    class_weight : dict, list of dict, 'balanced' or None, default=None
        Weights of the classes, multiplied into ``sample_weight`` (as
        :func:`sklearn.utils.class_weight.compute_sample_weight` computes them).

    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_,
    best_validation_score_, t_, coefs_, intercepts_, n_features_in_,
    feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_
        As in scikit-learn (``coefs_``/``intercepts_`` are views of the
        network's parameters, in ``dtype``).
    validation_loss_curve_ : list or None
        The loss on the validation set after every epoch (L-BFGS: iteration),
        when there is one (``early_stopping`` or ``X_val``).

    Notes
    -----
    ``fit(X, y, sample_weight=None, *, X_val=None, y_val=None)``: a
    validation set, if given, is scored after every epoch
    (``validation_scores_``, ``validation_loss_curve_``,
    ``best_validation_score_``) and is the one early stopping uses.
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "class_weight": [dict, list, StrOptions({"balanced"}), None],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, dropout=0.0, normalization=None, residual=False,
                 class_weight=None, dtype="float32", precision="float32", n_threads=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout
        self.normalization = normalization
        self.residual = residual
        self.class_weight = class_weight
        self.dtype = dtype
        self.precision = precision
        self.n_threads = n_threads

    # ---- targets
    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple:
        X, y = _validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                              dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if "classes_" not in self.__dict__ or (not self.warm_start and not incremental):
            binarizer = LabelBinarizer().fit(y)  # may raise: assign only once it succeeded
            self._label_binarizer = binarizer
            self.classes_ = binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                                     f"call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")
        return X, y

    def _apply_class_weight(self, sw: np.ndarray | None, y: np.ndarray, incremental: bool) -> np.ndarray | None:
        if self.class_weight is None:
            return sw
        if incremental and self.class_weight == "balanced":
            raise ValueError("class_weight 'balanced' is not supported for partial_fit: compute the weights "
                             "with sklearn.utils.class_weight.compute_class_weight('balanced', classes=classes, "
                             "y=y) on all the data and pass them as a dict")
        if self.class_weight == "balanced":
            cw = _balanced_weights(y, sw)
        else:
            given = self.class_weight if isinstance(self.class_weight, list) else [self.class_weight]
            for label, w in (item for d in given if isinstance(d, dict) for item in d.items()):
                if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0 <= float(w) < np.inf:
                    raise ValueError(f"class_weight must give every class a finite weight >= 0, got {w!r} "
                                     f"for class {label!r}")
            cw = compute_sample_weight(self.class_weight, y)
        out = cw if sw is None else sw * cw
        if not out.any():
            raise ValueError("Sample weights must contain at least one non-zero number (after class_weight).")
        return out

    def _encode(self, y: np.ndarray) -> np.ndarray:
        Y = self._label_binarizer.transform(y).astype(bool)
        return Y.reshape(-1, 1) if Y.ndim == 1 else Y

    def _decode(self, Y: np.ndarray) -> np.ndarray:
        return self._label_binarizer.inverse_transform(Y)

    def _multiclass(self) -> bool:
        return self._label_binarizer.y_type_ == "multiclass"

    def _out_activation(self) -> str:
        return "softmax" if self._multiclass() else "logistic"

    def _target(self, Y: np.ndarray) -> np.ndarray:
        if self._multiclass():
            return np.ascontiguousarray(np.argmax(Y, axis=1), dtype=np.int64)
        return _as_dtype(Y, self._np_dtype(), "y")

    def _stratify(self, Y: np.ndarray) -> tuple:
        """(labels, whether required) of the stratified early-stopping split. Binary targets are
        stratified as in scikit-learn, which raises when it cannot; multiclass targets too, as
        scikit-learn documents (its code does not), and unstratified where they cannot be."""
        if self._multiclass():
            return np.argmax(Y, axis=1), False
        return (Y, True) if Y.shape[1] == 1 else (None, False)

    def _check_y_val(self, y_val: Any) -> np.ndarray:
        y_val = np.asarray(y_val) if not sp.issparse(y_val) else y_val.toarray()
        if y_val.ndim == 2 and y_val.shape[1] == 1:
            y_val = column_or_1d(y_val, warn=True)
        if y_val.ndim == 1:  # (a label-indicator matrix has no labels to check)
            unknown = np.setdiff1d(unique_labels(y_val), self.classes_)
            if len(unknown):
                raise ValueError(f"y_val has classes {unknown} that are not in the training classes {self.classes_}")
        return y_val

    def _encode_val(self, y_val: np.ndarray) -> np.ndarray:
        return self._target(self._encode(y_val))

    def _loss(self) -> tuple:
        if self._multiclass():
            return _CrossEntropyLoss(), 1.0
        return _with(_BCEWithLogitsLoss(), scale=self.n_outputs_), 1.0

    def _loss_constant(self, Y: np.ndarray, sw: np.ndarray | None) -> float:
        return 0.0

    def _data_loss(self, out: np.ndarray, t: np.ndarray, sw: np.ndarray | None) -> float:
        """scikit-learn's log-loss of network outputs (logits), float64."""
        if out.shape[0] == 0:
            return np.nan
        if self._multiclass():
            m = out.max(axis=1, keepdims=True)
            lse = (m + np.log(np.exp(out - m).sum(axis=1, keepdims=True)))[:, 0]
            return float(_weighted_mean(lse - out[np.arange(out.shape[0]), t], sw))
        y = t.astype(np.float64)
        v = np.maximum(out, 0) - out * y + np.log1p(np.exp(-np.abs(out)))
        return float(_weighted_mean(v, sw).sum())

    @staticmethod
    def _score_function(y: Any, y_pred: Any, sample_weight: Any = None) -> float:
        return accuracy_score(y, y_pred, sample_weight=sample_weight)

    def _proba_from_out(self, out: np.ndarray) -> np.ndarray:
        if self._multiclass():
            return _softmax(out)
        return _logistic(out)

    def _predict_from_out(self, out: np.ndarray) -> np.ndarray:
        if self._multiclass():
            return self.classes_[np.argmax(out, axis=1)]
        p = _logistic(out)
        if self.n_outputs_ == 1:
            p = p.ravel()
        return self._label_binarizer.inverse_transform(p)

    # ---- public API
    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None):
        """Fit the model to X and the labels y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (any hashable), or a label-indicator matrix for multilabel.
        sample_weight : array-like of shape (n_samples,), default=None
        X_val, y_val : array-like, default=None
            A validation set scored after every epoch (``validation_scores_``,
            ``validation_loss_curve_``); early stopping uses it instead of a
            ``validation_fraction`` split.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False, X_val=X_val, y_val=y_val)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y); ``classes`` is required on the first call."""
        first = False
        if getattr(self, "classes_", None) is None and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is not None:
            if getattr(self, "classes_", None) is not None:
                if not np.array_equal(self.classes_, unique_labels(classes)):
                    raise ValueError("`classes=%r` is not the same as on last call to partial_fit, was: %r"
                                     % (classes, self.classes_))
            else:
                self.classes_ = unique_labels(classes)
                first = True
        if first:
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted class labels (an indicator matrix for multilabel targets)."""
        check_is_fitted(self)
        return self._predict_from_out(self._forward(X))

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self)
        p = self._proba_from_out(self._forward(X))
        if self.n_outputs_ == 1:
            p = p.ravel()
            return np.vstack([1 - p, p]).T
        return p

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        y_prob = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(y_prob, out=y_prob)

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"multilabel": True}

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = """Multi-layer perceptron regressor, a drop-in replacement for
    :class:`sklearn.neural_network.MLPRegressor` trained by fastmlp's C++ engine.

    Parameters
    ----------
    loss : {'squared_error', 'poisson'}, default='squared_error'
        Half squared error (identity output) or half Poisson deviance (the
        network outputs log(mean); predictions are its exp; y must be >= 0).""" + _COMMON_DOC + """
    Attributes
    ----------
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_,
    t_, coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_,
    n_layers_, n_outputs_, out_activation_
        As in scikit-learn.
    validation_loss_curve_ : list or None
        The loss on the validation set after every epoch, when there is one.

    Notes
    -----
    ``fit(X, y, sample_weight=None, *, X_val=None, y_val=None)``: see MLPClassifier.
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, dropout=0.0, normalization=None,
                 residual=False, dtype="float32", precision="float32", n_threads=None):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout
        self.normalization = normalization
        self.residual = residual
        self.dtype = dtype
        self.precision = precision
        self.n_threads = n_threads

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool) -> tuple:
        X, y = _validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True, y_numeric=True,
                              dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("Some value(s) of y are negative which is not allowed for Poisson regression.")
        return X, y

    def _apply_class_weight(self, sw: np.ndarray | None, y: np.ndarray, incremental: bool) -> np.ndarray | None:
        return sw

    def _encode(self, y: np.ndarray) -> np.ndarray:
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _decode(self, Y: np.ndarray) -> np.ndarray:
        return Y.ravel() if Y.shape[1] == 1 else Y

    def _out_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    def _target(self, Y: np.ndarray) -> np.ndarray:
        return _as_dtype(Y, self._np_dtype(), "y")

    def _stratify(self, Y: np.ndarray) -> tuple:
        return None, False

    def _check_y_val(self, y_val: Any) -> np.ndarray:
        y_val = np.asarray(y_val, dtype=np.float64)
        if y_val.ndim == 2 and y_val.shape[1] == 1:
            y_val = column_or_1d(y_val, warn=True)
        if (y_val.ndim == 1 and self.n_outputs_ != 1) or (y_val.ndim == 2 and y_val.shape[1] != self.n_outputs_):
            raise ValueError(f"y_val has shape {y_val.shape}, but the model has {self.n_outputs_} outputs")
        return y_val

    def _encode_val(self, y_val: np.ndarray) -> np.ndarray:
        return self._encode(y_val).astype(np.float64)

    def _loss(self) -> tuple:
        k = self.n_outputs_
        if self.loss == "poisson":
            return _with(_PoissonNLLLoss(log_input=True), scale=k), 1.0
        # scikit-learn's gradient is that of 0.5 * (squared error summed over outputs);
        # its reported loss averages over the outputs
        return _with(_MSELoss(), scale=0.5 * k), 1.0 / k

    def _loss_constant(self, Y: np.ndarray, sw: np.ndarray | None) -> float:
        """The part of the half Poisson deviance that does not depend on the
        prediction: mean over rows of sum_k (y log y - y)."""
        if self.loss != "poisson" or Y.shape[0] == 0:
            return 0.0
        from scipy.special import xlogy

        Y = np.asarray(Y, dtype=np.float64)
        return float(_weighted_mean(xlogy(Y, Y) - Y, sw).sum())

    def _data_loss(self, out: np.ndarray, t: np.ndarray, sw: np.ndarray | None) -> float:
        if out.shape[0] == 0:
            return np.nan
        if self.loss == "poisson":
            from scipy.special import xlogy

            v = np.exp(out) - t * out + xlogy(t, t) - t
            return float(_weighted_mean(v, sw).sum())
        return float(0.5 * _weighted_mean((out - t) ** 2, sw).mean())

    @staticmethod
    def _score_function(y: Any, y_pred: Any, sample_weight: Any = None) -> float:
        return r2_score(y, y_pred, sample_weight=sample_weight)

    def _predict_from_out(self, out: np.ndarray) -> np.ndarray:
        if self.loss == "poisson":
            out = np.exp(out)
        return out.ravel() if out.shape[1] == 1 else out

    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None):
        """Fit the model to X and the target(s) y; see MLPClassifier.fit for X_val, y_val."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False, X_val=X_val, y_val=y_val)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted values, (n_samples,) or (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict_from_out(self._forward(X))
