"""launch/colab.ipynb: its structure (fast) and the whole notebook run by a Jupyter kernel (slow).

The slow test executes every cell with nbclient in RUNLOCAL mode on the CPU, from this checkout, so a
renamed command-line flag, a moved file or a changed output format breaks the suite instead of the
notebook. What it does not exercise, said plainly: the install cell runs with
REJEPA_COLAB_SKIP_INSTALL=1 (no `pip`: the suite has no network and its environment already holds the
pinned packages), the runtime is forced to `cpu` (REJEPA_COLAB_RUNTIME), and the TPU/GPU branches,
the tfds download and the inline TensorBoard (skipped off Colab) do not run.
"""

from __future__ import annotations

import ast
import json
import re
import time

import nbformat
import pytest
from helpers import REPO

NOTEBOOK = REPO / "launch" / "colab.ipynb"


def _code_cells(notebook) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def test_notebook_is_valid_and_installs_the_pinned_jax_build_of_the_runtime():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    sources = _code_cells(notebook)
    for source in sources:
        ast.parse(source)  # Plain Python: no `!` or `%` lines (ruff checks the same code).
    settings, install = sources[0], sources[1]
    for name in ("REPO_URL", "RUNLOCAL", "REJEPA_COLAB_RUNLOCAL"):
        assert name in settings
    # The JAX version comes from requirements.txt, and the accelerator builds are named.
    assert 'requirements.txt").read_text()' in install and "^jax==" in install
    assert 'run_cli(*pip, "-e", ".", *accelerator_jax)' in install
    assert '"tpu" if RUNTIME == "tpu" else "cuda12"' in install
    assert 'f"jax[{extra}]=={JAX_VERSION}"' in install
    assert "jax.devices()" in install and "raise SystemExit" in install
    # Every step goes through the project's command-line tools.
    joined = "\n".join(sources)
    for tool in ("main", "export", "search", "evaluate"):
        assert f'rejepa("{tool}"' in joined
    assert "--dry_run" in joined


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_in_runlocal_mode_on_the_cpu(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    work = tmp_path / "colab work"  # A space in the path: the CLI calls must quote nothing by hand.
    monkeypatch.setenv("REJEPA_COLAB_RUNLOCAL", "1")
    monkeypatch.setenv("REJEPA_COLAB_SKIP_INSTALL", "1")
    monkeypatch.setenv("REJEPA_COLAB_RUNTIME", "cpu")
    monkeypatch.setenv("REJEPA_COLAB_WORKDIR", str(work))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("REJEPA_REPO_URL", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        # The notebook's folder in the checkout: the first cell finds the clone above it.
        resources={"metadata": {"path": str(REPO / "launch")}},
    )
    start = time.monotonic()
    client.execute()  # Raises CellExecutionError naming the cell on the first error.
    elapsed = time.monotonic() - start

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for i, cell in enumerate(code):
        assert cell.execution_count is not None, f"code cell {i} did not run"
        errors = [out for out in cell.outputs if out.output_type == "error"]
        assert not errors, f"code cell {i}: {errors}"

    def text_of(cell) -> str:
        return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")

    install = text_of(code[1])
    assert "REJEPA_COLAB_SKIP_INSTALL=1: installing nothing" in install
    assert re.search(r"devices: \[CpuDevice\(id=0\)", install), install[-2000:]

    workdir = work / "run_demo_py_runlocal"
    assert (workdir / "config.json").is_file() and (workdir / "metrics.jsonl").is_file()
    # The dry run printed XLA's cost of the bigger config on this runtime's one CPU device.
    dry = next(text_of(c) for c in code if "--dry_run" in c.source)
    assert "Train step on mesh {'data': 1, 'fsdp': 1, 'tensor': 1} (1 cpu devices), global batch 64" in dry
    assert re.search(r"FLOPs per step\s+\d", dry)

    index = work / "run_demo_py_runlocal_index"
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["count"] == 800  # The embedded sample's archive split.

    # The search cell printed five neighbours for each of its four query images, best first.
    search = next(text_of(c) for c in code if 'rejepa("search"' in c.source)
    blocks = re.findall(r"\nquery (\S+):\n((?:  \d\. .*\n?)+)", search)
    assert len(blocks) == 4, search[-3000:]
    for _, lines in blocks:
        ranks = [int(line.split(".")[0]) for line in lines.strip().splitlines()]
        assert ranks == [1, 2, 3, 4, 5]

    report = index.parent / f"{index.name}.eval_query"
    pictures = sorted(p.name for p in report.glob("*.png"))
    assert pictures == ["gallery.png", "per_class.png", "projection.png"]
    for picture in pictures:
        assert (report / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The evaluate cell displayed the three pictures inline.
    evaluate = next(c for c in code if 'rejepa("evaluate"' in c.source)
    shown = [out for out in evaluate.outputs if out.output_type == "display_data" and "image/png" in out.data]
    assert len(shown) == 3
    print(f"notebook ran in {elapsed:.0f} s")
