"""What a report shows when nothing ran, and how it shortens long failure messages."""

from __future__ import annotations

from conftest import odebench_cli, write_suite

from odebench import report


def test_a_run_where_no_case_ran_says_so_in_one_line(tmp_path):
    folder = write_suite(tmp_path / "s", iterations=1, methods=("euler",), grads=("checkpoint",))
    out = odebench_cli("run", str(folder), "--results", str(tmp_path / "results"), "--no-progress")
    assert out.returncode == 0, out.stderr
    line = ("No case ran: every selected case is unsupported or unavailable here (1 unsupported); "
            "see Not run.")
    assert out.stdout.splitlines()[0] == line
    assert "| plugin" not in out.stdout and "\nNot run:\n- **torchdiffeq** unsupported: euler/checkpoint" in out.stdout
    (run_dir,) = (tmp_path / "results" / "mini").iterdir()
    md = (run_dir / "report.md").read_text()
    assert line in md and "### Not run" in md and "| plugin" not in md


def test_long_messages_are_cut_at_a_word_with_an_ellipsis():
    message = ("black-box adjoint: reverse solve from t=0.5 to t=0.25 failed: step budget of 100 steps "
               "exhausted at t=0.3")
    assert report.clip(message, 70) == "black-box adjoint: reverse solve from t=0.5 to t=0.25 failed: step…"
    assert report.clip("short", 70) == "short"
    assert report.clip("/a/very/long/path/without/any/space/in/it", 20) == "/a/very/long/path/w…"
    base = {"suite": "x", "plugin": "p", "method": "rk4", "grad_mode": "adjoint", "rtol": None, "atol": None,
            "device": "cpu", "case_id": "c", "seed": 0, "status": "max_steps", "message": message}
    (row,) = report.summary(report.to_frame([base])).to_dict("records")
    assert row["status"] == "max_steps (black-box adjoint: reverse solve from t=0.5 to t=0.25 failed: step…)"
