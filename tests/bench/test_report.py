"""BENCHMARKS.md sections name the commit they were measured on, and whether the code had changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from citysignal.bench.report import update_section


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    (repo / "BENCHMARKS.md").write_text("# Benchmarks\n")
    (repo / "benchmarks" / "curve.png").write_bytes(b"old")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    return repo


def test_the_report_and_its_figures_do_not_make_the_tree_dirty(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    report, png = repo / "BENCHMARKS.md", repo / "benchmarks" / "curve.png"
    png.write_bytes(b"redrawn by the benchmark")
    update_section(report, "## Speed", "## Speed\n\nfirst rows\n", figures=(png,))
    update_section(report, "## Speed", "## Speed\n\nall rows\n", figures=(png,))  # rewritten as the run goes
    text = report.read_text()
    assert "dirty tree: no" in text and "all rows" in text and "first rows" not in text


def test_a_changed_source_file_makes_the_tree_dirty(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "code.py").write_text("x = 2\n")
    update_section(repo / "BENCHMARKS.md", "## Speed", "## Speed\n\nrows\n")
    assert "dirty tree: yes" in (repo / "BENCHMARKS.md").read_text()


def test_a_figure_outside_the_checkout_is_ignored(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    elsewhere = tmp_path / "other.png"
    elsewhere.write_bytes(b"x")
    update_section(repo / "BENCHMARKS.md", "## Speed", "## Speed\n\nrows\n", figures=(elsewhere,))
    assert "dirty tree: no" in (repo / "BENCHMARKS.md").read_text()
