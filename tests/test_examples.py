"""Every script of examples/ runs in quick mode: `python examples/X.py --quick --out DIR` exits
with status 0, prints what it measured, and writes at least one PNG that is a real plot (not
tiny, not blank). The scripts run as subprocesses, as a user runs them, with the environment
of the tests (JAXKEOPS_CACHE_DIR included, so compiled kernels are shared) but the default -O3
kernels (the suite builds its own at -Og, see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("flax")
pytest.importorskip("optax")
import matplotlib.image  # noqa: E402

REPOSITORY = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPOSITORY / "examples").glob("*.py"))
# Generous: a quick run takes 10-30 s on two cores; this only stops a hung script.
TIMEOUT_S = 600
MIN_PNG_BYTES = 10_000
MIN_DISTINCT_COLOURS = 16


def run_example(script: Path, out: Path) -> subprocess.CompletedProcess:
    environment = dict(os.environ, MPLBACKEND="Agg", JAXKEOPS_OPT_LEVEL="3")
    return subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)],
                          cwd=REPOSITORY, env=environment, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def distinct_colours(image: np.ndarray) -> int:
    pixels = (np.asarray(image)[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    return len(np.unique(pixels, axis=0))


def test_examples_are_found():
    names = {script.name for script in EXAMPLES}
    assert {"kernel_attention.py", "flax_generator.py", "sinkhorn_transport.py"} <= names


# Not marked slow: each quick run takes 10-30 s on two cores (most of it compiling XLA
# programs), which is what --quick promises.
@pytest.mark.parametrize("script", EXAMPLES, ids=[script.stem for script in EXAMPLES])
def test_example_runs_quick_and_saves_a_plot(script: Path, tmp_path: Path):
    result = run_example(script, tmp_path)
    assert result.returncode == 0, (
        f"{script.name} --quick exited with {result.returncode}\n--- stdout\n"
        f"{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}")
    assert result.stdout.strip(), f"{script.name} printed nothing"
    plots = sorted(tmp_path.rglob("*.png"))
    assert plots, f"{script.name} wrote no PNG into --out {tmp_path}: {list(tmp_path.iterdir())}"
    for plot in plots:
        size = plot.stat().st_size
        assert size > MIN_PNG_BYTES, f"{plot.name} is only {size} bytes"
        image = matplotlib.image.imread(plot)
        assert image.ndim == 3 and min(image.shape[:2]) >= 200, (
            f"{plot.name} has shape {image.shape}")
        colours = distinct_colours(image)
        assert colours >= MIN_DISTINCT_COLOURS, (
            f"{plot.name} has {colours} distinct colours: an empty or blank plot")
