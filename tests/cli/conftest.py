"""The problem-plugin modules as a fixture (``plugin_dir``)."""

from __future__ import annotations

from tests.plugins import plugin_dir

__all__ = ["plugin_dir"]
