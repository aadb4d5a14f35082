"""Smoke test of the benchmark: bench/train_speed.py --quick runs and writes a
complete JSON. No timing assertions (timings on shared CI machines are noise)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "train_speed.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out-dir", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    return proc, out


def test_quick_exits_zero(quick_run):
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "s/epoch" in proc.stdout


def test_quick_json_complete(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "train_speed.json").read_text())
    assert set(res["configs"]) == {"seed", "small", "large", "mid"}
    for name, c in res["configs"].items():
        assert c["samples"] > 0 and c["train_flops_per_epoch"] > 0, name
        for fw in ("fastmlp", "numpy"):
            r = c["results"][fw]
            assert "error" not in r, (name, fw, r)
            assert r["s_per_epoch"] > 0 and all(t > 0 for t in r["times"]), (name, fw)
            assert r["samples_per_s"] > 0 and r["gflops"] > 0, (name, fw)
            assert r["loss"] == r["loss"] and r["loss"] > 0, (name, fw)  # finite, trained model evaluated
        assert c["speedup"]["numpy"] > 0, name
    assert res["sgemm"]["peak_gflops"] > 0
    r = res["recipe"]["results"]["fastmlp"]  # AdamW + warmup/cosine per batch + clip_grad_norm
    assert "error" not in r, r
    assert r["s_per_epoch"] > 0 and r["loss"] == r["loss"] and r["loss"] < res["recipe"]["init_loss"]
    p = res["predict"]
    assert p["results"]["fastmlp"]["s"] > 0 and p["results"]["numpy"]["s"] > 0
    # predict equals the NumPy forward of the same weights (float32 tolerance)
    assert p["results"]["fastmlp"]["max_abs_diff_vs_numpy"] < 1e-3
    assert "growth_bytes" in res["rss"], res["rss"]
    assert res["meta"]["quick"] is True
    assert_issue12_rows(res)
    assert res["meta"]["fastmlp_fit_api"] is True  # timed model.fit/predict, not the train_step stand-in


def has(module):
    return importlib.util.find_spec(module) is not None


def assert_trained_row(c, row, init_loss):
    r = c["results"][row]
    assert "error" not in r, (row, r)
    assert r["s_per_epoch"] > 0 and all(t > 0 for t in r["times"]) and r["gflops"] > 0, row
    assert r["loss"] == r["loss"] and 0 < r["loss"] < init_loss, row  # finite, and the row trained


def assert_issue12_rows(res):
    """The peers and rows of issue 12's table, each when its package is installed."""
    for name, c in res["configs"].items():
        if has("jax"):
            for row in ("jax-step", "jax-scan"):
                assert_trained_row(c, row, c["init_loss"])
                assert c["speedup"][row] > 0
    for name in ("large", "mid"):
        c = res["configs"][name]
        assert_trained_row(c, "fastmlp-bf16", c["init_loss"])
        assert c["bf16_speedup"] > 0
        if has("torch"):
            assert_trained_row(c, "torch-bf16", c["init_loss"])
            assert c["speedup"]["torch-bf16"] > 0
            assert 0 < c["results"]["fastmlp-bf16"]["share_of_bf16_peak"]
    if has("torch"):
        assert res["bf16_peak"]["torch_bf16_gflops"] > 0
    lat = res["predict"]["latency"]
    peers = ["fastmlp"] + (["onnxruntime"] if has("onnxruntime") and has("onnx") else []) + (
        ["torch"] if has("torch") else [])
    assert set(lat["results"]) == set(peers)
    for fw in peers:
        assert set(lat["results"][fw]) == {"1", "256", "60000"}
        for rows, r in lat["results"][fw].items():
            assert r["us_per_call"] > 0 and r["calls"] >= 1, (fw, rows)
            assert r["max_abs_diff_vs_fastmlp"] < 1e-3, (fw, rows)  # the peer computed the same model
    nb = res["neighbours"]
    assert nb["quiet_s_best"] > 0 and nb["after_numpy_s_best"] > 0 and nb["ratio"] > 0
    for name in ("digits", "synthetic"):  # bfloat16 against float32 training, held-out accuracy
        a = res["accuracy"][name]
        assert 0 < a["float32_accuracy"] <= 1 and 0 < a["bfloat16_accuracy"] <= 1, a
        assert a["float32_accuracy"] > (0.5 if name == "digits" else 0.15), a  # well above chance (0.1): trained
    if "dropout_threads" in res:  # skipped on one core
        assert res["dropout_threads"]["speedup"] > 0
    issue12 = {t["target"] for t in res["targets"] if t["issue"] == 12}
    assert "large, bfloat16: vs fastmlp float32" in issue12 and any("neighbours" in t for t in issue12)


def test_loads_by_path_from_elsewhere(tmp_path):
    """`fastmlp bench` loads train_speed.py by its path (importlib, bench/ not on sys.path), from any folder:
    its import of bench/_peers.py must still work."""
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('b', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print(callable(m.main))")
    proc = subprocess.run([sys.executable, "-c", code, str(SCRIPT)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-3000:]
