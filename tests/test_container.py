"""The container API of Sequential (and Residual blocks) against torch.nn's behaviour: indexing,
slicing, structural edits that keep the parameters, named_modules, apply, requires_grad_ (frozen
parameters in every optimizer, train_step and fit), to(dtype), summary."""
import copy
import pickle

import numpy as np
import pytest

import fastmlp as fm


def torch_or_skip():
    return pytest.importorskip("torch")


def torch_residual(torch):
    class Residual(torch.nn.Module):  # the torch module whose names fm.Residual follows
        def __init__(self, *layers):
            super().__init__()
            self.block = torch.nn.Sequential(*layers)

        def forward(self, x):
            return x + self.block(x)

    return Residual


def nested(seed=0, dtype="float64"):
    return fm.Sequential(fm.Linear(5, 8), fm.Residual(fm.Linear(8, 8), fm.BatchNorm1d(8), fm.ReLU(),
                                                      fm.Residual(fm.LayerNorm(8))),
                         fm.RMSNorm(8), fm.Linear(8, 3), seed=seed, dtype=dtype)


def torch_nested(torch):
    nn, TRes = torch.nn, torch_residual(torch)
    return nn.Sequential(nn.Linear(5, 8), TRes(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), TRes(nn.LayerNorm(8))),
                         nn.RMSNorm(8), nn.Linear(8, 3)).double()


def values(m):
    return {k: v.copy() for k, v in m.state_dict().items()}


# ---------------------------------------------------------------- indexing and slicing
def test_indexing_and_slicing_follow_torch_sequential():
    torch = torch_or_skip()
    m, t = nested(), torch_nested(torch)
    t.load_state_dict({k: torch.tensor(v) for k, v in m.state_dict().items()})
    assert len(m) == len(t) == 4
    for i in range(-4, 4):
        assert type(m[i]).__name__ == type(t[i]).__name__
    for i in (4, -5):
        with pytest.raises(IndexError):
            t[i]
        with pytest.raises(IndexError, match="out of range"):
            m[i]
    with pytest.raises(TypeError, match="integers or slices"):
        m["0"]
    x = np.random.default_rng(0).normal(size=(6, 5))
    m.eval()
    t.eval()
    for sl in (slice(0, 2), slice(None, None, 2), slice(-2, None), slice(3, 1)):
        # torch's slice keeps the original names ('0', '2'); fastmlp's layers are named by position
        ms, ts = m[sl], torch.nn.Sequential(*t[sl])
        assert isinstance(ms, fm.Sequential) and len(ms) == len(t[sl])
        assert list(ms.state_dict()) == list(ts.state_dict())
        for k, v in ms.state_dict().items():
            np.testing.assert_array_equal(v, ts.state_dict()[k].numpy())
        assert ms.dtype == m.dtype and ms.training == m.training
    # a slice holds copies (a layer belongs to one model): editing it leaves the model alone
    before = values(m)
    head = m[:2]
    head[0].weight.data[...] = 0
    assert all(np.array_equal(v, before[k]) for k, v in m.state_dict().items())
    np.testing.assert_allclose(m[:2].predict(x), t[:2](torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
    assert m[1].block[0] is m[1].block[-1 - 3] and len(m[1].block) == 4
    with pytest.raises(TypeError, match="replace the whole block"):
        m[1].block[0] = fm.Linear(8, 8)


# ---------------------------------------------------------------- structural edits
def test_edits_match_torch_and_keep_parameters():
    torch = torch_or_skip()
    nn = torch.nn
    m = fm.Sequential(fm.Linear(4, 6), fm.Tanh(), fm.Linear(6, 3), seed=3, dtype="float64")
    t = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    t.load_state_dict({k: torch.tensor(v) for k, v in m.state_dict().items()})
    w0, b2 = m[0].weight, m[2].bias
    w0_values = w0.data.copy()

    def same_new_layer(fm_layer, torch_layer):  # a torch layer with the values fastmlp gave fm_layer
        with torch.no_grad():
            for name, p in torch_layer.named_parameters():
                p.copy_(torch.tensor(getattr(fm_layer, name).data))

    m.append(fm.ReLU())
    t.append(nn.ReLU())
    m.insert(0, fm.Linear(4, 4))
    t.insert(0, nn.Linear(4, 4).double())
    same_new_layer(m[0], t[0])
    m.extend([fm.Linear(3, 5), fm.Sigmoid()])
    t.extend([nn.Linear(3, 5).double(), nn.Sigmoid()])
    same_new_layer(m[5], t[5])
    m[2] = fm.ReLU()  # replaces the Tanh
    t[2] = nn.ReLU()
    del m[-1]
    del t[-1]
    m.insert(-1, fm.Identity())  # before the last, as list.insert
    t.insert(-1, nn.Identity())
    assert [type(layer).__name__ for layer in m] == [type(layer).__name__ for layer in t]
    assert list(m.state_dict()) == list(t.state_dict())
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, t.state_dict()[k].detach().numpy(), err_msg=k)
    # the layers' Parameter objects are still the model's, with their values, under their new names
    assert m[1].weight is w0 and w0.name == "1.weight" and dict(m.named_parameters())["1.weight"] is w0
    np.testing.assert_array_equal(w0.data, w0_values)
    assert m[3].bias is b2
    w0.data[...] = 0.5  # writes into the new model
    assert (m.state_dict()["1.weight"] == 0.5).all()
    with torch.no_grad():
        t[1].weight.fill_(0.5)
    x = np.random.default_rng(1).normal(size=(7, 4))
    np.testing.assert_allclose(m(x), t(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-13)
    m.train_step(x, np.zeros((7, 5)), fm.MSELoss(), fm.optim.SGD(m.parameters(), lr=0.1))  # trains after edits


def test_removed_layers_keep_their_values_and_move_as_in_torch():
    m = fm.Sequential(fm.Linear(3, 3), fm.ReLU(), fm.Linear(3, 2), seed=0)
    last = m[2]
    w = last.weight.data.copy()
    popped = m.pop()
    assert popped is last and len(m) == 2
    np.testing.assert_array_equal(last.weight.data, w)  # a copy, owned by no model
    m2 = fm.Sequential(fm.Linear(4, 3), last, seed=5)  # moves into another model with its values
    np.testing.assert_array_equal(m2[1].weight.data, w)
    assert m2[1].weight is last.weight
    with pytest.raises(ValueError, match="already belongs to a model"):
        m.append(last)  # now m2's
    assert len(m) == 2


def test_failed_edits_change_nothing():
    m = fm.Sequential(fm.Linear(3, 4), fm.ReLU(), fm.Linear(4, 2), seed=0)
    before, params = values(m), list(m.parameters())
    x = np.ones((2, 3), np.float32)
    y = m(x)
    for bad, err in ((lambda: m.append("relu"), TypeError), (lambda: m.append(m[0]), ValueError),
                     (lambda: m.insert(1, fm.Sequential(fm.ReLU())), TypeError),
                     (lambda: m.__setitem__(2, fm.Linear(5, 2)), ValueError),  # 5 inputs, 4 given: the engine refuses
                     (lambda: m.__setitem__(7, fm.ReLU()), IndexError), (lambda: m.__delitem__(3), IndexError)):
        with pytest.raises(err):
            bad()
        assert len(m) == 3 and list(m.parameters()) == params
        assert all(np.array_equal(v, before[k]) for k, v in m.state_dict().items())
        np.testing.assert_array_equal(m(x), y)


def test_optimizer_built_before_an_edit_raises():
    m = fm.Sequential(fm.Linear(3, 4), fm.ReLU(), fm.Linear(4, 2), seed=0)
    x, y = np.ones((4, 3)), np.zeros(4, np.int64)
    for edit in (lambda: m.append(fm.ReLU()), lambda: m.double(), lambda: m.__delitem__(-1)):
        opt = fm.optim.Adam(m.parameters(), lr=0.1)
        edit()
        with pytest.raises(RuntimeError, match="build a new optimizer"):
            opt.step()
        with pytest.raises(RuntimeError, match="build a new optimizer"):
            m.train_step(x, y, fm.CrossEntropyLoss(), opt)
        with pytest.raises(RuntimeError, match="build a new optimizer"):
            m.fit(x, y, fm.CrossEntropyLoss(), opt, verbose=0)
        m.train_step(x, y, fm.CrossEntropyLoss(), fm.optim.Adam(m.parameters(), lr=0.1))


def test_edits_are_refused_during_fit():
    m = fm.Sequential(fm.Linear(3, 4), fm.ReLU(), fm.Linear(4, 2), seed=0)
    x, y = np.random.default_rng(0).normal(size=(8, 3)), np.zeros(8, np.int64)

    def edit(epoch, logs):
        m.append(fm.ReLU())

    with pytest.raises(RuntimeError, match="being trained"):
        m.fit(x, y, fm.CrossEntropyLoss(), fm.optim.SGD(m.parameters(), lr=0.1), epochs=2, verbose=0,
              callbacks=[edit])
    assert len(m) == 3


# ---------------------------------------------------------------- the module tree
def test_named_modules_children_apply_match_torch():
    torch = torch_or_skip()
    m, t = nested(), torch_nested(torch)
    assert [n for n, _ in m.named_modules()] == [n for n, _ in t.named_modules()]

    def kind(mod):  # a Residual's block is torch's nn.Sequential
        return {"_Block": "Sequential"}.get(type(mod).__name__, type(mod).__name__)

    assert [kind(x) for x in m.modules()] == [kind(x) for x in t.modules()]
    assert [n for n, _ in m.named_children()] == [n for n, _ in t.named_children()]
    assert list(m.children()) == list(m)
    assert [n for n, _ in m[1].named_modules()] == [n for n, _ in t[1].named_modules()]
    assert [n for n, _ in m[1].named_parameters()] == [n for n, _ in t[1].named_parameters()]
    seen_m, seen_t = [], []
    m.apply(lambda mod: seen_m.append(kind(mod)))
    t.apply(lambda mod: seen_t.append(kind(mod)))
    assert seen_m == seen_t
    relu = fm.ReLU()  # a module met twice is listed once, as torch
    m2 = fm.Sequential(fm.Linear(2, 2), relu, fm.Linear(2, 2), relu, seed=0)
    t2 = torch.nn.Sequential(torch.nn.Linear(2, 2), r := torch.nn.ReLU(), torch.nn.Linear(2, 2), r)
    assert [n for n, _ in m2.named_modules()] == [n for n, _ in t2.named_modules()]


def test_apply_can_initialise_layers():
    m = nested()
    m.apply(lambda mod: fm.init.constant_(mod.weight, 0.25) if isinstance(mod, fm.Linear) else None)
    sd = m.state_dict()
    assert (sd["0.weight"] == 0.25).all() and (sd["1.block.0.weight"] == 0.25).all() and (sd["3.weight"] == 0.25).all()


# ---------------------------------------------------------------- frozen parameters
OPTIMIZERS = [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.05, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1)),
    ("Adadelta", dict(lr=1.0, weight_decay=0.1)),
    ("NAdam", dict(lr=0.05, weight_decay=0.1)),
    ("RAdam", dict(lr=0.05, weight_decay=0.1)),
    ("Adamax", dict(lr=0.05, weight_decay=0.1)),
    ("ASGD", dict(lr=0.05, lambd=0.01, t0=1.0, weight_decay=0.1)),
]


@pytest.fixture
def torch64():
    """torch keeps scalar state (NAdam's mu_product, ASGD's eta) in the default dtype: float64 here."""
    torch = torch_or_skip()
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(before)


@pytest.mark.parametrize("name,kw", OPTIMIZERS)
@pytest.mark.parametrize("how", ["fit", "fit_threads", "train_step", "step"])
def test_frozen_parameters_match_torch(name, kw, how, torch64):
    torch = torch64
    nn = torch.nn
    m = fm.Sequential(fm.Linear(4, 6), fm.Tanh(), fm.Linear(6, 6), fm.Tanh(), fm.Linear(6, 3), seed=1,
                      dtype="float64")
    t = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    t.load_state_dict({k: torch.tensor(v) for k, v in m.state_dict().items()})
    m[2].requires_grad_(False)
    m[4].bias.requires_grad_(False)
    t[2].requires_grad_(False)
    t[4].bias.requires_grad_(False)
    frozen = values(m)
    opt = getattr(fm.optim, name)(m.parameters(), **kw)
    topt = getattr(torch.optim, name)(t.parameters(), foreach=False, **kw)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(128, 4)), rng.integers(0, 3, 128)
    if how.startswith("fit"):  # 2 batches per epoch, no shuffle; each batch split in two chunks (fit_threads: on two threads)
        m.fit(x, y, fm.CrossEntropyLoss(), opt, epochs=2, batch_size=64, shuffle=False, verbose=0,
              n_threads=2 if how == "fit_threads" else 1)
    for epoch in range(2):
        for b in range(2):
            xb, yb = x[b * 64:(b + 1) * 64], y[b * 64:(b + 1) * 64]
            if how == "train_step":
                m.train_step(xb, yb, fm.CrossEntropyLoss(), opt)
            elif how == "step":
                opt.zero_grad()
                loss_fn = fm.CrossEntropyLoss()
                loss_fn(m(xb), yb)
                m.backward(loss_fn.backward())
                assert m[2].weight.grad is None and m[4].bias.grad is None and m[4].weight.grad is not None
                opt.step()
            topt.zero_grad()
            nn.functional.cross_entropy(t(torch.tensor(xb)), torch.tensor(yb)).backward()
            topt.step()
    sd, tsd = m.state_dict(), t.state_dict()
    for k in ("2.weight", "2.bias", "4.bias"):
        np.testing.assert_array_equal(sd[k], frozen[k])  # bit-identical: no decay, no momentum
    for k in sd:
        np.testing.assert_allclose(sd[k], tsd[k].numpy(), rtol=1e-9, atol=1e-11, err_msg=k)
    assert not np.array_equal(sd["0.weight"], frozen["0.weight"])
    # unfrozen, it trains again
    m[2].requires_grad_(True)
    opt = getattr(fm.optim, name)(m.parameters(), **kw)
    m.train_step(x, y, fm.CrossEntropyLoss(), opt)
    assert not np.array_equal(m.state_dict()["2.weight"], frozen["2.weight"])


def test_frozen_in_a_residual_block_and_lbfgs():
    m = nested()
    m[1].block[0].requires_grad_(False)
    assert [n for n, p in m.named_parameters() if not p.requires_grad] == ["1.block.0.weight", "1.block.0.bias"]
    before = values(m)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    m.fit(x, y, fm.CrossEntropyLoss(), fm.optim.LBFGS(m.parameters(), max_iter=5), epochs=2, verbose=0)
    sd = m.state_dict()
    np.testing.assert_array_equal(sd["1.block.0.weight"], before["1.block.0.weight"])
    assert not np.array_equal(sd["0.weight"], before["0.weight"])
    # the whole block, then everything: nothing trains, every optimizer group skipped
    m.requires_grad_(False)
    before = values(m)
    m.fit(x, y, fm.CrossEntropyLoss(), fm.optim.Adam(m.parameters(), lr=0.1), epochs=1, verbose=0)
    for k, v in m.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_requires_grad_survives_edits_copies_and_is_set_before_building():
    lin = fm.Linear(3, 3).requires_grad_(False)  # before the model exists: its Parameters start frozen
    m = fm.Sequential(lin, fm.ReLU(), fm.Linear(3, 2), seed=0)
    assert not m[0].weight.requires_grad and m[2].weight.requires_grad
    m.append(fm.Tanh())
    m.double()
    assert not m[0].weight.requires_grad and not m[0].bias.requires_grad
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert [p.requires_grad for p in other.parameters()] == [False, False, True, True]
    with pytest.raises(TypeError, match="True or False"):
        m[0].weight.requires_grad = 1


# ---------------------------------------------------------------- dtype
@pytest.mark.parametrize("method", ["to", "double"])
def test_to_dtype_converts_parameters_and_buffers_in_place(method):
    m = nested(dtype="float32")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(9, 5))
    m.train()
    m(x)  # BatchNorm's running statistics move
    m.eval()
    params, sd32 = list(m.parameters()), m.state_dict()
    out = m.to("float64") if method == "to" else m.double()
    assert out is m and m.dtype == np.float64 and not m.training
    assert list(m.parameters()) == params and all(p.dtype == np.float64 for p in params)
    for k, v in m.state_dict().items():
        assert v.dtype == (np.int64 if k.endswith("num_batches_tracked") else np.float64)
        np.testing.assert_array_equal(v, sd32[k].astype(v.dtype))
    assert m[1].block[1].running_var.dtype == np.float64
    ref = nested(dtype="float64")
    ref.load_state_dict(m.state_dict())
    ref.eval()
    np.testing.assert_array_equal(m(x), ref(x))
    assert m.float() is m and m.dtype == np.float32 and m[0].weight.dtype == np.float32
    torch = pytest.importorskip("torch")
    assert m.to(torch.float64).dtype == np.float64
    with pytest.raises(ValueError, match="float32"):
        m.to("int32")


# ---------------------------------------------------------------- summary
def test_summary_counts_match_torch():
    torch = torch_or_skip()
    m, t = nested(), torch_nested(torch)
    m[3].requires_grad_(False)
    t[3].requires_grad_(False)
    text = m.summary(print_fn=None)
    total = sum(p.numel() for p in t.parameters())
    trainable = sum(p.numel() for p in t.parameters() if p.requires_grad)
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {trainable:,}" in text
    assert f"Non-trainable params: {total - trainable:,}" in text
    assert f"Buffers (not trained): {sum(b.numel() for b in t.buffers())}" in text
    lines = text.splitlines()
    for name, mod in t.named_modules():
        if name and not name.endswith("block"):
            row = [ln for ln in lines if ln.strip().startswith(f"{name} (")]
            assert len(row) == 1, name
            assert row[0].split()[-1] == f"{sum(p.numel() for p in mod.parameters()):,}"
            assert row[0].startswith("  " * name.count(".block."))
    assert "(None, 3)" in [ln for ln in lines if ln.startswith("3 (Linear)")][0]
    printed = []
    assert m.summary(print_fn=printed.append) is None and printed == [text]


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_layer_of_a_model_pickles_and_copies_into_a_layer_of_its_own(how):
    """As torch: pickling or copying a model's layer (a residual block too) gives an independent layer with
    copies of its tensors, usable in a new model; the original model is unchanged. Pickling one failed
    (TypeError: its weak reference to its model)."""
    import copy
    import pickle

    m = fm.Sequential(fm.Linear(2, 3), fm.Residual(fm.Linear(3, 3), fm.BatchNorm1d(3)), fm.Tanh(), dtype="float64",
                      seed=0)
    x = np.linspace(-1, 1, 8).reshape(4, 2)
    m.train_step(x, np.zeros((4, 3)), fm.MSELoss(), fm.optim.SGD(m.parameters(), lr=0.1))
    m.eval()
    before = m(x)
    copies = [pickle.loads(pickle.dumps(la)) if how == "pickle" else copy.deepcopy(la) for la in m]
    for la, c in zip(m, copies):
        assert c._owner is None
        for (k, p), (k2, q) in zip(la.named_parameters(), c.named_parameters()):
            assert k == k2 and np.array_equal(p.data, q.data) and not np.shares_memory(p.data, q.data)
    twin = fm.Sequential(*copies, dtype="float64")
    twin.eval()
    np.testing.assert_array_equal(twin(x), before)  # running statistics came along
    np.testing.assert_array_equal(m(x), before)
