"""The main job end to end: `citysignal demo --quick` writes a report whose numbers are the JSON's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from citysignal.bench.demo import KPIS


def test_demo_quick_report_matches_its_json(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "citysignal", "demo", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "results.json").read_text())
    page = (out / "report.html").read_text()
    rows = re.findall(r"<tr><td>([^<]+)</td>(.*?)</tr>", page)
    assert [name for name, _ in rows] == [k["controller"] for k in data["kpis"]]
    assert {k["controller"] for k in data["kpis"]} == {"ai", "maxpressure", "actuated", "fixed"}
    for (_, cells), kpi in zip(rows, data["kpis"], strict=True):
        shown = dict(re.findall(r'<td data-kpi="(\w+)">([^<]+)</td>', cells))
        for key, _, fmt in KPIS:
            assert shown[key] == fmt.format(kpi[key])
        assert kpi["safety_violations"] == 0
        assert kpi["arrived"] > 100
    assert page.count("data:image/png;base64,") == 3
    # the AI must not gridlock the city where the classic controllers keep it moving
    by_name = {k["controller"]: k for k in data["kpis"]}
    assert by_name["ai"]["resco_delay"] < by_name["fixed"]["resco_delay"]
