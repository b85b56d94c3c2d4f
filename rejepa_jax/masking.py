"""I-JEPA's multi-block mask sampler, emitting fixed-size index arrays so the train step traces once.

Per image: M target blocks share one (h, w) drawn from the target scale and aspect ranges, and sit
at independent positions (they may overlap); one square-ish context block is drawn from the context
scale range, and every target patch is removed from it. Indices are flat, row-major patch indices.

Faithful to the reference (facebookresearch/ijepa `src/masks/multiblock.py`):
- one uniform draw sets both a block's scale and its aspect ratio (they are perfectly correlated);
- h = round(sqrt(n * a)), w = round(sqrt(n / a)), capped at grid - 1;
- targets are removed from the context, so context and targets are disjoint.

Deliberate deviations, each named here and in the README:
- Block corners take every valid position; the reference's `randint` upper bound never puts a corner
  in the last valid row or column.
- Sizes are fixed by the config (`num_context_tokens`, `num_target_tokens`) instead of the batch
  minimum, and a mask larger than its size keeps a *random subset* of its patches. The reference
  keeps the first patches in raster order, which biases the context towards the top rows.
- Block sizes are drawn per image rather than once per batch, so the sampler runs per example in the
  data pipeline with a per-example random generator.
- When the context is too small after removing the targets, the context is redrawn (size and
  position), and after every `_CONTEXT_TRIES_PER_TARGET_DRAW` failures the targets too (size and
  positions); the reference keeps the batch's block sizes and instead drops target constraints,
  which can leak target patches into the context.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# Context-size simulation behind the automatic `num_context_tokens`: how many draws, which quantile.
_AUTO_CONTEXT_DRAWS = 2000
_AUTO_CONTEXT_QUANTILE = 0.1
# Redraw the target blocks (size and positions) after this many failed context placements.
_CONTEXT_TRIES_PER_TARGET_DRAW = 10


class MaskSamplingError(ValueError):
    """The mask configuration cannot produce masks of the configured sizes."""


@dataclasses.dataclass(frozen=True)
class MaskShapes:
    """Static shapes of one example's masks."""

    num_targets: int
    num_target_tokens: int
    num_context_tokens: int


def block_size(
    u: float, scale: tuple[float, float], aspect: tuple[float, float], grid: tuple[int, int]
) -> tuple[int, int]:
    """Block (h, w) for one uniform draw `u`, as the reference computes it (same u for both ranges)."""
    grid_h, grid_w = grid
    s = scale[0] + u * (scale[1] - scale[0])
    num = math.floor(grid_h * grid_w * s)
    a = aspect[0] + u * (aspect[1] - aspect[0])
    h = round(math.sqrt(num * a))
    w = round(math.sqrt(num / a))
    h = min(max(h, 1), grid_h - 1 if grid_h > 1 else 1)
    w = min(max(w, 1), grid_w - 1 if grid_w > 1 else 1)
    return h, w


class MultiBlockMaskSampler:
    """Samples (context_idx [Kc], target_idx [M, Kt]) int32 arrays for one image."""

    def __init__(
        self,
        grid: tuple[int, int],
        *,
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        num_target_tokens: int = 0,
        num_context_tokens: int = 0,
        max_tries: int = 100,
    ):
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_targets = int(num_targets)
        self.target_scale = tuple(float(v) for v in target_scale)
        self.target_aspect = tuple(float(v) for v in target_aspect)
        self.context_scale = tuple(float(v) for v in context_scale)
        self.max_tries = int(max_tries)
        _check_range("masks.target_scale", self.target_scale, upper=1.0)
        _check_range("masks.context_scale", self.context_scale, upper=1.0)
        _check_range("masks.target_aspect", self.target_aspect, upper=math.inf)
        if self.num_targets < 1:
            raise MaskSamplingError(f"masks.num_targets must be >= 1, got {num_targets}.")

        smallest = self.smallest_target_block()
        if num_target_tokens <= 0:
            num_target_tokens = smallest
        if num_target_tokens > smallest:
            raise MaskSamplingError(
                f"masks.num_target_tokens={num_target_tokens} exceeds the smallest target block "
                f"({smallest} patches) that masks.target_scale={self.target_scale} allows on a "
                f"{self.grid[0]}x{self.grid[1]} grid; lower it or raise the scale."
            )
        self.num_target_tokens = int(num_target_tokens)
        if num_context_tokens <= 0:
            num_context_tokens = self._simulated_context_size()
        self.num_context_tokens = int(num_context_tokens)

    @classmethod
    def from_config(cls, masks_config, grid: tuple[int, int]) -> MultiBlockMaskSampler:
        """Builds the sampler from a `config.masks` section for a patch grid."""
        return cls(
            grid,
            num_targets=masks_config.num_targets,
            target_scale=tuple(masks_config.target_scale),
            target_aspect=tuple(masks_config.target_aspect),
            context_scale=tuple(masks_config.context_scale),
            num_target_tokens=masks_config.num_target_tokens,
            num_context_tokens=masks_config.num_context_tokens,
            max_tries=masks_config.max_tries,
        )

    @property
    def shapes(self) -> MaskShapes:
        return MaskShapes(self.num_targets, self.num_target_tokens, self.num_context_tokens)

    def smallest_target_block(self) -> int:
        """Fewest patches any target block can have (a dense sweep over the uniform draw)."""
        sizes = (
            block_size(u, self.target_scale, self.target_aspect, self.grid)
            for u in np.linspace(0.0, 1.0, 2001)
        )
        return min(h * w for h, w in sizes)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draws one image's masks: (context_idx [Kc], target_idx [M, Kt]), sorted, int32."""
        # Sizes are redrawn with the positions: a size drawn once and kept for every try can be one
        # that no placement accepts (the largest targets with the smallest context), and since the
        # generator is derived from the example's position, a resumed run would fail on it again.
        for attempt in range(self.max_tries):
            if attempt % _CONTEXT_TRIES_PER_TARGET_DRAW == 0:
                target_hw = block_size(rng.random(), self.target_scale, self.target_aspect, self.grid)
                targets = [self._place(target_hw, rng) for _ in range(self.num_targets)]
                covered = np.zeros(self.grid, dtype=bool)
                for block in targets:
                    covered |= block
            context_hw = block_size(rng.random(), self.context_scale, (1.0, 1.0), self.grid)
            context = self._place(context_hw, rng) & ~covered
            context_idx = np.flatnonzero(context)
            if context_idx.size >= self.num_context_tokens:
                break
        else:
            raise MaskSamplingError(
                f"No context with >= {self.num_context_tokens} patches outside the targets after "
                f"{self.max_tries} tries on a {self.grid[0]}x{self.grid[1]} grid; lower "
                "masks.num_context_tokens or masks.num_targets, or shrink masks.target_scale."
            )
        context_idx = self._random_subset(context_idx, self.num_context_tokens, rng)
        target_idx = np.stack(
            [self._random_subset(np.flatnonzero(b), self.num_target_tokens, rng) for b in targets]
        )
        return context_idx, target_idx

    def _place(self, hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        h, w = hw
        top = rng.integers(0, self.grid[0] - h + 1)
        left = rng.integers(0, self.grid[1] - w + 1)
        block = np.zeros(self.grid, dtype=bool)
        block[top : top + h, left : left + w] = True
        return block

    @staticmethod
    def _random_subset(idx: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        if idx.size > size:
            idx = np.sort(rng.choice(idx, size=size, replace=False))
        return idx.astype(np.int32)

    def _simulated_context_size(self) -> int:
        """A low quantile of the context sizes the reference rules give, from a fixed-seed simulation."""
        rng = np.random.default_rng(0)
        counts = []
        for _ in range(_AUTO_CONTEXT_DRAWS):
            target_hw = block_size(rng.random(), self.target_scale, self.target_aspect, self.grid)
            context_hw = block_size(rng.random(), self.context_scale, (1.0, 1.0), self.grid)
            covered = np.zeros(self.grid, dtype=bool)
            for _ in range(self.num_targets):
                covered |= self._place(target_hw, rng)
            counts.append(int((self._place(context_hw, rng) & ~covered).sum()))
        size = int(np.quantile(counts, _AUTO_CONTEXT_QUANTILE))
        if size < 1:
            raise MaskSamplingError(
                f"With masks.num_targets={self.num_targets} and masks.target_scale="
                f"{self.target_scale}, the targets usually cover the whole context on a "
                f"{self.grid[0]}x{self.grid[1]} grid; set masks.num_context_tokens explicitly or "
                "use fewer/smaller targets."
            )
        return size


class RandomMaskSampler:
    """MAE's masking: a uniformly random `mask_ratio` of the patches is hidden, the rest is visible.

    Same interface as the multi-block sampler: (visible_idx [Kc], masked_idx [1, Kt]), sorted int32,
    so the MAE baseline runs through the same data pipeline and train step shapes.
    """

    def __init__(self, grid: tuple[int, int], *, mask_ratio: float = 0.75):
        self.grid = (int(grid[0]), int(grid[1]))
        total = self.grid[0] * self.grid[1]
        if not 0.0 < mask_ratio < 1.0:
            raise MaskSamplingError(f"masks.mask_ratio must be in (0, 1), got {mask_ratio}.")
        self.num_context_tokens = max(1, round(total * (1.0 - mask_ratio)))
        self.num_target_tokens = total - self.num_context_tokens
        if self.num_target_tokens < 1:
            raise MaskSamplingError(f"masks.mask_ratio={mask_ratio} hides no patch of a {grid} grid.")

    @property
    def shapes(self) -> MaskShapes:
        return MaskShapes(1, self.num_target_tokens, self.num_context_tokens)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        order = rng.permutation(self.grid[0] * self.grid[1])
        visible = np.sort(order[: self.num_context_tokens]).astype(np.int32)
        masked = np.sort(order[self.num_context_tokens :]).astype(np.int32)
        return visible, masked[None]


MaskSampler = MultiBlockMaskSampler | RandomMaskSampler
MASK_KINDS = ("multiblock", "random")


def make_mask_sampler(masks_config, grid: tuple[int, int]) -> MaskSampler:
    """The sampler `masks.kind` names: I-JEPA multi-block (REJEPA) or random (the MAE baseline)."""
    if masks_config.kind == "multiblock":
        return MultiBlockMaskSampler.from_config(masks_config, grid)
    if masks_config.kind == "random":
        return RandomMaskSampler(grid, mask_ratio=masks_config.mask_ratio)
    raise MaskSamplingError(f"masks.kind must be one of {MASK_KINDS}, got {masks_config.kind!r}.")


def _check_range(name: str, value: tuple[float, ...], upper: float) -> None:
    if len(value) != 2 or not 0.0 < value[0] <= value[1] <= upper:
        raise MaskSamplingError(f"{name} must be (lo, hi) with 0 < lo <= hi <= {upper}, got {value}.")
