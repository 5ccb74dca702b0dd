"""Pushing task@alias never silently undoes a promotion made on the remote at the same time.

A real concurrent writer: one thread pushes ``t@prod`` (v1 here) while another moves
the remote's ``prod`` to v2. Whatever the interleaving, the remote must end at v2
(the push either landed first and was then overtaken, or it is refused with a
ConflictError); ending at v1 would mean the push overwrote a colleague's move.
"""

from __future__ import annotations

import threading

import pytest

from tests.fixtures.stores import make_checkpoint
from vopstore.errors import ConflictError
from vopstore.store import open_store, push

TRIALS = 15


def _race(local, remote, task: str) -> str | None:
    barrier, outcome = threading.Barrier(2), {}

    def pusher():
        barrier.wait()
        try:
            push(local, remote, f"{task}@prod")
            outcome["push"] = "ok"
        except ConflictError:
            outcome["push"] = "refused"

    def promoter():
        barrier.wait()
        remote.tag(f"{task}@v2", "prod")

    threads = [threading.Thread(target=pusher), threading.Thread(target=promoter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome.get("push")


def _setup(local, remote, tmp_path, task: str) -> None:
    local.add(task, make_checkpoint(tmp_path / f"{task}-1.safetensors", seed=1))
    local.add(task, make_checkpoint(tmp_path / f"{task}-2.safetensors", seed=2))
    push(local, remote, f"{task}@v1")
    push(local, remote, f"{task}@v2")
    local.tag(f"{task}@v1", "prod")


@pytest.mark.parametrize("kind", ["directory", pytest.param("http", marks=[pytest.mark.postgres, pytest.mark.s3])])
def test_a_push_never_undoes_a_concurrent_promotion(kind, tmp_path, request):
    local = open_store(str(tmp_path / "local"))
    if kind == "directory":
        remote, tenant = open_store(str(tmp_path / "remote")), "local"
    else:
        t = request.getfixturevalue("new_tenant")()
        remote, tenant = t.client("write"), t.name
    outcomes = []
    for trial in range(TRIALS):
        task = f"{tenant}/t{trial}"
        _setup(local, remote, tmp_path, task)
        outcomes.append(_race(local, remote, task))
        assert remote.resolve(f"{task}@prod").number == 2, (trial, outcomes)
    assert set(outcomes) <= {"ok", "refused"}


def test_push_force_moves_the_alias_and_a_plain_push_is_refused(tmp_path):
    local, remote = open_store(str(tmp_path / "local")), open_store(str(tmp_path / "remote"))
    _setup(local, remote, tmp_path, "t")
    remote.tag("t@v2", "prod")
    with pytest.raises(ConflictError, match="on the remote"):
        push(local, remote, "t@prod")
    assert remote.resolve("t@prod").number == 2
    assert push(local, remote, "t@prod", force=True).number == 1
    assert remote.resolve("t@prod").number == 1
