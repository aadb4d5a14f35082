"""Softmax regression: one Linear layer + CrossEntropyLoss on 3 Gaussian blobs.

CrossEntropyLoss takes raw logits (it applies log-softmax itself), exactly as
torch.nn.CrossEntropyLoss does, so the model is just Linear(2, 3).
"""
import numpy as np

import fastmlp as fm

CENTERS = np.array([[0.0, 3.0], [-2.6, -1.5], [2.6, -1.5]])


def make_blobs(n_per_class, seed):
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + rng.standard_normal((n_per_class, 2)) for c in CENTERS])
    y = np.repeat(np.arange(len(CENTERS)), n_per_class)
    return X.astype(np.float32), y


def accuracy(model, X, y):
    return float((model(X).argmax(axis=1) == y).mean())


def main(verbose=True):
    X_train, y_train = make_blobs(300, seed=0)
    X_test, y_test = make_blobs(100, seed=1)
    model = fm.Sequential(fm.Linear(2, 3), seed=0)
    loss_fn = fm.CrossEntropyLoss()
    opt = fm.optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(0)

    for epoch in range(10):
        idx = rng.permutation(len(X_train))
        for i in range(0, len(idx), 32):
            b = idx[i:i + 32]
            model.train_step(X_train[b], y_train[b], loss_fn, opt)
        if verbose and epoch % 3 == 0:
            print(f"epoch {epoch + 1:2d}  loss {loss_fn(model(X_train), y_train):.4f}")

    train_acc, test_acc = accuracy(model, X_train, y_train), accuracy(model, X_test, y_test)
    # softmax turns logits into class probabilities (rows sum to 1)
    probs = fm.Sequential(fm.Softmax())(model(X_test[:3]))
    if verbose:
        print(f"train accuracy {train_acc:.3f}, test accuracy {test_acc:.3f}")
        print("class probabilities of 3 test points:\n", np.round(probs, 3))
    return {"train_acc": train_acc, "test_acc": test_acc, "probs": probs}


if __name__ == "__main__":
    main()
