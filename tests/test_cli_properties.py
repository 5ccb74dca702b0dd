"""Property-based: whatever refs, names, metrics files, config files and checkpoint bytes a user hands the CLI,
the answer is success or ONE line on stderr with exit 1, and a refused command leaves the store as it was."""

from __future__ import annotations

import json
import sqlite3
import struct
from contextlib import closing

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.fixtures.cli import run_cli
from tests.fixtures.stores import checkpoint_bytes
from vopstore.refs import _NAME

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
GOOD = checkpoint_bytes(1)
# Characters a confused user or a script might send: name characters, separators, and a few nasty ones.
REF_PIECES = st.sampled_from(list("abcvz019._-/@ ") + ["A", "\x00", "é", "..", "v-", "@v", "\n", "%", "*", "\\", "t"])


def _texts(max_pieces: int):
    return st.lists(REF_PIECES, max_size=max_pieces).map("".join)



@pytest.fixture
def store(capsys, ckpt, vopstore_home):
    """A local store with t@v1 (aliased prod); returns a function giving its whole state (rows and files)."""
    assert run_cli(capsys, "add", "t", str(ckpt(1)))[0] == 0 and run_cli(capsys, "tag", "t@v1", "prod")[0] == 0

    def state():
        # Every row of every table, read with sqlite3 itself: independent of the store's code, and a
        # refusal that leaves any trace (an audit row, a task, a moved alias) shows. Milliseconds, where
        # opening the store through the registry five times per example was most of these tests' time.
        with closing(sqlite3.connect((vopstore_home / "store" / "store.db").as_uri() + "?mode=ro", uri=True)) as db:
            tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            rows = {table: sorted(map(repr, db.execute(f'SELECT * FROM "{table}"'))) for table in sorted(tables)}
        root = vopstore_home / "store" / "blobs"
        files = sorted((str(p.relative_to(root)), p.read_bytes()) for p in root.rglob("*") if p.is_file())
        return rows, files
    return state


def _refused_cleanly(result, before, after) -> bool:
    """Success, or exit 1 with one line and nothing changed. Returns whether it was refused."""
    code, out, err = result
    assert "Traceback" not in err, err
    if code == 0:
        return False
    assert code == 1 and out == "", result
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert before == after
    return True


@SETTINGS
@given(ref=_texts(30) | st.from_regex(r"[a-z0-9]{1,8}(/[a-z]{1,5})?@v-?[0-9]{1,12}", fullmatch=True))
def test_any_ref(capsys, store, ref):
    assume(not ref.startswith("-"))  # an option, not a ref: click's usage error (exit 2) is right there
    before = store()
    for command in (("show", ref), ("ls", ref), ("verify", ref), ("rm", ref)):
        result = run_cli(capsys, *command)
        if command[0] == "rm" and result[0] == 0:
            return  # a valid ref of the one version: removed, as asked
        refused = _refused_cleanly(result, before, store())
        if command[0] == "show" and not refused:
            assert ref in ("t", "t@v1", "t@prod", "t@latest", "local/t", "local/t@v1", "local/t@prod",
                           "local/t@latest")


@SETTINGS
@given(name=_texts(70))
def test_any_alias_or_task_name(capsys, store, ckpt, name):
    assume(not name.startswith("-"))
    before = store()
    valid = bool(_NAME.fullmatch(name)) and ".." not in name
    tagged = run_cli(capsys, "tag", "t@v1", name)
    if not _refused_cleanly(tagged, before, store()):
        assert valid
        return
    untagged = run_cli(capsys, "untag", "t", name)
    assert _refused_cleanly(untagged, before, store())
    added = run_cli(capsys, "add", name, str(ckpt(1)))
    if not valid:
        assert _refused_cleanly(added, before, store())


JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8)


@SETTINGS
@given(content=st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.integers(2, 5000).map(lambda depth: ("[" * depth + "]" * depth).encode()),
    st.integers(2, 5000).map(lambda depth: ('{"a":' * depth + "1" + "}" * depth).encode()),
    st.binary(max_size=40),
))
def test_any_metrics_file(capsys, store, ckpt, tmp_path, content):
    metrics = tmp_path / "metrics.json"
    metrics.write_bytes(content)
    before = store()
    result = run_cli(capsys, "add", "t", str(ckpt(2)), "--metrics", str(metrics))
    if not _refused_cleanly(result, before, store()):
        parsed = json.loads(content)
        assert isinstance(parsed, dict)
        assert run_cli(capsys, "rm", result[1].strip())[0] == 0


TOML_KEYS = st.sampled_from(["remotes", "url", "blobs", "token", "origin", "x"])
TOML_VALUES = st.sampled_from(['"file:///tmp/r"', '"s3://b/p"', '"ftp://x"', '""', "5", "true", "[1, 2]", '["a"]',
                               "{}", '{url = "file:///tmp/r"}', '{url = 5}', "1e400", '"postgresql://x"'])


@SETTINGS
@given(lines=st.lists(st.one_of(
    st.tuples(TOML_KEYS, TOML_VALUES).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.sampled_from(["[remotes]", "[remotes.origin]", "[remotes.Bad]", "[remotes.origin.url]", "[[remotes]]", "["]),
), max_size=6), junk=st.binary(max_size=8))
def test_any_config_file(capsys, store, vopstore_home, lines, junk):
    config = vopstore_home / "config.toml"
    config.write_bytes("\n".join(lines).encode() + (junk if len(lines) % 2 else b""))
    before = store(), config.read_bytes()
    for command in (("remote", "ls"), ("push", "t@v1", "--remote", "origin"), ("pull", "t@v1", "--remote", "origin")):
        result = run_cli(capsys, *command)
        if command[0] == "remote":
            _refused_cleanly(result, before, (store(), config.read_bytes()))
        elif result[0] != 0:  # push / pull may succeed against a valid remote; a refusal changes nothing here
            _refused_cleanly(result, before[0], store())


def _header(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _pack(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


JSONISH = st.none() | st.booleans() | st.integers(-3, 1 << 40) | st.floats() | st.text(max_size=6) | st.lists(
    st.integers(-2, 20), max_size=4)


@st.composite
def damaged_checkpoints(draw) -> bytes:
    """A valid tiny prompt set with one kind of damage: bytes, header fields, metadata fields or tensor values."""
    kind = draw(st.sampled_from(["flip", "truncate", "tensor-field", "meta-field", "config", "values"]))
    if kind == "flip":
        at = draw(st.integers(0, len(GOOD) - 1))
        return GOOD[:at] + bytes([GOOD[at] ^ draw(st.integers(1, 255))]) + GOOD[at + 1:]
    if kind == "truncate":
        return GOOD[:draw(st.integers(0, len(GOOD) - 1))]
    header, body = _header(GOOD)
    meta = json.loads(header["__metadata__"]["vopstore"])
    if kind == "tensor-field":
        name = draw(st.sampled_from(["text", "visual", "other"]))
        entry = header.setdefault(name, {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})
        entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(JSONISH | st.sampled_from(
            ["F16", "BF16", "I8", "U8", "F64", "BOOL"]))
    elif kind == "meta-field":
        meta[draw(st.sampled_from(["method", "dtype", "params", "backbone_fingerprint", "format_version",
                                   "backbone_name", "extra", "config"]))] = draw(JSONISH | st.sampled_from(
                                       ["vop-x", "vop-f", "int8", "float16", "bfloat16"]))
    elif kind == "config":
        meta["config"][draw(st.sampled_from(["text_prompts", "visual_prompts", "text_depth", "visual_depth",
                                             "text_layout", "init_std", "k_shallow", "prompts"]))] = draw(JSONISH)
    else:
        at = draw(st.integers(0, len(body) // 4 - 1)) * 4
        value = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e30, -0.0]))
        body = body[:at] + struct.pack("<f", value) + body[at + 4:]
    header["__metadata__"]["vopstore"] = json.dumps(meta)
    return _pack(header, body)


@SETTINGS
@given(data=damaged_checkpoints())
def test_any_checkpoint_contents(capsys, store, tmp_path, data):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(data)
    before = store()
    result = run_cli(capsys, "add", "t", str(path))
    if not _refused_cleanly(result, before, store()):
        from vopstore.checkpoint import parse_checkpoint_bytes

        parse_checkpoint_bytes(data, contents=True)  # what was accepted is a valid prompt set ...
        assert result[1].startswith("local/t@v")
        run_cli(capsys, "rm", result[1].strip(), "--force")  # ... and the next example starts from the same store
