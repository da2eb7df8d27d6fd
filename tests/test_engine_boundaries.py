"""The engine is a library: no UI imports, light config, typed public API; the client is
its thin entry point."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lotto_engine

ENGINE = Path(lotto_engine.__file__).parent


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.slow
def test_engine_imports_without_textual_or_rich():
    modules = [m.name for m in pkgutil.walk_packages([str(ENGINE)], "lotto_engine.")]
    code = (
        "import importlib, sys\n"
        # make textual and rich unimportable: any attempt fails loudly
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('textual', 'rich', 'plotext', 'textual_plotext'):\n"
        "            raise ImportError('UI import from the engine: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')))\n"
    )
    assert _run(code) == "[]"
    assert len(modules) > 10


def test_engine_sources_never_mention_ui_packages():
    for path in ENGINE.rglob("*.py"):
        text = path.read_text()
        for pkg in ("textual", "rich", "plotext", "lotto_tui"):
            assert f"import {pkg}" not in text and f"from {pkg}" not in text, (path, pkg)


def test_config_validation_does_not_import_torch():
    code = (
        "import sys\n"
        "from lotto_engine.config import load_config\n"
        "load_config(preset='demo', overrides=['train.lr=0.1'])\n"
        "print('torch' in sys.modules)\n"
    )
    assert _run(code) == "False"


def test_public_api_is_documented():
    import importlib

    for name in ("config", "pruning", "metrics", "training", "runner", "store", "plan", "events",
                 "export", "views.results", "models", "data"):
        module = importlib.import_module(f"lotto_engine.{name}")
        assert module.__doc__ and len(module.__doc__.strip()) > 40, name
    from lotto_engine.metrics import stability
    from lotto_engine.pruning import compute_masks

    for fn in (compute_masks, stability):
        assert fn.__doc__ and fn.__annotations__


def test_python_m_lotto_tui_is_the_lotto_tui_command(cli, tmp_path):
    """The client's two entry points are one program (``__main__`` has no logic of its own)."""
    script = cli("config", "--preset", "demo")
    module = subprocess.run([sys.executable, "-m", "lotto_tui", "config", "--preset", "demo"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert script.rc == module.returncode == 0, (script.stderr, module.stderr)
    assert module.stdout == script.stdout and "[train]" in script.stdout
