"""Collect ``bench_*.py`` when pytest is pointed at ``bench/`` (``pytest bench/``).

The unit suite (``pytest``, ``testpaths = ["tests"]``) never loads this directory. Run the
benchmarks with::

    pytest bench/ --benchmark-only
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` modules as test modules (files named on the command line are
    already collected by pytest itself: not twice)."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
