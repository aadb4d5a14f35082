"""Write seed inputs for the fuzz targets: valid model files of several
architectures, dtypes and optimizers (fuzz_load*), and a few byte strings
(fuzz_arrays). Usage: python fuzz/make_corpus.py CORPUS_ROOT"""
from __future__ import annotations

import os
import sys

import numpy as np

import fastmlp as fm


def model_files(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    specs = [
        (lambda: [fm.Linear(3, 2)], "float32", None),
        (lambda: [fm.Linear(4, 5), fm.ReLU(), fm.Dropout(0.2), fm.Linear(5, 3)], "float64", "Adam"),
        (lambda: [fm.Linear(2, 3, bias=False), fm.Tanh(), fm.Linear(3, 1, init="xavier_uniform")], "float32", "SGD"),
        (lambda: [fm.Linear(3, 3), fm.LeakyReLU(0.2), fm.Softmax()], "float64", "RMSprop"),
        (lambda: [fm.Sigmoid(), fm.GELU()], "float32", None),
        (lambda: [fm.Linear(2, 2), fm.Identity(), fm.Linear(2, 2)], "float32", "Adagrad"),
        (lambda: [fm.Linear(1, 2)], "float64", "Adadelta"),
        (lambda: [fm.Linear(2, 2)], "float32", "AdamW"),
    ]
    for i, (layers, dtype, opt_name) in enumerate(specs):
        m = fm.Sequential(*layers(), seed=i, dtype=dtype)
        opt = None
        if opt_name and m.num_parameters():
            kw = {"momentum": 0.9} if opt_name == "SGD" else {}
            opt = getattr(fm.optim, opt_name)(m.parameters(), lr=1e-2, **kw)
            n_in = m.in_features
            y = np.zeros_like(m(np.ones((2, n_in))))
            m.train_step(rng.normal(size=(2, n_in)), y, fm.MSELoss(), opt)
        if i % 3 == 2:
            m.eval()  # header "training": false
        m.save(os.path.join(out, f"model{i}.npz"), optimizer=opt)


def array_seeds(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(16):
        with open(os.path.join(out, f"seed{i}"), "wb") as f:
            f.write(rng.bytes(int(rng.integers(16, 400))))


def data_seeds(out: str) -> None:
    """Inputs of fuzz_datasets.py: byte 0 picks the reader (0 csv, 1 npz, 2 idx), byte 1 flags (bit 0: gzip)."""
    import io
    import struct

    os.makedirs(out, exist_ok=True)
    seeds = {
        "csv": b"\x00\x00" + b"a,b,label\n1,2,cat\n3.5,-4,dog\n0,1e3,cat\n",
        "csv_num": b"\x00\x02" + b"y,x1,x2\n1,0.5,2\n0,1,1\n",
        "csv_gz": b"\x00\x01" + b"x,y\n1,2\n2,3\n",
        "idx": b"\x02\x00" + b"\x00\x00\x08\x03" + struct.pack(">III", 2, 2, 2) + bytes(range(8)),
        "idx_f": b"\x02\x00" + b"\x00\x00\x0d\x02" + struct.pack(">II", 2, 3) + np.ones(6, ">f4").tobytes(),
    }
    buf = io.BytesIO()
    np.savez(buf, X=np.arange(6.0).reshape(3, 2), y=np.array([0, 1, 0]))
    seeds["npz"] = b"\x01\x00" + buf.getvalue()
    for k, v in seeds.items():
        with open(os.path.join(out, k), "wb") as f:
            f.write(v)


if __name__ == "__main__":
    root = sys.argv[1]
    data_seeds(os.path.join(root, "datasets"))
    model_files(os.path.join(root, "load"))
    model_files(os.path.join(root, "load_header"))
    array_seeds(os.path.join(root, "arrays"))
