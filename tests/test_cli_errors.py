"""The CLI entry: user errors are one line on stderr with exit 1, usage errors exit 2, never a traceback."""

from __future__ import annotations

import pytest

from vopstore.cli.app import main


def _run(capsys, argv):
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_home_that_is_a_file_is_one_line(capsys, tmp_path, monkeypatch):
    home = tmp_path / "not-a-folder"
    home.write_text("x")
    monkeypatch.setenv("VOPSTORE_HOME", str(home))
    code, _, err = _run(capsys, ["ls"])
    assert code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert "Not a directory" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["bogus-command"], ["show"], ["ls", "--no-such-option"]])
def test_usage_errors_exit_2_with_clicks_message(capsys, argv):
    code, _, err = _run(capsys, argv)
    assert code == 2 and "Usage:" in err and "Traceback" not in err


def test_unknown_task_is_exit_1(capsys):
    code, out, err = _run(capsys, ["show", "nothing-here"])
    assert code == 1 and out == "" and err.startswith("error: ") and len(err.splitlines()) == 1


def test_success_returns_0(capsys):
    code, out, _ = _run(capsys, ["version"])
    assert code == 0 and out.strip()


def test_serve_with_an_unknown_precompute_mode_is_one_line_before_loading_anything(capsys, tmp_path):
    code, _, err = _run(capsys, ["serve", "--backbone", str(tmp_path / "no-backbone"), "--precompute", "sometimes"])
    assert code == 1 and len(err.splitlines()) == 1
    assert "--precompute must be one of on, off, background" in err
