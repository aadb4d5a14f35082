"""Linear regression trained with mini-batch SGD.

Synthetic data y = X w + b + noise with w = [2, -3.4], b = 4.2 (the classic
"linear regression from scratch" exercise), fitted by Sequential(Linear(2, 1)).
"""
import numpy as np

import fastmlp as fm

TRUE_W = np.array([2.0, -3.4])
TRUE_B = 4.2


def make_data(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2)).astype(np.float32)
    y = X @ TRUE_W + TRUE_B + rng.normal(0.0, 0.01, n)
    return X, y.astype(np.float32).reshape(-1, 1)


def main(verbose=True):
    X, y = make_data()
    model = fm.Sequential(fm.Linear(2, 1), seed=0)
    loss_fn = fm.MSELoss()
    opt = fm.optim.SGD(model.parameters(), lr=0.03)
    rng = np.random.default_rng(1)
    batch_size, epochs = 10, 3

    for epoch in range(epochs):
        idx = rng.permutation(len(X))                  # shuffle every epoch
        for i in range(0, len(X), batch_size):
            b = idx[i:i + batch_size]
            model.train_step(X[b], y[b], loss_fn, opt)  # zero_grad, forward, loss, backward, step
        if verbose:
            print(f"epoch {epoch + 1}, loss {loss_fn(model(X), y):.6f}")

    w = model[0].weight.data.ravel().astype(np.float64)
    b = float(model[0].bias.data[0])
    if verbose:
        print(f"true w = {TRUE_W}, learned w = {np.round(w, 4)}")
        print(f"true b = {TRUE_B}, learned b = {b:.4f}")
    return {"w": w, "b": b, "loss": loss_fn(model(X), y)}


if __name__ == "__main__":
    main()
