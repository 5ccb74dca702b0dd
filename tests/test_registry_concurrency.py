"""Many clients at once through the session server's 2 worker processes (PostgreSQL + S3)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fixtures.stores import make_checkpoint

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


def test_sixteen_clients_pushing_one_task_get_consecutive_numbers(new_tenant, tmp_path):
    tenant = new_tenant()
    files = [make_checkpoint(tmp_path / f"c{i}.safetensors", seed=100 + i) for i in range(16)]

    def add(path):
        reg = tenant.client("write")
        try:
            return reg.add("shared", path)
        finally:
            reg.close()

    with ThreadPoolExecutor(16) as pool:
        infos = list(pool.map(add, files))
    assert sorted(i.number for i in infos) == list(range(1, 17))
    assert len({i.digest for i in infos}) == 16
    stored = tenant.client("read").list_versions("shared")
    assert {(v.number, v.digest) for v in stored} == {(i.number, i.digest) for i in infos}


def test_concurrent_alias_moves_leave_the_audit_log_consistent_with_the_final_state(new_tenant, tmp_path):
    tenant = new_tenant()
    owner = tenant.client("write")
    versions = [owner.add("t", make_checkpoint(tmp_path / f"v{i}.safetensors", seed=200 + i)) for i in range(4)]

    def promote(worker):
        reg, rng = tenant.client("write"), random.Random(worker)
        try:
            for _ in range(6):
                reg.tag(f"t@v{rng.choice(versions).number}", "prod")
        finally:
            reg.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(promote, range(8)))
    moves = [e for e in owner.log("t") if e["action"] == "tag"]
    assert moves, "no alias move was recorded"
    for before, after in zip(moves, moves[1:]):  # each move starts where the previous one ended
        assert after["old"] == before["new"]
    final = owner.resolve("t@prod")
    assert moves[-1]["new"] == {"alias": "prod", "version": final.number, "digest": final.digest}
    assert moves[0]["old"] is None
