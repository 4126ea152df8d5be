"""End to end: a tiny spiral-like run whose report has a Claims section computed from its records,
recomputed by ``odebench report`` and changed by a changed record."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import MINI_SUITE, odebench_cli

from odebench import report
from odebench.records import RECORDS, read_records

pytest.importorskip("torchdiffeq")

CLAIMS = """
[claims.capell-cost]
source = "Capell et al. 2023, Table 2"
claim = "The adaptive solver takes more than twice as long for minimal decrease in error."
figures = ["train_s", "final_mse"]
rule = "cost_vs_gain"
params = { slow = "dopri5", fast = "rk4", min_time_ratio = 2.0, max_error_gain = 0.1 }
at_least = { iterations_done = 2 }
only = { grad_mode = ["backprop"] }
profile = "quick"

[claims.ott-swap]
source = "Ott et al. 2021"
claim = "A model trained with a coarse fixed-step solver loses accuracy under an accurate adaptive one."
figures = ["swap_mse_delta"]
rule = "solver_swap"
params = { methods = ["euler"], min_change = 0.0 }

[claims.kidger-seminorm]
source = "Kidger et al. 2021"
claim = "The seminorm adjoint needs a median of 40 % fewer backward evaluations."
figures = ["nfe_bwd"]
rule = "seminorm_saving"
profile = "default"
"""


def claims_section(text: str) -> str:
    start = text.index("## Claims")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def verdict(section: str, claim: str) -> str:
    row = next(line for line in section.splitlines() if line.startswith(f"| {claim} |"))
    return row.split("**")[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("claims")
    text = MINI_SUITE.format(iterations=3, isolation="inline", launch="exec", threads=0, timeout=300, plugins='["torchdiffeq"]',
                             methods='["euler", "rk4", "dopri5"]', grads='["backprop", "adjoint"]')
    # No fairness gate: it spawns a process per case and is not what this test is about.
    text = text.replace("[measure]\n", "[measure]\nfairness_steps = 0\n") + CLAIMS
    (tmp / "suite").mkdir()
    (tmp / "suite" / "suite.toml").write_text(text)
    out = odebench_cli("run", str(tmp / "suite"), "--profile", "quick", "--results", str(tmp / "results"),
                       "--no-progress")
    assert out.returncode == 0, out.stderr
    [run] = list((tmp / "results" / "mini").iterdir())
    return run


def test_the_report_has_a_claims_section_with_computed_verdicts(run_dir):
    text = (run_dir / "report.md").read_text()
    assert text.index("## Summary") < text.index("## Claims")
    section = claims_section(text)
    assert verdict(section, "capell-cost") in ("holds", "does not hold")
    assert verdict(section, "ott-swap") in ("holds", "does not hold")
    assert verdict(section, "kidger-seminorm") == "not measured in this run"
    assert "no adjoint-seminorm rows beside adjoint ones; the adjoint's NFE-B alone is torchdiffeq dopri5" in section
    assert "profile default measures it" in section
    # The figures name the run and the cases they came from.
    assert f"`{run_dir.name}`: `torchdiffeq/dopri5/backprop/rtol=1e-05,atol=1e-07/seed=0/cpu`" in section
    saved = json.loads((run_dir / "claims.json").read_text())
    assert [c["id"] for c in saved] == ["capell-cost", "ott-swap", "kidger-seminorm"]
    assert "swap ΔMSE" in text


def test_odebench_report_recomputes_the_claims_section(run_dir, tmp_path):
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    before = claims_section((copy / "report.md").read_text())
    (copy / "report.md").unlink()
    (copy / "claims.json").unlink()
    out = odebench_cli("report", str(copy))
    assert out.returncode == 0, out.stderr
    assert claims_section((copy / "report.md").read_text()) == before
    assert (copy / "claims.json").exists()


@pytest.mark.parametrize("dopri5_s, expected", [(100.0, "holds"), (1.0, "does not hold")])
def test_an_edited_record_changes_the_verdict(run_dir, tmp_path, dopri5_s, expected):
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    records = read_records(copy)
    for r in records:
        if r["grad_mode"] == "backprop" and r["method"] in ("rk4", "dopri5"):
            # rk4 trains in 1 s; dopri5 in dopri5_s with the same final MSE.
            r["train_s"], r["final_mse"] = (dopri5_s if r["method"] == "dopri5" else 1.0), 0.02
    (copy / RECORDS).write_text("".join(json.dumps(r) + "\n" for r in records))
    section = claims_section(report.render(copy).read_text())
    assert verdict(section, "capell-cost") == expected
    assert f"time ×{dopri5_s:.2f}" in section


def test_without_its_suite_file_the_report_says_the_claims_cannot_be_computed(run_dir, tmp_path):
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    info = json.loads((copy / "run.json").read_text())
    info["suite_path"] = str(tmp_path / "gone")
    (copy / "run.json").write_text(json.dumps(info))
    assert "Not computed: the suite file" in claims_section(report.render(copy).read_text())
