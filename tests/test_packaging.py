"""What the distribution installs: the product's own top-level packages and nothing with a generic name."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_only_the_products_packages_are_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = {name.split(".")[0] for name in find_packages(where=str(ROOT), include=include)}
    assert top_level == {"tuner", "api", "storage", "mtl_tune_cli"}
    assert config["project"]["scripts"] == {"mtl-tune": "mtl_tune_cli.main:app"}
