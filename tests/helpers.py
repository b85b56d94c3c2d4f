"""Helpers shared by the test modules: repository paths, config loading, the tiny demo run, its losses,
and pixel checks for the figure tests. Fixtures live in conftest.py; this module holds plain functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rejepa_jax import config_lib
from rejepa_jax.metric_writer import read_metrics

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

# The argument that makes each config file a few-step CPU run. Keyed by every file in configs/ (a
# test checks the keys against the folder), so a new config fails the suite until it is listed here.
CONFIG_NAMES = sorted(path.stem for path in CONFIGS.glob("*.py"))
RUNLOCAL_ARGS = {
    "demo": "runlocal",
    "eurosat": "runlocal",
    "bigearthnet_s2": "runlocal",
    "bigearthnet_s1": "runlocal",
    "fmow_rgb": "runlocal",
    "eurosat_mae": "runlocal",
    "eurosat_ms": "runlocal",
}


def load_config(name: str, arg: str = "runlocal"):
    """configs/<name>.py with its argument (the few-step CPU variant by default)."""
    return config_lib.load_config_file(f"{CONFIGS / name}.py:{arg}")


def tiny_demo(**overrides):
    """configs/demo.py:runlocal, shrunk further so each run compiles in seconds.

    Overrides name nested keys with double underscores: `tiny_demo(checkpoint__every_steps=5)`.
    """
    config = load_config("demo")
    config.unlock()
    config.model.width, config.model.num_heads, config.model.depth = 64, 2, 1
    config.model.predictor_width = 32
    config.eval.baselines = ()
    config.eval.encoders = ("target",)
    config.eval.ks = (5, 10)
    for dotted, value in overrides.items():
        section, _, key = dotted.rpartition("__")
        (config[section] if section else config)[key] = value
    config.lock()
    return config


def losses(workdir: Path) -> dict[int, float]:
    """The training loss a run logged at each step, read from its metrics.jsonl."""
    return {row["step"]: row["train/loss"] for row in read_metrics(workdir) if "train/loss" in row}


def loss_array(workdir: Path) -> np.ndarray:
    """The logged training losses as an array, in step order."""
    rows = sorted((row["step"], row["train/loss"]) for row in read_metrics(workdir) if "train/loss" in row)
    return np.array([loss for _, loss in rows])


# --- pixels of the figures -------------------------------------------------------------------------


def png_pixels(path: Path) -> np.ndarray:
    """The RGB pixels of a PNG file as int64 (checking that it is a PNG)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(np.int64)


def near(pixels: np.ndarray, colour: tuple[float, float, float], tol: int = 3) -> np.ndarray:
    """Mask of pixels within `tol` (0-255 scale) of a [0, 1] colour on every channel."""
    target = np.round(np.asarray(colour) * 255).astype(np.int64)
    return np.all(np.abs(pixels - target) <= tol, axis=-1)


def true_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True values."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def solid_image(colour: tuple[float, float, float], size: int = 32) -> np.ndarray:
    """A size x size float image of one [0, 1] RGB colour."""
    return np.broadcast_to(np.asarray(colour, dtype=np.float32), (size, size, 3)).copy()
