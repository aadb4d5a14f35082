"""An MLP (Linear-ReLU-Dropout-Linear) on two interleaved spirals.

Trained with Adam + ExponentialLR through an explicit PyTorch-style loop
(forward, loss, zero_grad, backward, step), then saved and reloaded.
"""
import os
import tempfile

import numpy as np

import fastmlp as fm


def make_spirals(n_per_class, seed, noise=0.15):
    """Two interleaved spirals, each making 1.5 turns; label 0 or 1."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1.0, n_per_class)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    X = np.concatenate([arm, -arm]) + noise * rng.standard_normal((2 * n_per_class, 2)) / 3
    y = np.repeat([0, 1], n_per_class)
    return X.astype(np.float32), y


def main(verbose=True):
    X_train, y_train = make_spirals(500, seed=0)
    X_test, y_test = make_spirals(250, seed=1)

    model = fm.Sequential(fm.Linear(2, 64), fm.ReLU(), fm.Dropout(0.1), fm.Linear(64, 2), seed=0)
    loss_fn = fm.CrossEntropyLoss()
    opt = fm.optim.Adam(model.parameters(), lr=0.02)
    sched = fm.optim.lr_scheduler.ExponentialLR(opt, gamma=0.98)
    rng = np.random.default_rng(0)

    for epoch in range(100):
        model.train()                              # dropout on
        idx = rng.permutation(len(X_train))
        for i in range(0, len(idx), 50):
            b = idx[i:i + 50]
            logits = model(X_train[b])             # forward
            loss = loss_fn(logits, y_train[b])     # loss (a float)
            opt.zero_grad()
            model.backward(loss_fn.backward())     # dL/dlogits -> parameter grads
            opt.step()
        sched.step()                               # once per epoch
        if verbose and (epoch + 1) % 25 == 0:
            print(f"epoch {epoch + 1:3d}  loss {loss:.4f}  lr {sched.get_last_lr()[0]:.5f}")

    model.eval()                                   # dropout off
    train_acc = float((model(X_train).argmax(1) == y_train).mean())
    test_acc = float((model(X_test).argmax(1) == y_test).mean())

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "spirals.npz")
        model.save(path)
        loaded = fm.load(path)
        loaded.eval()
        same = bool(np.array_equal(loaded(X_test), model(X_test)))

    if verbose:
        print(f"train accuracy {train_acc:.3f}, test accuracy {test_acc:.3f}")
        print(f"reloaded model gives identical predictions: {same}")
    return {"train_acc": train_acc, "test_acc": test_acc, "reload_identical": same,
            "final_lr": sched.get_last_lr()[0]}


if __name__ == "__main__":
    main()
