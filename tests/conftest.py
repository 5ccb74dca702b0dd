"""Shared test set-up. Real servers (PostgreSQL, S3) start once per session, in fixtures/."""

from __future__ import annotations

import os

# Unconditionally, not setdefault: an outer HF_HUB_OFFLINE=0 must not let a test reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Set before torch is first imported (libgomp reads it when it loads) and inherited by every child
# process: OpenMP's idle threads otherwise busy-wait between the tiny ops of these tests, burning the
# other core that servers and child processes need (on a loaded 2-core machine, 6 training steps of the
# tiny CLIP took 2-19 s of CPU, 0.5 s with PASSIVE). No result changes: the thread count stays the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

# Each plugin module owns one kind of fixture (servers, models, data).
pytest_plugins = [
    "tests.fixtures.home",
    "tests.fixtures.models",
    "tests.fixtures.videos",
    "tests.fixtures.postgres",
    "tests.fixtures.stores",
    "tests.fixtures.s3",
    "tests.fixtures.registry_server",
    "tests.fixtures.cli",
]


@pytest.fixture(autouse=True)
def _torch_threads():
    """Two cores: keep torch from oversubscribing them when it is loaded."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(2)
    yield
