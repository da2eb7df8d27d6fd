"""``lotto-tui report``: paper figures and report.md for one experiment or two.

Fast tests read a store written by hand (no training); the slow ones run real tiny
grids and the real command. Every figure file is opened as a reader would open it:
PNGs decode (Pillow), SVGs parse (ElementTree), PDFs have their header and trailer.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from lotto_engine.plan import build_plan
from lotto_engine.records import EpochMetrics, LayerSparsity, RunResult
from lotto_engine.runner import Runner
from lotto_engine.store import Store
from lotto_engine.views.results import load_results
from lotto_tui import cli, figures, paper

from conftest import run_cli, tiny_config

#: the figure sets every report with pruned runs has, as file stems
SETS = ("accuracy-vs-sparsity", "mask-vs-target", "stability-vs-sparsity")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def point(epoch: int, acc: float) -> EpochMetrics:
    return EpochMetrics(epoch, 1.0 - acc, acc, 1.1 - acc, acc, 0.1, 0.5)


def hand_written(root: Path) -> tuple[Store, int]:
    """relu and tanh x magnitude x {0.5, 0.8} x seeds {0, 1}, every run done with made-up
    numbers; one run of tanh/magnitude/0.8 flagged chance_level. No training."""
    config = tiny_config("grid.seeds=[0,1]", 'grid.activations=["relu","tanh"]', "grid.sparsities=[0.5,0.8]")
    store = Store(root)
    exp = store.experiment_for(config)
    for job in build_plan(config).jobs:
        run = store.start_run(exp.id, job)
        pruned = job.kind == "pruned"
        acc = 0.9 - 0.3 * job.sparsity + 0.02 * job.seed
        layers = [LayerSparsity("conv.weight", 100, round(100 * (1 - job.sparsity * 0.8))),
                  LayerSparsity("fc.weight", 200, round(200 * (1 - job.sparsity * 1.1)))] if pruned else []
        flagged = job.activation == "tanh" and job.sparsity == 0.8 and job.seed == 1
        store.finish_run(run, RunResult(
            "done", [point(1, acc - 0.2), point(2, acc)], val_acc=acc, best_val_acc=acc + 0.01,
            test_acc=acc - 0.01, actual_sparsity=job.sparsity if pruned else None, layers=layers,
            stability=(0.3 + job.sparsity + 0.05 * job.seed) if pruned else None, wall_time=1.0,
            flags=("chance_level",) if flagged else (),
            numerics={"device": "cpu", "precision": "fp32", "threads": 1},
        ))
    return store, exp.id


@pytest.fixture
def written(tmp_path: Path):
    store, exp_id = hand_written(tmp_path / "store")
    with store:
        yield store, exp_id


def check_file(path: Path) -> None:
    """``path`` is a whole, readable figure of its format."""
    data = path.read_bytes()
    if path.suffix == ".png":
        with Image.open(path) as image:
            image.verify()  # the checksums and structure
        with Image.open(path) as image:
            image.load()  # every pixel decodes
            assert image.width > 300 and image.height > 150
    elif path.suffix == ".svg":
        root = ET.fromstring(data)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert len(list(root.iter())) > 50  # drawn, not an empty canvas
    elif path.suffix == ".pdf":
        assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    else:  # pragma: no cover
        raise AssertionError(f"unexpected file {path}")


def links(report: Path) -> set[str]:
    return set(LINK.findall(report.read_text(encoding="utf-8")))


def check_report_links(out: Path, written: list[Path]) -> None:
    """report.md links every figure written, and every link is a file there."""
    report, *figure_files = written
    assert report == out / "report.md"
    on_disk = {p.name for p in out.iterdir()} - {"report.md"}
    assert {p.name for p in figure_files} == on_disk
    assert links(report) == on_disk


# ------------------------------------------------------------------ fast: hand-written store


def test_report_of_one_experiment_writes_each_figure_set_and_links_them(written, tmp_path: Path) -> None:
    store, exp_id = written
    out = tmp_path / "out" / "nested"  # made when missing
    paths = paper.write_report(store, None, out, ("png",))
    check_report_links(out, paths)
    stems = {p.stem for p in paths[1:]}
    assert stems == {*SETS, "curves-relu", "curves-tanh", "layer-sparsity-magnitude"}
    for path in paths[1:]:
        check_file(path)
    text = paths[0].read_text(encoding="utf-8")
    assert f"(experiment {exp_id})" in text or f"experiment {exp_id}" in text
    data = load_results(store, exp_id, include_running=False)
    cell = next(c for c in data.cells if c.key == ("tanh", "magnitude", "none", 0.8))
    # the table shows the engine's numbers, formatted: mean ± ci95 (n=2), and the flag count
    row = next(line for line in text.splitlines() if "| 0.8 |" in line and "1/2 chance_level" in line)
    val = cell.stat("val_acc")
    assert f"{val.mean:.3f} ± {val.ci95:.3f} (n=2)" in row
    # the stored config, as JSON that parses back to the experiment's
    block = re.search(r"```json\n(.*?)\n```", text, re.S)
    assert block is not None and json.loads(block.group(1)) == data.config


def test_flagged_points_are_hollow_and_the_legend_says_so(written) -> None:
    store, exp_id = written
    data = load_results(store, exp_id, include_running=False)
    fig = figures.accuracy_vs_sparsity([figures.Source(data)])
    tanh = fig.axes[1]
    assert tanh.get_title() == "tanh"
    def is_hollow(line) -> bool:  # white inside, the series' colour as its edge
        return line.get_marker() not in ("None", "none", "") and line.get_markerfacecolor() == "white"

    hollow = [(line.get_xdata(), line.get_ydata()) for line in tanh.get_lines() if is_hollow(line)]
    flagged = next(c for c in data.cells if c.flagged)
    assert len(hollow) == 1 and hollow[0][1][0] == pytest.approx(flagged.val_acc)
    assert not [line for line in fig.axes[0].get_lines() if is_hollow(line)]  # relu: none flagged
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "hollow: a run is flagged" in legend and "magnitude" in legend and "chance (1/K)" in legend
    assert tanh.get_ylim() == (0.0, 1.0)


def test_provenance_and_mixed_numerics_are_printed(written) -> None:
    import dataclasses

    store, exp_id = written
    data = load_results(store, exp_id, include_running=False)
    record = {"command": "lotto-tui --batch --preset demo", "lotto_tui": "0.1.0", "torch": "2.4.1",
              "git_commit": "0123abc", "dataset_checksums": {"digits.npz": "sha256:feed"}, "cuda": None}
    cells = [dataclasses.replace(c, mixed_numerics=True) if c.method == "dense" else c for c in data.cells]
    data = dataclasses.replace(data, provenance=[record], cells=cells,
                               numerics=[*data.numerics, {"device": "cuda", "precision": "bf16", "threads": 1}])
    text = paper.report_markdown([data], [])
    section = text.split("## Provenance")[1].split("## Config")[0]
    assert "| command | `lotto-tui --batch --preset demo` |" in section
    assert "| dataset_checksums.digits.npz | `sha256:feed` |" in section  # nested keys flattened
    assert "| git_commit | `0123abc` |" in section and "| cuda | – |" in section
    assert "2 different settings" in section and "device cuda, precision bf16, threads 1" in section
    dense_rows = [line for line in text.splitlines() if line.startswith("| dense |")]
    assert len(dense_rows) == 2 and all(row.endswith("mixed numerics |") for row in dense_rows)


def test_an_experiment_without_finished_runs_gets_a_report_and_no_figures(tmp_path: Path) -> None:
    config = tiny_config()
    with Store(tmp_path / "store") as store:
        exp = store.experiment_for(config)
        store.start_run(exp.id, build_plan(config).jobs[0])  # running: not in a finished report
        paths = paper.write_report(store, [exp.id], tmp_path / "out")
    assert paths == [tmp_path / "out" / "report.md"]
    text = paths[0].read_text(encoding="utf-8")
    assert "No finished runs yet" in text and "No figures" in text and not links(paths[0])


def test_a_series_has_one_style_everywhere() -> None:
    from lotto_engine.config import VARIANTS
    from lotto_engine.scores import METHODS

    assert figures.METHOD_ORDER == tuple(METHODS.names())  # every method has its own colour and marker
    styles = [figures.series_style(m) for m in figures.METHOD_ORDER]
    assert len({s.colour for s in styles}) == len({s.marker for s in styles}) == len(styles)
    assert figures.series_style("dense").colour not in {s.colour for s in styles}
    shuffled = [figures.series_style(f"magnitude/{v}") for v in VARIANTS]
    assert len({(s.linestyle, s.fill) for s in shuffled}) == len(VARIANTS)  # a variant reads apart
    assert {s.colour for s in shuffled} == {styles[0].colour}  # in its method's colour
    assert "none" not in {s.fill for s in shuffled}  # hollow is kept for flagged points
    assert figures.series_style("something-new") == figures.series_style("something-new")
    assert paper.FORMATS == figures.FORMATS


@pytest.mark.parametrize("text, expected", [("png", ("png",)), ("svg, PDF,svg", ("svg", "pdf"))])
def test_formats_are_comma_separated_and_checked(text: str, expected: tuple[str, ...]) -> None:
    assert paper.parse_formats(text) == expected


def run_main(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["report", *args])
    return code, err.getvalue()


def test_bad_input_is_one_line_and_exit_2(written, tmp_path: Path) -> None:
    store, exp_id = written
    root = str(store.root)
    out = str(tmp_path / "out")
    cases = {
        ("--store", root, "--out", out, "--format", "png,jpg"): "unknown figure format 'jpg'",
        ("--store", root, "--out", out, "--format", ""): "unknown figure format",
        ("--store", str(tmp_path / "nowhere"), "--out", out): "no results store",
        ("--store", root, "--out", out, "--experiment", "99"): "no experiment 99",
        ("--store", root, "--out", out, *["--experiment", str(exp_id)] * 3): "at most two experiments",
        ("--store", root, "--out", out, "--experiment", str(exp_id), "--experiment", str(exp_id)): "given twice",
    }
    for args, message in cases.items():
        code, err = run_main(*args)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and err.startswith("lotto-tui: ") and message in err, (args, err)
    assert not (tmp_path / "out").exists()  # nothing written for a refused request
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = run_main("--store", root, "--out", str(blocker / "report"))
    assert code == 2 and err.count("\n") == 1 and err.startswith("lotto-tui: --out: cannot write"), err


# ------------------------------------------------------------------ slow: real grids


@pytest.fixture(scope="module")
def two_grids(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """Two finished real grids in one store: relu and tanh x magnitude x {0.5, 0.8} x
    two seeds, the second with another learning rate."""
    root = tmp_path_factory.mktemp("report") / "runs"
    grid = ('grid.activations=["relu","tanh"]', "grid.sparsities=[0.5,0.8]", "grid.seeds=[0,1]", f'run.store="{root}"')
    ids = []
    with Store(root) as store:
        for extra in ((), ("train.lr=0.1",)):
            config = tiny_config(*grid, *extra)
            assert Runner(config, store).run().ok
            ids.append(store.find_experiment(config).id)
    return root, ids[0], ids[1]


@pytest.mark.slow
def test_every_format_of_a_real_grid_reads_back_and_reruns_identically(two_grids, tmp_path: Path) -> None:
    root, first, _ = two_grids
    with Store(root, create=False) as store:
        paths = paper.write_report(store, [first], tmp_path / "a", ("png", "svg", "pdf"))
        again = paper.write_report(store, [first], tmp_path / "b", ("png", "svg", "pdf"))
    check_report_links(tmp_path / "a", paths)
    stems = {p.stem for p in paths[1:]}
    assert stems == {*SETS, "curves-relu", "curves-tanh", "layer-sparsity-magnitude"}
    for stem in stems:  # one file per figure and format
        assert {p.suffix for p in paths if p.stem == stem} == {".png", ".svg", ".pdf"}
    for path in paths[1:]:
        check_file(path)
    text = paths[0].read_text(encoding="utf-8")
    assert "![Validation accuracy vs sparsity](accuracy-vs-sparsity.png)" in text  # first format shown
    assert "[svg](accuracy-vs-sparsity.svg)" in text and "[pdf](accuracy-vs-sparsity.pdf)" in text
    # no dates, a fixed SVG id salt: a rerun writes the same bytes
    for a, b in zip(paths, again):
        assert a.read_bytes() == b.read_bytes(), a.name


@pytest.mark.slow
def test_two_experiments_side_by_side_with_differences(two_grids, tmp_path: Path) -> None:
    root, first, second = two_grids
    out = tmp_path / "compare"
    with Store(root, create=False) as store:
        paths = paper.write_report(store, [first, second], out, ("png",))
        a = load_results(store, first, include_running=False)
        b = load_results(store, second, include_running=False)
    check_report_links(out, paths)
    for path in paths[1:]:
        check_file(path)
    text = paths[0].read_text(encoding="utf-8")
    assert f"# Comparison: experiments {first} and {second}" in text
    assert "**B − A**" in text
    key = ("relu", "magnitude", "none", 0.5)
    ca = next(c for c in a.cells if c.key == key)
    cb = next(c for c in b.cells if c.key == key)
    row = next(line for line in text.splitlines() if line.startswith("| magnitude") and "| 0.5 |" in line)
    assert f"{cb.val_acc - ca.val_acc:+.3f}" in row  # second minus first, of the means
    # the figures overlay both, the second faded, and the legend says which is which
    fig = figures.accuracy_vs_sparsity([figures.Source(a, "A: first", 0), figures.Source(b, "B: second", 1)])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "A: first" in legend and "B: second (faded)" in legend
    alphas = {line.get_alpha() for ax in fig.axes for line in ax.get_lines() if line.get_marker() not in ("", "None")}
    assert alphas == set(figures.EXPERIMENT_ALPHA)
    # each experiment's own tables, provenance and config follow
    assert text.count("### Config") == 2 and text.count("in full") == 2


@pytest.mark.slow
def test_the_command_writes_the_report_of_the_latest_experiment(two_grids, tmp_path: Path) -> None:
    root, _, second = two_grids
    proc = run_cli("report", "--store", str(root), "--out", "paper", "--format", "png,svg", cwd=tmp_path)
    assert proc.rc == 0, proc.stderr
    assert proc.stderr.startswith("wrote paper/report.md and 12 figure files (png, svg)"), proc.stderr
    out = tmp_path / "paper"
    assert f"experiment {second}" in (out / "report.md").read_text(encoding="utf-8").splitlines()[0]
    assert (out / "accuracy-vs-sparsity.png").is_file() and (out / "accuracy-vs-sparsity.svg").is_file()
    assert links(out / "report.md") == {p.name for p in out.iterdir()} - {"report.md"}
    bad = run_cli("report", "--store", str(root), "--out", "paper", "--format", "gif", cwd=tmp_path)
    assert bad.rc == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_help_and_import_load_neither_matplotlib_nor_torch(tmp_path: Path) -> None:
    """``report --help`` answers at once, and importing the report modules (the
    explorer does) loads matplotlib only when a report is written."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import lotto_tui.paper, lotto_tui.figures\n"
        "from lotto_tui.cli import main\n"
        "try:\n"
        "    main(['report', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('matplotlib' in sys.modules, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--format png,svg,pdf" in proc.stdout and "--experiment ID" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "False False"
