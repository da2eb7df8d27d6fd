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


@pytest.mark.slow  # ~10 s: a fresh interpreter is timed, and every way of training runs once
def test_grid_benchmark_measures_each_way_and_projects_the_grid(tmp_path, capsys):
    out = tmp_path / "grid.json"
    code, stdout, stderr = run_script(
        BENCH.with_name("grid_speed.py"), "--threads", "1", "--images", "64", "--val-images", "32",
        "--test-images", "32", "--batch-size", "32", "--epochs", "1", "--models", "1,2", "--workers", "0",
        "--no-data-load", "--out", str(out), capsys=capsys,
    )
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert [loop["workers"] for loop in result["typical"]] == [0]
    assert result["typical"][0]["images_per_s"] > 0
    engine = result["engine"]
    assert engine["dense"]["status"] == "done" and engine["eval_images_per_s"] > 0
    assert [group["models"] for group in engine["lockstep"]] == [1, 2]
    for group in engine["lockstep"]:
        assert group["status"] == "done" and group["masked_weights_zero"] is True
        assert group["images_per_s"] == pytest.approx(group["models"] * group["per_net_images_per_s"], rel=1e-3)
    assert engine["checkpoints_timed"] > 0 and engine["pruned_alone"]["grasp"]["prepare_s"] > 0
    assert result["fixed"]["start_import_s"] > 0 and result["fixed"]["data_load_s"] is None
    projected = result["projected_seed_paper_s"]
    for key in ("engine_one_at_a_time_s", "engine_lockstep_s", "typical_0_workers_s"):
        assert projected[key] > 0, key
    assert "groups of 6" in projected["lockstep_grouping"] and "seed-paper grid, projected" in stdout
    assert result["targets"]["vs_typical"]["0_workers"] > 0 and result["targets"]["engine_peak_memory_mib"] > 0


@pytest.mark.slow  # ~2 s; kept out of the developer loop, which is near its 60 s
def test_lockstep_check_passes_on_cpu_and_says_why_captured_is_skipped(tmp_path, capsys):
    out = tmp_path / "check.json"
    code, stdout, stderr = run_script(
        BENCH.with_name("lockstep_check.py"), "--threads", "1", "--images", "64", "--batch-size", "32",
        "--models", "2", "--out", str(out), capsys=capsys,
    )
    assert code == 0, stderr + stdout
    (result,) = json.loads(out.read_text())["results"]
    assert result["passed"] is True and result["max_relative_gap_to_eager"]["lockstep"] <= 1e-3
    assert result["first_epoch_train_loss"]["captured"].startswith("skipped: the captured step needs CUDA")
    assert "PASS" in stdout
