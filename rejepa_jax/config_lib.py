"""The configuration schema every config file starts from, and the `:key=value` argument parser.

Every key the trainer reads is declared here with its default, so a config file or a command-line
override can only change keys that exist: the config is locked, and a misspelt key fails with the
closest valid keys suggested instead of being silently ignored.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import types
from pathlib import Path
from typing import Any

import ml_collections

# The embedded EuroSAT RGB sample that ships with the package (demo and tests).
SAMPLE_ROOT = str(Path(__file__).resolve().parent / "sample_data" / "eurosat_rgb")

# Per-band statistics of the embedded sample's archive split, in raw pixel units (0-255), as printed
# by `python -m rejepa_jax.stats --config configs/demo.py`.
EUROSAT_RGB_MEAN = (88.9, 97.9, 104.8)
EUROSAT_RGB_STD = (51.7, 35.0, 29.8)


def base_config() -> ml_collections.ConfigDict:
    """Returns the full schema with defaults; config files override values, never add keys."""
    config = ml_collections.ConfigDict()
    # rejepa: latent prediction with an EMA target; mae: pixel reconstruction (the baseline), with
    # `model.predictor_*` as its light decoder and random masks.
    config.method = "rejepa"
    config.seed = 0
    config.total_steps = 1000
    config.batch_size = 64  # Global batch, split over hosts and devices.
    config.log_every_steps = 50
    # Warn at a log step when train/context_std (the batch std of the pooled context embedding) falls
    # below this: a collapsing representation. About 0.3 at random init; 0 disables the warning.
    config.collapse_warning_std = 0.1

    config.model = ml_collections.ConfigDict()
    config.model.variant = "Ti/8"  # Size (Ti/S/B/L/H) and patch size.
    config.model.width = 0  # 0 keeps the width of the variant's size.
    config.model.depth = 0  # 0 keeps the depth of the variant's size.
    config.model.num_heads = 0  # 0 keeps the heads of the variant's size.
    config.model.mlp_ratio = 4.0
    config.model.dtype = "float32"  # Compute dtype; parameters stay float32.
    config.model.remat = False
    # Dense kernels start as I-JEPA's ("ijepa": trunc-normal 0.02, residual outputs rescaled by depth)
    # or as MAE's reference ("mae": xavier-uniform); see rejepa_jax/models/vit.py.
    config.model.init = "ijepa"
    config.model.predictor_width = 384
    config.model.predictor_depth = 6
    config.model.predictor_heads = 0  # 0 uses the encoder's number of heads.
    # Predict all target blocks in one sequence with a block-diagonal attention mask (cheaper).
    config.model.predictor_joint_targets = False
    # VICReg's expander on the pooled embeddings (hidden widths..., output width); () applies the
    # VICReg terms to the pooled encoder output itself.
    config.model.expander_widths = ()

    config.data = ml_collections.ConfigDict()
    config.data.source = "folder"  # folder | tfds | synthetic | bigearthnet
    # folder: image root (class sub-folders or flat); bigearthnet: the folder of patch folders.
    config.data.root = ""
    # folder: where split CSVs live ("" = root; relative to root); bigearthnet: a folder of train.csv,
    # val.csv, test.csv (one S2 patch name per line; "" = the official lists of bigearthnet-common).
    config.data.split_dir = ""
    # folder: CSV list ("" = every image); tfds: split string; bigearthnet: comma-separated names among
    # train, validation, test, all (every patch folder under data.root, minus exclusions).
    config.data.train_split = ""
    config.data.query_split = ""
    config.data.archive_split = ""
    config.data.tfds_name = ""  # tfds: catalog name, e.g. "eurosat/rgb".
    config.data.tfds_data_dir = ""
    config.data.image_key = "image"
    config.data.label_key = "label"
    config.data.image_size = 64
    config.data.channels = 3
    config.data.bands = ()  # Optional band indices to keep, in order, before the band check.
    config.data.grey_to_rgb = False  # Repeat a one-band (grey) image into 3 bands, before data.bands.
    config.data.drop_alpha = False  # Drop the alpha band of RGBA / grey+alpha images, before data.bands.
    # Largest image accepted, in values (height x width x bands), read from the file header before
    # decoding; larger files are bad images (data.skip_bad). 1e8 is 400 MB as float32; 0: no limit.
    config.data.max_image_pixels = 100_000_000
    config.data.num_classes = 10
    config.data.multi_label = False
    config.data.mean = EUROSAT_RGB_MEAN
    config.data.std = EUROSAT_RGB_STD
    config.data.crop_scale = (0.3, 1.0)
    config.data.crop_ratio = (3.0 / 4.0, 4.0 / 3.0)
    config.data.flip_horizontal = True
    config.data.flip_vertical = True
    config.data.rotate90 = False  # Random multiples of 90 degrees (overhead imagery has no "up").
    # Views per image: global views at image_size, each with its own masks and prediction loss, and
    # small local views (no masks) that only enter the VICReg invariance term.
    config.data.global_views = 1
    config.data.local_views = 0
    config.data.local_size = 32
    config.data.local_crop_scale = (0.1, 0.4)
    config.data.skip_bad = False
    config.data.num_workers = 0  # Grain worker processes; 0 decodes in threads of this process.
    config.data.num_threads = 2
    config.data.prefetch = 2  # Batches buffered ahead of the step.
    config.data.synthetic_size = 512  # synthetic: examples per split.
    # bigearthnet: which patches and bands are read (rejepa_jax/data/bigearthnet.py).
    config.data.bigearthnet = ml_collections.ConfigDict()
    config.data.bigearthnet.sensor = "s2"  # s2 | s1: the sensor of data.root's patch folders.
    # Band files stacked in this order on the 10 m grid (20 m and 60 m bands resampled bilinearly);
    # S2: any of B01-B09, B8A, B11, B12; S1: VV, VH. data.channels must equal their count.
    config.data.bigearthnet.bands = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    config.data.bigearthnet.labels = 19  # 19 (BigEarthNet-19) | 43 (original CORINE classes).
    config.data.bigearthnet.exclude_cloud_shadow = True  # Drop the 9,280 patches with clouds/shadows.
    config.data.bigearthnet.exclude_seasonal_snow = True  # Drop the 61,707 patches with seasonal snow.
    # Keep the first N names of each sorted split list after exclusions (CSMAE's max_img_idx); 0: all.
    config.data.bigearthnet.subset_per_split = 0

    config.masks = ml_collections.ConfigDict()
    config.masks.kind = "multiblock"  # multiblock (I-JEPA) | random (MAE)
    config.masks.mask_ratio = 0.75  # random: fraction of patches hidden.
    config.masks.num_targets = 4
    config.masks.target_scale = (0.15, 0.2)
    config.masks.target_aspect = (0.75, 1.5)
    config.masks.context_scale = (0.85, 1.0)
    config.masks.num_target_tokens = 0  # 0: the smallest target block the scales allow.
    config.masks.num_context_tokens = 0  # 0: a low quantile of simulated context sizes.
    config.masks.max_tries = 100

    config.objective = ml_collections.ConfigDict()
    config.objective.loss = "smooth_l1"  # smooth_l1 (reference code) | l2 (paper)
    config.objective.prediction_weight = 1.0  # 0 drops the latent prediction (and its compute).
    config.objective.predicted_views = 0  # Global views with a prediction loss (0: all of them).
    config.objective.vicreg = True
    # VICReg's 25 : 25 : 1 (invariance : variance : covariance), divided by 25. Invariance needs
    # more than one view per image (data.global_views, data.local_views).
    config.objective.invariance_weight = 1.0
    config.objective.variance_weight = 1.0
    config.objective.covariance_weight = 0.04
    config.objective.vicreg_on_predictor = False  # Also regularise the pooled predictor outputs.
    config.objective.variance_gamma = 1.0
    config.objective.variance_eps = 1e-4
    config.objective.norm_pix_loss = True  # mae: regress per-patch normalised pixels.

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.lr = 1e-3
    config.optimizer.start_lr = 2e-4
    config.optimizer.final_lr = 1e-6
    config.optimizer.warmup_steps = 100
    config.optimizer.weight_decay = 0.04
    config.optimizer.final_weight_decay = 0.4
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.grad_clip_norm = 0.0  # 0 disables global-norm clipping.

    config.ema = ml_collections.ConfigDict()
    config.ema.start = 0.996
    config.ema.end = 1.0

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # -1: every device not used by the other axes.
    config.mesh.fsdp = 1
    config.mesh.tensor = 1

    # Train-state sharding: the first (regex, rule) whose regex matches a leaf path wins; rules are
    # "fsdp", "replicate" or a per-dimension spec such as "fsdp,tensor" ("-" keeps a dim whole).
    config.sharding = ml_collections.ConfigDict()
    config.sharding.rules = ((".*", "fsdp"),)
    config.sharding.min_size = 4096  # Leaves with fewer elements stay replicated under "fsdp".

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 500
    config.checkpoint.keep = 3
    config.checkpoint.async_save = True
    config.checkpoint.preemption_check_every = 10  # Steps between the hosts' SIGTERM agreement.
    # Train from step 0 even though damaged steps were set aside (`<step>.unreadable`) in the workdir.
    config.checkpoint.restart_despite_unreadable = False

    config.eval = ml_collections.ConfigDict()
    config.eval.every_steps = 0  # 0: evaluate only at the end of training.
    config.eval.ks = (5, 10, 20, 100)
    config.eval.batch_size = 128
    config.eval.encoders = ("target", "context")  # Which encoders' descriptors to evaluate.
    # Also report every encoder's descriptor standardised per dimension with the archive's statistics
    # (rows named '<descriptor>+std'), as `rejepa_jax.export --standardise` indexes it.
    config.eval.standardise = False
    config.eval.baselines = ()  # Any of: color_histogram, random_init.
    config.eval.histogram_range = (0.0, 255.0)  # Raw pixel range binned by the colour histogram.
    # What the colour histogram bins (histogram_bins per band): "raw" pixel values over
    # histogram_range (8-bit RGB), or "standardised" values, each band's z-score under data.mean/std
    # (as the model sees it) over histogram_zrange, which suits bands of any scale. Three bands are
    # binned jointly (bins^3), any other count as per-band marginal histograms concatenated.
    config.eval.histogram_space = "raw"
    config.eval.histogram_bins = 8
    config.eval.histogram_zrange = (-3.0, 3.0)
    # Pictures of images: display_bands picks (red, green, blue) by index into the decoded image
    # (after data.bands), e.g. B04, B03, B02 for true colour; () keeps the first three bands.
    # display_range is one (low, high) in raw units mapped linearly to [0, 1] (clipped) for all three
    # display bands, so their relative brightness, the colour, is kept; () stretches each band
    # between its own 2nd and 98th percentiles (8-bit RGB: scaled by histogram_range as captured).
    config.eval.display_bands = ()
    config.eval.display_range = ()

    # A jax.profiler trace of training steps (first, last), both included, numbered as in
    # metrics.jsonl; (n,) traces step n alone; () traces nothing. Written by process 0 to
    # <workdir>/tensorboard/plugins/profile/ (rejepa_jax/profiling.py).
    config.profile = ml_collections.ConfigDict()
    config.profile.steps = ()
    return config


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
    """Parses a variant string such as `model=S/16,runlocal` against typed defaults.

    `spec` gives every accepted key with its default; a bare name sets a boolean key to True. An
    unknown key raises a ValueError naming it and the closest accepted keys.
    """
    result = ml_collections.ConfigDict(spec)
    for item in filter(None, (part.strip() for part in (arg or "").split(","))):
        key, has_value, raw = item.partition("=")
        if key not in spec:
            raise ValueError(f"Unknown config argument {key!r}.{suggest(key, spec)}")
        default = spec[key]
        if not has_value:
            if not isinstance(default, bool):
                raise ValueError(f"Config argument {key!r} needs a value ({key}=...).")
            result[key] = True
        elif isinstance(default, bool):
            result[key] = raw.lower() in ("1", "true", "yes")
        else:
            result[key] = type(default)(raw)
    return result


def suggest(key: str, valid: Any) -> str:
    """Returns ' Did you mean ...?' with the closest valid keys, or '' when none is close."""
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(k) for k in close)}?" if close else ""


def dotted_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf key as 'section.key'."""
    keys = []
    for key in config:
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(dotted_keys(value, prefix=f"{prefix}{key}."))
        else:
            keys.append(prefix + key)
    return keys


def check_override_flags(argv: list[str]) -> None:
    """Rejects `--config.<key>=...` flags whose key is not in the schema, suggesting the closest.

    ml_collections reports such a key with a bare AttributeError deep in flag parsing; checking the
    command line first gives an error that names the flag.
    """
    valid = dotted_keys(base_config())
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config.") :].split("=", 1)[0]
        if key not in valid:
            raise ValueError(f"Unknown config key {key!r} in {arg!r}.{suggest(key, valid)}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks that `config` has exactly the schema's keys, naming any unknown one.

    Config files start from `base_config()` and lock it, so this mainly protects configs built by
    other means (for example restored from a workdir's `config.json`).
    """
    _check_keys(config, base_config(), prefix="")


def _check_keys(config: Any, schema: ml_collections.ConfigDict, prefix: str) -> None:
    for key in config:
        if key not in schema:
            raise ValueError(f"Unknown config key {prefix + key!r}.{suggest(key, schema.keys())}")
        if isinstance(schema[key], ml_collections.ConfigDict):
            _check_keys(config[key], schema[key], prefix=f"{prefix}{key}.")


def from_dict(values: dict[str, Any]) -> ml_collections.ConfigDict:
    """Rebuilds a locked config from plain values (e.g. a workdir's config.json).

    Values are set onto the schema, so JSON lists become the schema's tuples again and an unknown
    key fails with the closest valid keys.
    """
    config = base_config()
    _set_values(config, values, prefix="")
    config.lock()
    return config


def load_config_module(path: str | Path) -> types.ModuleType:
    """The config file at `path` as a module (its `get_config` and constants), without registering it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No config file {str(path)!r}.")
    module_spec = importlib.util.spec_from_file_location(f"config_file_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """The config of `path/to/config.py[:args]`, as `--config` would load it (calls `get_config(args)`)."""
    path_text, _, arg = spec.partition(":")
    return load_config_module(path_text).get_config(arg or None)


def load_json(path: str | Path) -> ml_collections.ConfigDict:
    """The config a run wrote to `<workdir>/config.json`."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"No config.json in {path.parent}: is it a training workdir?") from None
    return from_dict(values)


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """Applies `section.key=value` strings (values parsed as Python literals, else kept as text)."""
    valid = dotted_keys(base_config())
    config.unlock()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in valid:
            raise ValueError(f"Unknown config override {item!r}.{suggest(key, valid)}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        section, _, leaf = key.rpartition(".")
        target = config
        for part in filter(None, section.split(".")):
            target = target[part]
        target[leaf] = _like(target[leaf], value)
    config.lock()
    return config


def _set_values(config: ml_collections.ConfigDict, values: dict[str, Any], prefix: str) -> None:
    for key, value in values.items():
        if key not in config:
            raise ValueError(f"Unknown config key {prefix + key!r}.{suggest(key, config.keys())}")
        if isinstance(config[key], ml_collections.ConfigDict):
            _set_values(config[key], value, prefix=f"{prefix}{key}.")
        else:
            config[key] = _like(config[key], value)


def _like(default: Any, value: Any) -> Any:
    """`value` in the container type of `default` (lists -> tuples, recursively)."""
    if isinstance(default, tuple) and isinstance(value, list | tuple):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
