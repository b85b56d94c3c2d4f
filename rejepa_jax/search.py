"""Search an exported index by image or by id.

    python -m rejepa_jax.search --index INDEX_DIR (--image PATH ... | --id ID ... | --queries FILE)
        [-k 10] [--format table|jsonl] [--workdir RUN]

`--id` looks up an indexed item's own descriptor and leaves the item itself out of its results.
`--queries FILE` lists one image path per line (relative paths are relative to FILE). With
`--workdir`, query images are embedded by that run's newest checkpoint, which must be the model that
built the index. Every index file is checked against the manifest before use.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from rejepa_jax import cli
from rejepa_jax.retrieval.index_searcher import IndexSearcher, format_results, read_query_file

_INDEX = flags.DEFINE_string("index", None, "Index folder written by rejepa_jax.export.")
_IMAGES = flags.DEFINE_multi_string("image", [], "Query image file(s).")
_IDS = flags.DEFINE_multi_string("id", [], "Query by the id of an indexed item.")
_QUERIES = flags.DEFINE_string("queries", None, "A file listing query image paths, one per line.")
_K = flags.DEFINE_integer("k", 10, "Number of results per query.")
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "jsonl"], "Output format.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Embed queries with this run's checkpoint instead.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_library_info()
    if not (_IMAGES.value or _IDS.value or _QUERIES.value):
        raise app.UsageError("Give --image, --id or --queries.")
    index = IndexSearcher(_INDEX.value, workdir=_WORKDIR.value)
    outputs = []
    if _IDS.value:
        descriptors, rows = index.descriptors_for_ids(_IDS.value)
        outputs.append((list(_IDS.value), index.search(descriptors, _K.value, exclude_rows=rows)))
    paths = [Path(p) for p in _IMAGES.value] + (read_query_file(_QUERIES.value) if _QUERIES.value else [])
    if paths:
        outputs.append(([str(p) for p in paths], index.search(index.descriptors_for_images(paths), _K.value)))
    for queries, results in outputs:
        print(format_results(queries, results, _FORMAT.value), flush=True)


def run() -> None:
    """Console-script entry point (`rejepa-search`)."""
    flags.mark_flag_as_required("index")
    cli.run(main)


if __name__ == "__main__":
    run()
