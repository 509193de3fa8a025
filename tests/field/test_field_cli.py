"""`field-sim` and `bench --field` refuse bad input in one line with exit code 2, before any simulation."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "citysignal"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["field-sim", "cologne1", "--port", "16999", "--loss", "1.5"], "--loss must be in [0, 1)"),
        (["field-sim", "cologne1", "--port", "16999", "--outage", "25300-25200"], "FROM before TO"),
        (["field-sim", "cologne1", "--port", "16999", "--local-plan", "actuated"], "choose a local plan"),
        (["field-sim", "cologne1", "--port", "16999", "--v3-user", "ops"], "CITYSIGNAL_SNMP_AUTH_KEY"),
        (["bench", "cologne1", "-c", "maxpressure", "--field", "snmp://127.0.0.1"], "--field takes"),
        (["bench", "cologne1,cologne3", "-c", "maxpressure", "--field", "snmp://127.0.0.1:9"], "one scenario"),
        (["bench", "cologne1", "-c", "maxpressure", "--field", "snmp://127.0.0.1:9", "--buses-per-hour", "5"],
         "no --detector-faults or priority vehicles"),
    ],
)  # fmt: skip
def test_bad_field_input_is_one_line(args: list[str], says: str) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    run = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 2, run.stderr
    assert says in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
