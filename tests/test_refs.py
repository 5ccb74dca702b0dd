"""The one ref parser: ``[tenant/]task[@vN|@alias]`` and the name rules."""

from __future__ import annotations

import pytest

from vopstore.errors import InvalidRefError, VopstoreError
from vopstore.refs import Ref, parse_ref, parse_task, validate_alias, validate_name


@pytest.mark.parametrize("text, expected", [
    ("lsmdc", Ref("local", "lsmdc")),
    ("lsmdc@latest", Ref("local", "lsmdc")),
    ("acme/lsmdc", Ref("acme", "lsmdc")),
    ("acme/lsmdc@v12", Ref("acme", "lsmdc", version=12)),
    ("acme/lsmdc@prod", Ref("acme", "lsmdc", alias="prod")),
    ("a.b_c-d/msrvtt-9k@v1", Ref("a.b_c-d", "msrvtt-9k", version=1)),
    ("t@vx", Ref("local", "t", alias="vx")),
])
def test_valid_refs(text, expected):
    assert parse_ref(text) == expected


def test_round_trip_and_properties():
    ref = parse_ref("acme/lsmdc@v3")
    assert str(ref) == "acme/lsmdc@v3" and ref.task_ref == "acme/lsmdc" and not ref.is_latest
    assert parse_ref(str(parse_ref("acme/lsmdc@prod"))) == parse_ref("acme/lsmdc@prod")
    assert str(parse_ref("lsmdc")) == "local/lsmdc" and parse_ref("lsmdc").is_latest
    assert parse_ref("lsmdc", default_tenant="acme").tenant == "acme"
    assert parse_ref("x@prod").with_version(4) == Ref("local", "x", version=4)


@pytest.mark.parametrize("text", [
    "", "@v1", "t@", "a/b/c", "/t", "t/", "T", "tâsk", "t@v0", "t@v01", "t@V1", "-t", ".t", "a..b",
    "../t", "t@../x", "t@a/b", "t@prod@x", "t t", "x" * 65, "t@" + "a" * 65, "acme/t@v1234567890",
])
def test_invalid_refs(text):
    with pytest.raises(InvalidRefError) as err:
        parse_ref(text)
    assert isinstance(err.value, ValueError) and isinstance(err.value, VopstoreError)
    assert "\n" not in str(err.value)


def test_non_string_is_refused():
    with pytest.raises(InvalidRefError):
        parse_ref(None)  # type: ignore[arg-type]


def test_names_and_aliases():
    assert validate_name("a" * 64) == "a" * 64
    for bad in ("latest", "v1", "v99"):
        with pytest.raises(InvalidRefError, match="reserved"):
            validate_alias(bad)
    assert validate_alias("prod") == "prod"


def test_parse_task_rejects_a_selector():
    assert parse_task("acme/t") == Ref("acme", "t")
    with pytest.raises(InvalidRefError):
        parse_task("acme/t@v1")
