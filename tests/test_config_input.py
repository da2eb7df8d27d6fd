"""Config and command-line input a user can get wrong: every bad value is one readable
line naming the key, file or option at fault, with exit code 2 and no traceback, and
nothing is created on disk. Also the one-line form of unexpected errors, the thread
cap, and what ``lotto-tui config`` says about the ``[run]`` settings.

Most checks run ``lotto_tui.cli.main`` in-process (fast); exit codes that matter as a
process sees them are checked on the real console script.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from lotto_engine import devices
from lotto_engine.config import MAX_EPOCHS, RunConfig, load_config, reference_markdown
from lotto_engine.errors import ConfigError, escape_controls, one_line
from lotto_tui.cli import main

LOTTO = Path(sys.executable).with_name("lotto-tui")

SMALL = [  # a grid that finishes in a moment, should a check let it start
    "--set", 'grid.activations=["relu"]',
    "--set", 'grid.methods=["magnitude"]',
    "--set", "grid.sparsities=[0.5]",
    "--set", "train.dense_epochs=1",
    "--set", "train.pruned_epochs=1",
    "--set", "model.width=2",
    "--set", "model.hidden=8",
]
TINY = ["--preset", "demo", *SMALL]


def one_error_line(code: int, err: str, *needles: str) -> str:
    """Exit 2 and exactly one stderr line, printable, naming every needle."""
    assert code == 2, (code, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert escape_controls(lines[0]) == lines[0], lines[0]  # no raw control character
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------ 1. full-match validation


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--batch", "--device", "cpu\n"], "run.device"),
        (["--batch", "--set", 'run.device="cuda\\n"'], "run.device"),
        (["--batch", "--set", 'run.device="cuda:\u0663"'], "run.device"),  # a non-ASCII digit
        (["--batch", "--set", 'prune.rewind="init\\n"'], "prune.rewind"),
        (["--batch", "--set", 'prune.rewind="epoch:1\\n"'], "prune.rewind"),
    ],
)
def test_a_trailing_newline_or_odd_digit_is_refused(capsys, tmp_path, args, key):
    store = tmp_path / "runs"
    code, _, err = run_main(capsys, *args, "--store", str(store))
    one_error_line(code, err, f"{key}:")
    assert not store.exists()


def test_the_strict_patterns_still_accept_every_documented_form():
    for device in ("auto", "cpu", "mps", "cuda", "cuda:0", "cuda:12"):
        assert load_config(overrides=[f"run.device={device}"]).run.device == device
    config = load_config(overrides=["train.dense_epochs=5", 'prune.rewind="epoch:3"'])
    assert config.prune.rewind_epoch == 3
    assert load_config().prune.rewind_epoch is None


# ------------------------------------------------------------ 2. --set run=1 with flags


@pytest.mark.parametrize("flags", [[], ["--store", "S"], ["--device", "cpu"], ["--store", "S", "--device", "cpu"]])
def test_a_section_set_to_a_value_is_the_same_error_with_or_without_flags(capsys, tmp_path, flags):
    flags = [str(tmp_path / f) if f == "S" else f for f in flags]
    code, _, err = run_main(capsys, "--batch", "--set", "run=1", *flags)
    line = one_error_line(code, err)
    assert line == "lotto-tui: config error: run: expected a table, got 1"
    assert not (tmp_path / "S").exists()


def test_an_empty_store_flag_is_refused_not_ignored(capsys, tmp_path):
    code, _, err = run_main(capsys, "--batch", "--store", "")
    one_error_line(code, err, "run.store:", "empty")


# ------------------------------------------------------------ 3. upper bounds


@pytest.mark.parametrize(
    ("key", "too_big", "limit"),
    [
        ("train.dense_epochs", 100_001, "100000"),
        ("train.pruned_epochs", 10**30, "100000"),
        ("train.lr_step_epochs", 10**9, "100000"),
        ("model.width", 1025, "1024"),
        ("model.hidden", 10**15, "16384"),
        ("train.batch_size", 65_537, "65536"),
        ("train.eval_batch_size", 2**40, "65536"),
        ("prune.score_samples", 10**12, "100000"),
        ("data.crop_padding", 10**9, "64"),
        ("grid.seeds", "[4294967296]", "4294967295"),
    ],
)
def test_numbers_that_could_hang_or_exhaust_memory_are_bounded(capsys, key, too_big, limit):
    code, _, err = run_main(capsys, "config", "--set", f"{key}={too_big}")
    one_error_line(code, err, f"{key}:", limit)


def test_the_epoch_cap_itself_is_accepted():
    config = load_config(overrides=[f"train.dense_epochs={MAX_EPOCHS}", f"train.pruned_epochs={MAX_EPOCHS}"])
    assert config.train.dense_epochs == MAX_EPOCHS == 100_000


def test_epochs_as_a_huge_float_in_a_file_is_one_line(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("[train]\ndense_epochs = 1e30\n")
    proc = subprocess.run([str(LOTTO), "--batch", "--config", str(path), "--store", "runs"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    one_error_line(proc.returncode, proc.stderr, "train.dense_epochs:")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------ 4. threads


def test_threads_above_the_available_cores_are_capped_with_a_note():
    cores = devices.available_cores()
    run = RunConfig(threads=cores + 3, device="cpu")
    execution = devices.execution(run)
    assert execution.threads == devices.threads_for(run) == cores
    [note] = [n for n in execution.notes if "run.threads" in n]
    assert f"run.threads = {cores + 3}" in note and f"using {cores} threads" in note
    # what the runner calls with the configured count: the cap applies there too
    assert devices.configure(cores + 3, True) == cores
    assert torch.get_num_threads() == cores


def test_threads_within_the_cores_are_used_as_asked_and_say_nothing():
    execution = devices.execution(RunConfig(threads=1, device="cpu"))
    assert execution.threads == 1 and not any("run.threads" in n for n in execution.notes)
    assert devices.execution(RunConfig(device="cpu")).threads == devices.available_cores()


@pytest.mark.slow
def test_a_batch_run_with_too_many_threads_prints_the_note_and_succeeds(capsys, tmp_path):
    cores = devices.available_cores()
    code, out, err = run_main(capsys, "--batch", *TINY, "--set", "run.threads=512", "--device", "cpu",
                              "--store", str(tmp_path / "runs"))
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("note: run.threads")]
    assert notes == [f"note: run.threads = 512 but this process may use {cores} core(s): using {cores} threads"]


# ------------------------------------------------------------ 5. one readable line per error

# The shape of a c10 error with C++ stack traces on (TORCH_SHOW_CPP_STACKTRACES=1).
TORCH_MESSAGE = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
    "you tried to allocate 4000000000000000 bytes.\n"
    "Exception raised from alloc_cpu at ../c10/core/impl/alloc_cpu.cpp:117 (most recent call first):\n"
    + "".join(f"frame #{i}: c10::something<{'x' * 40}>() + 0x{i:x} (0x7f in /lib/libc10.so)\n" for i in range(20))
)


def test_one_line_drops_the_cpp_backtrace_and_keeps_the_message():
    text = one_line(RuntimeError(TORCH_MESSAGE))
    assert text == (
        "data. DefaultCPUAllocator: not enough memory: you tried to allocate 4000000000000000 bytes."
    )


def test_one_line_on_a_real_torch_allocation_failure_is_short_and_readable():
    with pytest.raises(RuntimeError) as info:
        torch.empty(2**62, dtype=torch.uint8)
    text = one_line(info.value)
    assert "\n" not in text and len(text) <= 300 and "frame #" not in text
    assert "allocate" in text


def test_one_line_escapes_controls_truncates_and_names_an_empty_error():
    assert one_line(ValueError("bad \x1b[2J value\tand\r\nmore")) == "bad \\x1b[2J value and"
    assert one_line(KeyError("")) == "''"
    assert one_line(MemoryError()) == "MemoryError"
    long = one_line(ValueError("x" * 1000), limit=50)
    assert len(long) == 50 and long.endswith("…")
    # a first line that introduces a list keeps the next line
    assert one_line(RuntimeError("Error(s) in loading state_dict:\n\tsize mismatch for fc1")) == (
        "Error(s) in loading state_dict: size mismatch for fc1"
    )


def test_the_runner_stores_a_failed_jobs_error_as_one_line(tmp_path, monkeypatch):
    from conftest import tiny_config
    from lotto_engine.executors import local
    from lotto_engine.runner import PARENT_FAILED, Runner
    from lotto_engine.store import Store

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(TORCH_MESSAGE)

    monkeypatch.setattr(local, "run_job", broken)  # the dense job raises torch's long error
    with Store(tmp_path / "runs") as store:
        summary = Runner(tiny_config(), store).run()
        errors = [r.error for r in store.runs(summary.experiment_id)]
    # the job's error with its type; its pruned job's without one
    assert errors == ["RuntimeError: " + one_line(RuntimeError(TORCH_MESSAGE)), PARENT_FAILED]
    assert PARENT_FAILED == "its dense run did not finish"


def test_an_internal_error_is_one_short_line_without_the_backtrace(capsys, monkeypatch):
    import lotto_tui.commands

    def broken(opts: object) -> int:
        raise RuntimeError(TORCH_MESSAGE)

    monkeypatch.delenv("LOTTO_TUI_DEBUG", raising=False)
    monkeypatch.setattr(lotto_tui.commands, "config_command", broken)
    code, _, err = run_main(capsys, "config")
    assert code == 70 and len(err.splitlines()) == 1, err
    assert "frame #" not in err and "Exception raised from" not in err and len(err) < 400
    assert err.startswith("lotto-tui: internal error: RuntimeError: data. DefaultCPUAllocator")


# ------------------------------------------------------------ 6. nesting, NUL bytes, control characters


def test_toml_nested_50000_deep_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 50_000 + "]" * 50_000 + "\n")
    proc = subprocess.run([str(LOTTO), "--batch", "--config", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    one_error_line(proc.returncode, proc.stderr, "deep.toml", "nested too deeply")


def test_a_deeply_nested_set_value_is_one_line(capsys):
    code, _, err = run_main(capsys, "config", "--set", "grid.seeds=" + "[" * 50_000 + "]" * 50_000)
    one_error_line(code, err, "grid.seeds", "nested too deeply")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--batch", "--config", "a\x00b.toml"], "--config"),
        (["--batch", "--store", "runs\x00x"], "--store"),
        (["config", "--config", "a\x00b.toml"], "--config"),
        (["export", "--format", "json", "--store", "s\x00"], "--store"),
        (["export", "--format", "json", "--out", "o\x00.json"], "--out"),
        (["experiments", "--store", "s\x00"], "--store"),
        (["--batch", "--store", "new\nline"], "--store"),
    ],
)
def test_a_nul_byte_or_control_character_in_a_path_option_is_one_line(capsys, tmp_path, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, *args)
    one_error_line(code, err, f"{option}:", "control character")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('[data]\nroot = "da\\u0000ta"', "data.root"),
        ('[run]\nstore = "ru\\u0000ns"', "run.store"),
        ('[run]\nname = "a\\u001b]0;pwned\\u0007\\u001b[2J"', "run.name"),
        ('[run]\nname = "two\\nlines"', "run.name"),
        ('[run]\nname = "sep\\u2028arator"', "run.name"),
        ('[run]\nname = "\\u202eevil"', "run.name"),  # right-to-left override: reorders the line
    ],
)
def test_control_characters_in_path_and_name_keys_are_refused_at_validation(tmp_path, line, key):
    path = tmp_path / "c.toml"
    path.write_text(line + "\n")
    proc = subprocess.run([str(LOTTO), "--batch", "--config", str(path), *SMALL], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    one_error_line(proc.returncode, proc.stderr, f"{key}:", "control characters")
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]  # no store, no data folder


def test_a_key_holding_escape_sequences_is_printed_escaped(capsys):
    code, _, err = run_main(capsys, "config", "--set", "grid.\x1b[2Jx\n=1")
    line = one_error_line(code, err, "grid.\\x1b[2Jx")
    assert "\x1b" not in line


BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
        "\u200e", "\u200f", "\u061c"]


@pytest.mark.parametrize("ch", BIDI)
def test_bidi_formatting_characters_in_a_name_are_refused_in_process(capsys, ch):
    """``run.name="\\u202eevil"`` would reorder what ``experiments`` prints: refused like a control."""
    code, out, err = run_main(capsys, "config", "--set", f'run.name="{ch}evil"')
    line = one_error_line(code, err, "run.name:", "control characters", f"\\u{ord(ch):04x}")
    assert ch not in line and out == ""
    assert escape_controls(f"{ch}evil") == f"\\u{ord(ch):04x}evil"
    assert one_line(ValueError(f"a {ch} b")) == f"a \\u{ord(ch):04x} b"


def test_printable_unicode_names_and_paths_are_still_fine():
    config = load_config(overrides=['run.name="caf\u00e9 \U0001f9ea"', 'data.root="d\u00e4ta"'])
    assert config.run.name == "caf\u00e9 \U0001f9ea" and config.data.root == "d\u00e4ta"
    # right-to-left text itself (Hebrew, Arabic) is no control: only the invisible marks are
    config = load_config(overrides=['run.name="\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627"'])
    assert config.run.name == "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627"


# ------------------------------------------------------------ 7. unquoted strings in lists


def test_unquoted_strings_in_a_list_show_the_fixed_value(capsys):
    code, _, err = run_main(capsys, "config", "--set", "grid.activations=[tanh]")
    line = one_error_line(code, err)
    assert line == (
        "lotto-tui: config error: --set grid.activations: strings in lists need quotes; "
        "write 'grid.activations=[\"tanh\"]'"
    )


def test_the_suggested_value_is_what_a_shell_user_can_paste(capsys):
    code, _, err = run_main(capsys, "config", "--set", "grid.activations=[tanh, 'relu',sigmoid,]")
    suggestion = one_error_line(code, err, "strings in lists need quotes").split("write ", 1)[1]
    [fixed] = shlex.split(suggestion)  # one shell word, as typed after --set
    assert fixed == 'grid.activations=["tanh", \'relu\', "sigmoid"]'
    code, out, err = run_main(capsys, "config", "--set", fixed)
    assert code == 0, err
    assert tomllib.loads(out)["grid"]["activations"] == ["tanh", "relu", "sigmoid"]


def test_other_malformed_lists_keep_the_parser_message():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["grid.sparsities=[0.5"])
    [problem] = info.value.problems
    assert problem.startswith("--set grid.sparsities: invalid TOML value '[0.5' (")  # then tomllib's words


# ------------------------------------------------------------ 8. what [run] says about the numbers


def test_the_run_section_says_which_settings_change_the_numbers(capsys):
    code, out, err = run_main(capsys, "config")
    assert code == 0, err
    run_part = out[out.index("[run]"):]
    comment = " ".join(line[1:].strip() for line in run_part.splitlines() if line.startswith("#"))
    assert "none of it changes" not in out
    assert "change the numbers" in comment and "part of the job key" in comment
    for key in ("device", "precision", "threads", "deterministic"):
        assert key in comment.split("change the numbers")[0], key
    assert tomllib.loads(out)["run"]["threads"] == 0  # the longer comment is still valid TOML


def test_the_key_reference_says_it_for_device_precision_and_threads():
    rows = {line.split("|")[1].strip(): line for line in reference_markdown().splitlines()[2:]}
    for key in ("`run.device`", "`run.precision`", "`run.threads`"):
        assert "changes the numbers" in rows[key], rows[key]
    assert "capped" in rows["`run.threads`"]
