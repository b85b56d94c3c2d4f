"""Which descriptor to read from a trained run: encoder, layers, and standardisation, on its own splits.

    python -m benchmarks.descriptor_choice --workdir runs/quality/tuning/NAME [--layers 1 2 4]

For the run's target (EMA) and context encoders, embeds its query and archive splits once, keeping
the outputs of the last blocks, and scores (exact cosine, relevant = same class):
- `last<n>`: the mean-pooled outputs of the last n blocks, each through the encoder's final
  LayerNorm, concatenated (n = 1 is the descriptor the project exports; I-JEPA's probes use n = 4);
- `last<n>+std`: the same, each dimension standardised with the archive's mean and std.
Run it on a tuning-protocol run (queries = validation): it is how the descriptor is chosen.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rejepa_jax import config_lib, encoder_restore, run_setup
from rejepa_jax import state as state_lib
from rejepa_jax.data import pipeline
from rejepa_jax.evaluation import collapse, retrieval_metrics
from rejepa_jax.models.vit import LAYER_NORM_EPS, EncoderBlock

KS = [5, 10, 20, 100]


def embed_layers(config, encoder, params, split: str, layers: int) -> tuple[np.ndarray, np.ndarray]:
    """([N, layers, D] pooled block outputs, last block last, [N] labels) of one split."""
    final_norm = nn.LayerNorm(epsilon=LAYER_NORM_EPS)

    @jax.jit
    def pooled_blocks(images):
        _, state = encoder.apply(
            {"params": params},
            images,
            capture_intermediates=lambda module, _: isinstance(module, EncoderBlock),
        )
        blocks = state["intermediates"]["blocks"]
        outputs = [blocks[f"block_{i}"]["__call__"][0] for i in range(len(blocks))][-layers:]
        normed = [final_norm.apply({"params": params["blocks"]["norm"]}, x) for x in outputs]
        return jnp.stack([x.astype(jnp.float32).mean(axis=1) for x in normed], axis=1)

    rows, labels = [], []
    for batch in pipeline.make_eval_iterator(config, split, config.eval.batch_size):
        valid = batch["valid"]
        rows.append(np.asarray(pooled_blocks(jnp.asarray(batch["image"])))[valid])
        labels.append(batch["label"][valid])
    return np.concatenate(rows), np.concatenate(labels)


def score(query: np.ndarray, query_labels, archive: np.ndarray, archive_labels) -> dict[str, float]:
    report = retrieval_metrics.retrieval_report(
        query, query_labels, archive, archive_labels, ks=KS, multi_label=False
    )
    keep = {f"p@{k}" for k in KS} | {"map@20/retrieved"}
    return {
        **{k: v for k, v in report.items() if k in keep},
        "effective_rank": collapse.effective_rank(archive),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--encoders", nargs="+", default=["target", "context"])
    args = parser.parse_args()
    config = config_lib.load_json(args.workdir / "config.json")
    config.unlock()
    config.mesh.data = 1
    config.lock()
    run = run_setup.build_run(config)
    _, state = encoder_restore.restore_state(config, args.workdir, run=run)  # Read once for both encoders.
    encoder = run.encoder
    params = {name: state_lib.encoder_params(state, name) for name in args.encoders}
    results = {}
    for name in args.encoders:
        query, query_labels = embed_layers(config, encoder, params[name], "query", max(args.layers))
        archive, archive_labels = embed_layers(config, encoder, params[name], "archive", max(args.layers))
        for n in args.layers:
            q, a = query[:, -n:].reshape(len(query), -1), archive[:, -n:].reshape(len(archive), -1)
            results[f"{name}/last{n}"] = score(q, query_labels, a, archive_labels)
            mean, std = a.mean(0), a.std(0) + 1e-6
            results[f"{name}/last{n}+std"] = score(
                (q - mean) / std, query_labels, (a - mean) / std, archive_labels
            )
            print(f"{name}/last{n}: {results[f'{name}/last{n}']}", flush=True)
            print(f"{name}/last{n}+std: {results[f'{name}/last{n}+std']}", flush=True)
    (args.workdir / "descriptor_choice.json").write_text(json.dumps(results, indent=2))
    print("| descriptor | " + " | ".join(f"P@{k}" for k in KS) + " | mAP@20 | eff. rank |")
    print("|---|" + "---:|" * (len(KS) + 2))
    for name, metrics in results.items():
        cells = [f"{metrics[f'p@{k}']:.3f}" for k in KS] + [f"{metrics['map@20/retrieved']:.3f}"]
        print(f"| {name} | " + " | ".join(cells) + f" | {metrics['effective_rank']:.1f} |")


if __name__ == "__main__":
    main()
