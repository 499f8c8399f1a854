"""``frugalml compare`` and the thesis design, as a user would run them."""

from __future__ import annotations

import json
from pathlib import Path

from frugalml.reproduce import MEMORY_BUDGET_MB, design, expected_seconds, thesis_studies
from helpers import cli


def test_compare_a_study_with_itself_gives_ratios_of_one(report_study):
    result = cli("compare", str(report_study), str(report_study), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 8  # 2 workloads x 4 configurations
    assert all(r["memory_mb_ratio"] == 1.0 for r in rows)
    assert {r["key"] for r in rows} >= {"diabetes-svm/batch_size=30,step_s=0.0005"}
    by_params = json.loads(cli("compare", str(report_study), str(report_study), "--by", "params",
                               "--format", "json").stdout)
    assert len(by_params) == 4  # the two workloads share parameters: matched by parameters only
    table = cli("compare", str(report_study), str(report_study))
    assert table.returncode == 0 and "B/A" in table.stdout


def test_compare_an_unknown_study_is_a_one_line_error(tmp_path, report_study):
    result = cli("compare", str(report_study), "nope", "--root", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "No study 'nope'" in result.stderr


def test_thesis_design_labels_the_substitute_and_keeps_studies_in_one_folder(tmp_path: Path):
    main, budget = thesis_studies(tmp_path, design(quick=True), "casp_protein")
    names = [w.name for w in main.workloads]
    assert len(names) == 11 and sum("pandas" in n for n in names) == 4
    assert all("SUBSTITUTE-for-wave_energy" in n for n in names if n.startswith("casp_protein"))
    assert budget.budget == {"max_memory_mb": MEMORY_BUDGET_MB}
    assert {Path(s.path).parent for s in (main, budget)} == {tmp_path / "studies"}
    full = thesis_studies(tmp_path, design(quick=False), "casp_protein")
    assert full[0].repeats == 3 and len(full[0].search.space["learning_rate"]) == 4
    assert expected_seconds(full) > 10 * expected_seconds((main, budget))
