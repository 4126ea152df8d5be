"""Input that can be checked before anything runs is a user error: one line, exit 2, no run folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, write_suite

MNIST = Path(os.environ.get("ODEBENCH_DATA", ROOT.parent / "shared" / "data" / "mnist"))
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def _bad_folder(tmp_path: Path, how: str) -> Path:
    if not all((MNIST / f).is_file() for f in FILES):
        pytest.skip(f"no MNIST files in {MNIST}")
    folder = tmp_path / how
    folder.mkdir()
    for f in FILES:
        shutil.copy(MNIST / f, folder / f)
    if how == "truncated":
        data = (folder / FILES[0]).read_bytes()
        (folder / FILES[0]).write_bytes(data[: len(data) // 2])
    elif how == "swapped":  # the test images where the training images belong
        (folder / FILES[0]).unlink()
        shutil.copy(MNIST / FILES[2], folder / FILES[0])
    elif how == "forged":
        data = bytearray((folder / FILES[3]).read_bytes())
        data[-1] ^= 0xFF
        (folder / FILES[3]).write_bytes(bytes(data))
    elif how == "missing":
        (folder / FILES[1]).unlink()
    return folder


@pytest.mark.parametrize("how", ["truncated", "swapped", "forged", "missing"])
def test_a_bad_mnist_folder_stops_the_run_before_any_case(cli, tmp_path, how):
    folder = _bad_folder(tmp_path, how)
    results = tmp_path / "results"
    out = cli("run", str(ROOT / "suites" / "mnist"), "--profile", "smoke", "--data-dir", str(folder),
              "--results", str(results), "--no-progress")
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "MNIST" in lines[0]
    assert not results.exists()


def test_a_typo_in_a_profile_the_run_does_not_select_is_an_error(cli, tmp_path):
    folder = write_suite(tmp_path / "s")
    toml = folder / "suite.toml"
    toml.write_text(toml.read_text() + "\n[profiles.typo]\ntrainng = { iterations = 1 }\n")
    results = tmp_path / "results"
    out = cli("run", str(folder), "--results", str(results), "--no-progress")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: unknown section [trainng] in {toml} (profile 'typo'); valid: suite, measure, matrix, paper, "
        "problem, model, training, swap, claims"]
    assert not results.exists()
