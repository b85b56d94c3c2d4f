"""Search an exported index by image or by id.

    python -m rejepa_jax.search --index INDEX_DIR (--image PATH ... | --id ID ... | --queries FILE)
        [-k 10] [--format table|jsonl] [--workdir RUN] [--batch_size 64]

`--id` looks up an indexed item's own descriptor and leaves the item itself out of its results.
`--queries FILE` lists one image path per line (relative paths are relative to FILE); images are
decoded, embedded and searched `--batch_size` at a time and printed as each batch is done. With
`--workdir`, query images are embedded by that run's newest checkpoint, which must be the model that
built the index. Every index file is checked against the manifest before use.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from rejepa_jax import cli
from rejepa_jax.retrieval.index_searcher import (
    QUERY_BATCH,
    IndexSearcher,
    format_results,
    read_query_file,
)

_INDEX = flags.DEFINE_string("index", None, "Index folder written by rejepa_jax.export.")
_IMAGES = flags.DEFINE_multi_string("image", [], "Query image file(s).")
_IDS = flags.DEFINE_multi_string("id", [], "Query by the id of an indexed item.")
_QUERIES = flags.DEFINE_string("queries", None, "A file listing query image paths, one per line.")
_K = flags.DEFINE_integer("k", 10, "Number of results per query.")
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "jsonl"], "Output format.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Embed queries with this run's checkpoint instead.")
_BATCH = flags.DEFINE_integer(
    "batch_size", QUERY_BATCH, "Query images decoded and embedded at a time (bounds memory)."
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_library_info()
    if not (_IMAGES.value or _IDS.value or _QUERIES.value):
        raise app.UsageError("Give --image, --id or --queries.")
    index = IndexSearcher(_INDEX.value, workdir=_WORKDIR.value)
    if _IDS.value:
        descriptors, rows = index.descriptors_for_ids(_IDS.value)
        results = index.search(descriptors, _K.value, exclude_rows=rows)
        print(format_results(list(_IDS.value), results, _FORMAT.value), flush=True)
    paths = [Path(p) for p in _IMAGES.value] + (read_query_file(_QUERIES.value) if _QUERIES.value else [])
    # Batch by batch: decoded images and descriptors of one batch at a time, results printed as they come.
    for queries, results in index.search_images(paths, _K.value, batch_size=_BATCH.value):
        print(format_results(queries, results, _FORMAT.value), flush=True)


def run() -> None:
    """Console-script entry point (`rejepa-search`)."""
    flags.mark_flag_as_required("index")
    cli.run(main)


if __name__ == "__main__":
    run()
