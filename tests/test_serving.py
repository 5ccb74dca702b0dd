"""`vopstore serve` for real: a subprocess on loopback, a tiny CLIP, tasks pulled from the registry server.

The oracle is the Retriever called directly, in this process, on the same
backbone folder and the same versions: every served row must equal it (1e-5).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
import torch

from tests.fixtures.pgcluster import free_port
from tests.fixtures.registry_server import Tenant
from tests.test_runtime_mixed import TEXTS, publish
from vopstore import Retriever
from vopstore.store import open_store, pull
from vopstore.store.http import HttpRegistry

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]
ATOL = 1e-5


@dataclass
class Serving:
    url: str
    proc: subprocess.Popen
    home: str
    acme: Tenant
    rival: Tenant


def _tenant(admin, url: str, prefix: str) -> Tenant:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    admin.create_tenant(name)
    return Tenant(name, {s: admin.create_token(name, s, s) for s in ("read", "write", "admin")}, url)


@pytest.fixture(scope="module")
def serving(registry_server, tiny_backbone, tiny_backbone_dir, tmp_path_factory):
    server, admin = registry_server
    acme, rival = _tenant(admin, server.url, "acme"), _tenant(admin, server.url, "rival")
    folder = tmp_path_factory.mktemp("serving")
    owner = acme.client("write")
    for task, method, seed in (("lsmdc", "vop", 1), ("msrvtt", "vop-f", 2), ("didemo", "vop-p", 3)):
        info, _ = publish(owner, tiny_backbone, folder, f"{acme.name}/{task}", method, seed)
        owner.tag(info.ref, "prod")
    publish(rival.client("write"), tiny_backbone, folder, f"{rival.name}/lsmdc", "vop", 4)
    port, home = free_port(), str(folder / "home")
    log = open(folder / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vopstore.cli", "serve", "--backbone", str(tiny_backbone_dir), "--remote", server.url,
         "--port", str(port), "--max-wait-ms", "30", "--refresh", "0", "--token-ttl", "0", "--max-video", "64KiB",
         "--load", f"{acme.name}/lsmdc@prod", "--log-level", "warning"],
        env={**os.environ, "VOPSTORE_HOME": home, "VOPSTORE_TOKEN": acme.tokens["read"], "HF_HUB_OFFLINE": "1"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, (folder / "serve.log").read_text()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        raise RuntimeError((folder / "serve.log").read_text()[-3000:])
    for task in ("msrvtt", "didemo"):
        response = httpx.post(f"{url}/v1/tasks/{acme.name}/{task}:load", json={"selector": "prod"},
                              headers=acme.headers("admin"), timeout=60)
        assert response.status_code == 200, response.text
    yield Serving(url, proc, home, acme, rival)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def oracle(serving, tiny_backbone, tmp_path_factory):
    """The Retriever in this process with the same versions, loaded from a pull of the registry."""
    local = open_store(str(tmp_path_factory.mktemp("oracle-store")))
    reader = HttpRegistry(serving.acme.url, serving.acme.tokens["read"])
    r = Retriever(tiny_backbone, store=local)

    def sync():
        for task in ("lsmdc", "msrvtt", "didemo"):
            info = pull(reader, local, f"{serving.acme.name}/{task}@prod")
            r.load(info.ref)

    sync()
    r.sync = sync
    return r


def _post(serving, path, body, scope="read", tenant=None):
    tenant = tenant or serving.acme
    return httpx.post(f"{serving.url}{path}", json=body, headers=tenant.headers(scope), timeout=60)


def test_served_text_embeddings_equal_the_retriever_called_directly(serving, oracle):
    a = serving.acme.name
    tasks = [f"{a}/lsmdc", f"{a}/msrvtt", None, f"{a}/didemo", "lsmdc", f"{a}/msrvtt"]
    response = _post(serving, "/v1/embed/text", {"texts": TEXTS, "tasks": tasks})
    assert response.status_code == 200, response.text
    got = torch.tensor(response.json()["embeddings"])
    full = [t if t is None or "/" in t else f"{a}/{t}" for t in tasks]
    expected = oracle.encode_text(TEXTS, tasks=full, normalize=True)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert response.json()["versions"][f"{a}/lsmdc"] == oracle.loaded[f"{a}/lsmdc"].ref


def test_concurrent_callers_of_different_tasks_each_get_their_own_rows_in_one_forward(serving, oracle):
    a = serving.acme.name
    jobs = [(TEXTS[i % 6: i % 6 + 1 + i % 4], f"{a}/{('lsmdc', 'msrvtt', 'didemo')[i % 3]}") for i in range(24)]

    def call(job):
        texts, task = job
        return _post(serving, "/v1/embed/text", {"texts": texts, "task": task})

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(call, jobs))
    for (texts, task), response in zip(jobs, responses):
        assert response.status_code == 200, response.text
        got, want = torch.tensor(response.json()["embeddings"]), oracle.encode_text(texts, task=task, normalize=True)
        assert torch.allclose(got, want, atol=ATOL, rtol=0), (texts, task, (got - want).abs().max(dim=1))
    metrics = httpx.get(f"{serving.url}/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    samples = {s.name: s.value for s in families["vopstore_batch_requests"].samples if s.labels.get("tower") == "text"}
    assert samples["vopstore_batch_requests_sum"] > samples["vopstore_batch_requests_count"]  # some forwards co-batched
    assert "vopstore_request_seconds" in families and "vopstore_tasks_loaded" in families


def test_video_upload_equals_the_retriever_and_is_bounded(serving, oracle, make_video, tmp_path):
    a = serving.acme.name
    clip = make_video(tmp_path / "clip.mp4", frames=8)
    response = httpx.post(f"{serving.url}/v1/embed/video", params={"task": f"{a}/msrvtt"}, content=clip.read_bytes(),
                          headers={**serving.acme.headers("read"), "Content-Type": "application/octet-stream"},
                          timeout=60)
    assert response.status_code == 200, response.text
    expected = oracle.encode_video([str(clip)], task=f"{a}/msrvtt", normalize=True)[0]
    torch.testing.assert_close(torch.tensor(response.json()["embedding"]), expected, atol=ATOL, rtol=0)
    for body, status in ((b"\0" * 70_000, 413), (b"not a video at all", 422), (b"", 422)):
        response = httpx.post(f"{serving.url}/v1/embed/video", params={"task": f"{a}/msrvtt"}, content=body,
                              headers=serving.acme.headers("read"), timeout=60)
        assert response.status_code == status, response.text
        assert "\n" not in response.json()["detail"]


def test_tenants_never_reach_each_other(serving):
    rival, acme = serving.rival, serving.acme
    other = _post(serving, "/v1/embed/text", {"texts": ["x"], "task": f"{acme.name}/lsmdc"}, tenant=rival)
    ghost = _post(serving, "/v1/embed/text", {"texts": ["x"], "task": f"{acme.name}/ghost"}, tenant=rival)
    assert other.status_code == ghost.status_code == 404
    assert other.json()["detail"].replace("lsmdc", "X") == ghost.json()["detail"].replace("ghost", "X")
    mixed = _post(serving, "/v1/embed/text", {"texts": ["x", "y"], "tasks": [None, f"{acme.name}/lsmdc"]},
                  tenant=rival)
    assert mixed.status_code == 404  # every row is checked
    loading = httpx.post(f"{serving.url}/v1/tasks/{acme.name}/lsmdc:load", headers=rival.headers("admin"))
    assert loading.status_code == 404
    owner = acme.client("write")  # acme's alias moves; rival's refresh must neither follow it nor tell of it
    owner.tag(f"{acme.name}/didemo@v1", "staging")
    assert httpx.post(f"{serving.url}/v1/refresh", headers=rival.headers("admin"), timeout=60).json() == {}
    assert httpx.get(f"{serving.url}/v1/tasks", headers=rival.headers("read")).json() == []
    listed = httpx.get(f"{serving.url}/v1/tasks", headers=acme.headers("read")).json()
    assert {t["task"] for t in listed} == {f"{acme.name}/{t}" for t in ("lsmdc", "msrvtt", "didemo")}
    assert httpx.post(f"{serving.url}/v1/tasks/{acme.name}/lsmdc:unload",
                      headers=acme.headers("read")).status_code == 403
    for headers in ({}, {"Authorization": "Bearer vop_0123456789abcdef_" + "x" * 43}):
        assert httpx.post(f"{serving.url}/v1/embed/text", json={"texts": ["x"]}, headers=headers).status_code == 401


def test_loaded_tasks_switch_to_their_precomputed_keys_values(serving):
    """`serve` precomputes in the background: every loaded task gets its cache without another
    load, and the listing shows its bytes (--load before /readyz: test_serving_start.py)."""
    a = serving.acme.name
    deadline = time.monotonic() + 60
    while True:
        response = httpx.get(f"{serving.url}/v1/tasks", headers=serving.acme.headers("read"))
        listed = {t["task"]: t for t in response.json()}
        if all(t["cache_bytes"] > 0 for t in listed.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(listed) == {f"{a}/{t}" for t in ("lsmdc", "msrvtt", "didemo")}
    assert {task: t["cache_bytes"] > 0 for task, t in listed.items()} == dict.fromkeys(listed, True)
    assert all(t["bytes"] > t["cache_bytes"] for t in listed.values())  # the prompts themselves count too


@pytest.mark.parametrize("body", [{}, {"texts": []}, {"texts": "not a list"}, {"texts": ["x"], "task": "a/b/c"},
                                  {"texts": ["x"] * 300}, {"texts": ["x" * 5000]}, {"texts": ["x"], "k": 3},
                                  {"texts": ["x", "y"], "tasks": [None]}])
def test_malformed_bodies_are_4xx_with_one_line(serving, body):
    response = _post(serving, "/v1/embed/text", body)
    assert 400 <= response.status_code < 500 and "\n" not in response.json()["detail"]


def test_a_moved_alias_is_served_after_refresh(serving, oracle, tiny_backbone, tmp_path):
    a = serving.acme.name
    owner = serving.acme.client("write")
    v2, _ = publish(owner, tiny_backbone, tmp_path, f"{a}/lsmdc", "vop", 11)
    owner.tag(v2.ref, "prod")
    before = _post(serving, "/v1/embed/text", {"texts": TEXTS[:2], "task": "lsmdc"}).json()
    assert before["versions"][f"{a}/lsmdc"] != v2.ref  # nothing moves until a refresh
    response = httpx.post(f"{serving.url}/v1/refresh", headers=serving.acme.headers("admin"), timeout=60)
    assert response.json() == {f"{a}/lsmdc": v2.ref}
    oracle.sync()
    after = _post(serving, "/v1/embed/text", {"texts": TEXTS[:2], "task": "lsmdc"}).json()
    assert after["versions"][f"{a}/lsmdc"] == v2.ref
    torch.testing.assert_close(torch.tensor(after["embeddings"]),
                               oracle.encode_text(TEXTS[:2], task=f"{a}/lsmdc", normalize=True), atol=ATOL, rtol=0)


def test_search_equals_the_retriever_and_a_moved_alias_never_meets_an_old_index(serving, oracle, synthetic_clips,
                                                                                 tiny_backbone, tmp_path):
    from pathlib import Path

    from vopstore.gallery import Galleries

    a = serving.acme.name
    galleries = Galleries(Path(serving.home) / "galleries")  # the service's own galleries folder
    clips = {f"clip{i}": clip.path for i, clip in enumerate(synthetic_clips)}
    galleries.create(f"{a}/clips", clips)
    galleries.build(oracle, f"{a}/clips", f"{a}/msrvtt", progress=False)
    body = {"texts": TEXTS[:3], "task": "msrvtt", "gallery": "clips", "k": 4}
    response = _post(serving, "/v1/search", body)
    assert response.status_code == 200, response.text
    expected = oracle.search(TEXTS[:3], task=f"{a}/msrvtt", gallery=f"{a}/clips", k=4, galleries=galleries)
    got = [[(hit["id"], hit["score"]) for hit in row] for row in response.json()["results"]]
    assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in expected]
    assert all(abs(s - e) < ATOL for row, erow in zip(got, expected) for (_, s), (_, e) in zip(row, erow))

    rival = _post(serving, "/v1/search", {**body, "gallery": f"{a}/clips"}, tenant=serving.rival)
    ghost = _post(serving, "/v1/search", {**body, "gallery": "ghost"})  # acme's own gallery that does not exist
    assert rival.status_code == ghost.status_code == 404  # another tenant's gallery looks exactly like a missing one
    assert rival.json()["detail"].replace("clips", "X") == ghost.json()["detail"].replace("ghost", "X")

    owner = serving.acme.client("write")  # the alias moves: the old index must never serve the new prompts
    v2, _ = publish(owner, tiny_backbone, tmp_path, f"{a}/msrvtt", "vop-f", 12)
    owner.tag(v2.ref, "prod")
    httpx.post(f"{serving.url}/v1/refresh", headers=serving.acme.headers("admin"), timeout=60)
    after = _post(serving, "/v1/search", body)  # the service builds the new version's index on the fly
    assert after.status_code == 200, after.text
    assert after.json()["versions"][f"{a}/msrvtt"] == v2.ref
    oracle.sync()
    fresh = oracle.search(TEXTS[:3], task=f"{a}/msrvtt", gallery=f"{a}/clips", k=4, galleries=galleries)
    got = [[(hit["id"], hit["score"]) for hit in row] for row in after.json()["results"]]
    assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in fresh]
    assert all(abs(s - e) < ATOL for row, erow in zip(got, fresh) for (_, s), (_, e) in zip(row, erow))
    assert got != [[(hit["id"], hit["score"]) for hit in row] for row in response.json()["results"]]
