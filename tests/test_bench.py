"""The throughput benchmark keeps working (its numbers are not asserted: speed is
measured by running it, never in a timed test).

Each script runs as ``python SCRIPT ARGS`` would run it, its ``__main__`` block
included, but in this process (:func:`run_script`): a second interpreter would spend
most of the test importing torch and torchvision again."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "throughput.py"


def run_script(script: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``python SCRIPT ARGS`` in this process: (exit code, stdout, stderr)."""
    saved = sys.argv
    sys.argv = [str(script), *args]
    try:
        with pytest.raises(SystemExit) as exited:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.mark.slow
def test_benchmark_runs_both_loops_and_writes_its_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, stdout, stderr = run_script(
        BENCH, "--device", "cpu", "--threads", "1", "--images", "96",
        "--epochs", "1", "--batch-size", "32", "--workers", "0", "--out", str(out), capsys=capsys,
    )
    assert code == 0, stderr
    result = json.loads(out.read_text())
    for key in ("typical_images_per_s", "engine_images_per_s", "ratio", "peak_memory_mib", "conv_ceiling_images_per_s",
                "projected_seed_paper_grid_s"):
        assert result[key] > 0, key
    assert result["masked_weights_zero"] is True and result["engine_status"] == "done"
    assert result["engine_options"] == {"precision": "fp32", "channels_last": False, "compile": False,
                                        "cuda_graphs": False}
    assert result["engine_parallel_jobs"] == 1 and result["engine_notes"] == []
    assert "ratio" in stdout


@pytest.mark.slow  # ~5 s; run.parallel itself is covered fast in test_fast_engine.py
def test_benchmark_runs_parallel_engine_jobs(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, _, stderr = run_script(
        BENCH, "--device", "cpu", "--threads", "2", "--images", "64", "--epochs", "1",
        "--batch-size", "32", "--workers", "0", "--parallel", "2", "--set", "run.channels_last=on",
        "--out", str(out), capsys=capsys,
    )
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert result["engine_parallel_jobs"] == 2 and result["engine_options"]["channels_last"] is True
    assert result["masked_weights_zero"] is True and result["engine_status"] == "done"


@pytest.mark.slow  # ~3 s; a benchmark script, no engine or client module of its own
def test_lockstep_benchmark_runs(tmp_path, capsys):
    out = tmp_path / "lockstep.json"
    code, _, stderr = run_script(
        BENCH.with_name("lockstep.py"), "--threads", "1", "--models", "2",
        "--batch-size", "8", "--repeats", "1", "--out", str(out), capsys=capsys,
    )
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert result["lockstep_images_per_s"] > 0 and result["single_images_per_s"] > 0
