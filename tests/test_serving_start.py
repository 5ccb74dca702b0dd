"""`vopstore serve` start-up: ``--load`` tasks have their precomputed keys/values before /readyz, in-process."""

from __future__ import annotations

import time

from tests.test_runtime_mixed import publish
from vopstore.runtime import precompute
from vopstore.serving.run import ServeOptions, start_service
from vopstore.store import open_store


def test_load_tasks_are_ready_with_their_keys_values(tiny_backbone, tiny_backbone_dir, tmp_path, monkeypatch):
    info, _ = publish(open_store(), tiny_backbone, tmp_path, "lsmdc", "vop", 1)
    real = precompute.build_cache

    def slow_build_cache(*args, **kwargs):  # the background computation lands well after the load returns
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(precompute, "build_cache", slow_build_cache)
    service = start_service(ServeOptions(backbone=str(tiny_backbone_dir), load=[info.ref]))
    try:
        assert service.ready
        assert service.retriever.memory[f"{info.tenant}/{info.task}"]["cache"] > 0
    finally:
        service.close()
