"""Exporting a four times larger archive needs no more memory: descriptors stream to disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, tiny_demo

from benchmarks.export_throughput import MEASURE_PEAK_RSS, peak_rss_kb
from rejepa_jax import trainer

pytestmark = pytest.mark.slow  # Trains, then exports in subprocesses.


def _peak_rss_kb(workdir: Path, out: Path, archive_size: int) -> int:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURE_PEAK_RSS,
            "--workdir",
            str(workdir),
            "--out",
            str(out),
            f"--set=data.synthetic_size={archive_size}",
            "--set=eval.batch_size=64",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Index of {archive_size} descriptors" in done.stdout
    return peak_rss_kb(done.stdout)


def test_peak_memory_is_flat_in_the_archive_size(tmp_path):
    config = tiny_demo(
        total_steps=1,
        data__source="synthetic",
        data__synthetic_size=64,
        data__mean=(127.5,) * 3,
        data__std=(64.0,) * 3,
    )
    trainer.train_and_evaluate(config, tmp_path / "run")
    small = _peak_rss_kb(tmp_path / "run", tmp_path / "small", 1_500)
    large = _peak_rss_kb(tmp_path / "run", tmp_path / "large", 6_000)
    # Holding the extra 4,500 images (64 x 64 x 3 float32) would add 221 MB; streaming adds ~nothing.
    extra_images_kb = 4_500 * 64 * 64 * 3 * 4 // 1024
    print(f"peak RSS: {small} kB for 1,500 images, {large} kB for 6,000")
    assert large - small < extra_images_kb / 4, (small, large)
