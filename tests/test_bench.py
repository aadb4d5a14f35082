"""Smoke test of the benchmark: bench/train_speed.py --quick runs and writes a
complete JSON. No timing assertions (timings on shared CI machines are noise)."""
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
    assert set(res["configs"]) == {"seed", "small", "large"}
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
    assert res["meta"]["fastmlp_fit_api"] is True  # timed model.fit/predict, not the train_step stand-in
