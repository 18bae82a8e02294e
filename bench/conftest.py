"""Collect ``bench_*.py`` when pytest is pointed at ``bench/`` (``pytest bench/``).

The unit suite (``pytest``, ``testpaths = ["tests"]``) never loads this directory. Run the
benchmarks with::

    pytest bench/ --benchmark-only
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` modules as test modules."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
