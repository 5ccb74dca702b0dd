"""The OpenAPI schema fuzzed with schemathesis against the real server: no 5xx, every response as documented.

Requests carry a valid admin token of a tenant that holds a task with versions
and an alias, so generated calls reach the handlers (not only the 401 path).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from tests.fixtures.stores import make_checkpoint

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def fuzzed(registry_server, tmp_path_factory):
    """The live schema, and an admin token of a tenant with something in it."""
    server, admin = registry_server
    admin.create_tenant("fuzz")
    token = admin.create_token("fuzz", "fuzz-admin", "admin")
    folder = tmp_path_factory.mktemp("fuzz")
    from vopstore.store.http import HttpRegistry

    reg = HttpRegistry(server.url, token)
    for seed in (1, 2):
        reg.add("lsmdc", make_checkpoint(folder / f"{seed}.safetensors", seed=seed))
    reg.tag("lsmdc@v1", "prod")
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json"), server.url, token


KNOWN = {"tenant": ["fuzz"], "task": ["lsmdc"], "selector": ["v1", "v2", "prod", "latest"],
         "alias": ["prod", "canary"], "name": ["other"]}


def test_api_never_5xx_and_matches_its_schema(fuzzed):
    """Every operation of the live schema, fuzzed in turn (schemathesis' lazy pytest fixture needs pytest < 9)."""
    schema, url, token = fuzzed
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 17
    for operation in operations:

        @settings(max_examples=16, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), data=st.data())
        def fuzz(case, data):
            for name, value in (case.path_parameters or {}).items():  # often a name that exists, to get deep
                if name in KNOWN and data.draw(st.booleans()):
                    case.path_parameters[name] = data.draw(st.sampled_from(KNOWN[name]))
            case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {token}"}, checks=checks)

        fuzz()


def test_fuzzing_left_the_token_working(fuzzed):
    _, url, token = fuzzed
    assert httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 200
