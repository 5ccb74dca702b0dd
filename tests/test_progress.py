"""The one progress bar: drawn on stderr only (stdout stays for results), nothing at all when disabled."""

from __future__ import annotations

import subprocess
import sys

from vopstore.progress import ProgressBar


def test_a_bar_draws_on_stderr_and_leaves_stdout_alone(capsys):
    with ProgressBar("embedding g", 3) as bar:
        bar.advance(2)
        bar.advance(1)
    with ProgressBar("pull t", unit="bytes") as bar:
        bar.update(1024, 2048)
        bar.update(2048, 2048, info="verified")
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("embedding g") and lines[0].split()[-2] == "3/3"
    assert lines[1].startswith("pull t") and "2.0/2.0 kB" in lines[1] and "verified" in lines[1]


def test_a_disabled_bar_draws_nothing_and_never_imports_rich():
    code = ("import sys; from vopstore.progress import ProgressBar\n"
            "with ProgressBar('x', 10, enabled=False) as bar:\n"
            "    bar.advance(3); bar.update(5, 10, info='y')\n"
            "print('rich' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert (done.stdout, done.stderr) == ("False\n", "")
