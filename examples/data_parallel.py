"""Data-parallel training over MPI: each rank trains on its own shard of the digits, the
gradients are summed over the ranks every step, and every rank ends with the same model.

    mpiexec -n 2 python examples/data_parallel.py        # needs the 'mpi' extra (mpi4py, mpich)
    python examples/data_parallel.py                     # one rank: plain training

batch_size is the global batch (32 rows per rank here); validation and early stopping are
decided on rank 0 and shared, so every rank stops at the same epoch.
"""
import numpy as np
from mpi4py import MPI

import fastmlp as fm


def main(verbose=True):
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    data = fm.datasets.load_digits(dtype=np.float64)
    X, y = data.X / 16.0, data.y
    order = np.random.default_rng(0).permutation(len(y))  # the same split on every rank
    test, train = order[:360], order[360:]
    mine = np.array_split(train, size)[rank]  # this rank's shard (in real use: load only your part)

    model = fm.Sequential(fm.Linear(64, 128), fm.ReLU(), fm.Linear(128, 10), seed=rank)  # rank 0's weights win
    loss = fm.CrossEntropyLoss()
    opt = fm.optim.Adam(model.parameters(), lr=3e-3)
    history = model.fit(X[mine], y[mine], loss, opt, epochs=40, batch_size=32 * size,
                        validation_data=(X[test], y[test]), callbacks=[fm.EarlyStopping(patience=3,
                                                                                        restore_best_weights=True)],
                        verbose=0, comm=comm)
    acc = model.evaluate(X[test], y[test], loss)["accuracy"]
    w = np.concatenate([p.data.ravel() for p in model.parameters()])
    same = comm.allreduce(float(np.abs(w - comm.bcast(w)).max()), op=MPI.MAX) == 0
    if verbose and rank == 0:
        print(f"{size} rank(s), {len(history.epoch)} epochs: test accuracy {acc:.3f}, "
              f"train loss {history.history['loss'][-1]:.4f}; identical model on every rank: {same}")
    return {"test_acc": acc, "epochs": len(history.epoch), "same": same, "ranks": size}


if __name__ == "__main__":
    main()
