"""Every bad input ends in one line on stderr and exit code 2, never a traceback, a hang or a misleading line.

Two tables: command-line inputs (options, policies, configs that SUMO itself refuses), and a corpus of
corrupt files (truncated, garbage, the wrong kind of file, gzip that is not gzip, missing) for each file
a scenario names: net, routes, additional and the .sumocfg itself.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from scenario_files import CLOCK_FLOWS, grid_net

from citysignal.control.ai import default_policy_path

CLI = [sys.executable, "-m", "citysignal"]
VTYPES = '<additional><vType id="car" accel="2.6" decel="4.5" length="5"/></additional>\n'
GARBAGE = bytes(range(256)) * 8
OSM = Path(__file__).parent / "data" / "small_town.osm.xml"
FILES = {"net": "grid.net.xml", "routes": "city.rou.xml", "additional": "vtypes.add.xml"}


def write_scenario(folder: Path, net: str = FILES["net"], routes: str = FILES["routes"],
                   additional: str = FILES["additional"], extra: str = "") -> Path:  # fmt: skip
    """A good scenario (2x2 grid, clock-time flows, a vType file, 15:00:00-15:01:00) unless files are spoiled."""
    folder.mkdir(parents=True, exist_ok=True)
    grid_net(folder)
    (folder / FILES["routes"]).write_text(CLOCK_FLOWS)
    (folder / FILES["additional"]).write_text(VTYPES)
    cfg = folder / "city.sumocfg"
    cfg.write_text(
        f'<configuration><input><net-file value="{net}"/><route-files value="{routes}"/>'
        f'<additional-files value="{additional}"/></input>{extra}'
        '<time><begin value="15:00:00"/><end value="15:01:00"/></time></configuration>'
    )
    return cfg


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def assert_one_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("citysignal: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def refused_by_sumo(folder: Path, spoil: str) -> Path:
    """A scenario that passes our checks but that SUMO refuses while loading it."""
    if spoil == "edge":
        cfg = write_scenario(folder)
        (folder / FILES["routes"]).write_text(CLOCK_FLOWS.replace("left0A0 A0B0", "left0A0 BOGUS"))
        return cfg
    if spoil == "option":
        return write_scenario(folder, extra='<processing><bogus-option value="1"/></processing>')
    # an additional SUMO loads after the net, where libsumo only says "Process Error"
    cfg = write_scenario(folder)
    (folder / FILES["additional"]).write_text(
        '<additional><e1Detector id="d" lane="nolane_0" pos="1" period="60" file="NUL"/></additional>'
    )
    return cfg


def truncated_policy(folder: Path) -> Path:
    data = default_policy_path().read_bytes()
    (folder / "cut.npz").write_bytes(data[: len(data) // 2])
    return folder / "cut.npz"


def empty_policy(folder: Path) -> Path:
    (folder / "empty.npz").write_bytes(b"")
    return folder / "empty.npz"


CASES: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "truncated policy": (lambda d: ["bench", str(write_scenario(d)), "-c", "ai", "--policy", str(truncated_policy(d))],
                         ("cannot load AI policy", "cut.npz")),
    "empty policy": (lambda d: ["bench", str(write_scenario(d)), "-c", "ai", "--policy", str(empty_policy(d))],
                     ("cannot load AI policy", "empty.npz")),
    "missing policy": (lambda d: ["bench", str(write_scenario(d)), "-c", "ai", "--policy", str(d / "no.npz")],
                       ("no.npz",)),
    "a billion seeds": (lambda d: ["bench", "cologne1", "--seeds", "1000000000"], ("--seeds", "1000")),
    "teacher that is a SUMO program": (lambda d: ["train", "--scenarios", "cologne1", "--teacher", "actuated",
                                                  "--out", str(d)], ("--teacher actuated", "SUMO program")),
    "unknown teacher": (lambda d: ["train", "--scenarios", "cologne1", "--teacher", "nope", "--out", str(d)],
                        ("unknown controller 'nope'",)),
    "zero seeds": (lambda d: ["bench", "cologne1", "--seeds", "0"], ("--seeds",)),
    "a million workers": (lambda d: ["bench", "cologne1", "--workers", "1000000"], ("--workers",)),
    "begin nan": (lambda d: ["bench", "cologne1", "--begin", "nan"], ("bad time 'nan' for --begin",)),
    "end inf": (lambda d: ["bench", "cologne1", "--end", "inf"], ("bad time 'inf' for --end",)),
    "negative begin": (lambda d: ["bench", "cologne1", "--begin", "-600"], ("--begin", ">= 0")),
    "clock garbage": (lambda d: ["bench", "cologne1", "--begin", "7:xx"], ("bad time '7:xx'",)),
    "window before the demand, in clock time": (lambda d: ["bench", "cologne1", "--begin", "01:00:00", "--end",
                                                           "02:00:00"], ("outside the demand",)),
    "unknown edge, SUMO refuses": (lambda d: ["bench", str(refused_by_sumo(d, "edge"))],
                                   ("SUMO could not load", "BOGUS")),
    "unknown edge, no end, SUMO refuses": (lambda d: ["bench", str(without_end(refused_by_sumo(d, "edge")))],
                                           ("SUMO could not load", "BOGUS")),
    "unknown option, SUMO refuses": (lambda d: ["bench", str(refused_by_sumo(d, "option"))],
                                     ("SUMO could not load", "bogus-option")),
    "unknown lane, SUMO refuses": (lambda d: ["bench", str(refused_by_sumo(d, "lane"))],
                                   ("SUMO could not load", "nolane_0")),
    "config begin garbage": (lambda d: ["bench", str(write_sumocfg_time(d, "7h"))], ("bad time '7h'", "city.sumocfg")),
    "plan period nan": (lambda d: ["plan", "export", "cologne8", "--out", str(d / "p.xml"), "--period", "nan-07:00"],
                        ("bad period 'nan-07:00'",)),
    "profile begin nan": (lambda d: ["profile", "grid4x4", "--out", str(d / "o"), "--begin", "nan"],
                          ("bad time 'nan' for --begin",)),
    "profile peak inf": (lambda d: ["profile", "grid4x4", "--out", str(d / "o"), "--peak-factor", "inf"],
                         ("peak factor",)),
    "import-osm begin nan": (lambda d: ["import-osm", str(OSM), "--out", str(d / "o"), "--begin", "nan"],
                             ("bad time 'nan' for --begin",)),
    "import-osm hours inf": (lambda d: ["import-osm", str(OSM), "--out", str(d / "o"), "--hours", "inf"],
                             ("--hours",)),
    "serve begin nan": (lambda d: ["serve", "grid4x4", "-c", "fixed", "--port", "0", "--begin", "nan",
                                   "--db", f"sqlite:///{d / 'a.db'}"], ("bad time 'nan' for --begin",)),
    "serve end garbage": (lambda d: ["serve", "grid4x4", "-c", "fixed", "--port", "0", "--end", "soon",
                                     "--db", f"sqlite:///{d / 'a.db'}"], ("bad time 'soon' for --end",)),
}  # fmt: skip


def without_end(cfg: Path) -> Path:
    """The config without its end: the note on the assumed end must not add a line to an error."""
    cfg.write_text(cfg.read_text().replace('<end value="15:01:00"/>', ""))
    return cfg


def write_sumocfg_time(folder: Path, begin: str) -> Path:
    cfg = write_scenario(folder)
    cfg.write_text(cfg.read_text().replace('<begin value="15:00:00"/>', f'<begin value="{begin}"/>'))
    return cfg


@pytest.mark.parametrize("case", CASES)
def test_bad_command_line_input_is_one_line(case: str, tmp_path: Path) -> None:
    args, fragments = CASES[case]
    assert_one_line(run(*args(tmp_path / "s")), *fragments)


def test_the_good_scenario_of_the_corpus_runs(tmp_path: Path) -> None:
    proc = run("bench", str(write_scenario(tmp_path)), "-c", "fixed", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"safety_violations": 0' in proc.stdout


def _gzip_truncated(good: bytes) -> bytes:
    packed = gzip.compress(good)
    return packed[: len(packed) // 2]


OTHER_KIND = {"net": CLOCK_FLOWS.encode(), "routes": None, "additional": None, "sumocfg": VTYPES.encode()}
SPOILS: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda good: good[: len(good) // 2],
    "garbage": lambda good: GARBAGE,
    "empty": lambda good: b"",
}


@pytest.mark.parametrize("kind", ["net", "routes", "additional", "sumocfg"])
@pytest.mark.parametrize("spoil", [*SPOILS, "wrong root", "missing"])
def test_corrupt_files_are_one_line(kind: str, spoil: str, tmp_path: Path) -> None:
    cfg = write_scenario(tmp_path)
    target = cfg if kind == "sumocfg" else tmp_path / FILES[kind]
    if spoil == "missing":
        target.unlink()
    elif spoil == "wrong root":  # a file of another kind: the net as routes or additional, routes as the net
        other = OTHER_KIND[kind]
        target.write_bytes(other if other is not None else (tmp_path / FILES["net"]).read_bytes())
    else:
        target.write_bytes(SPOILS[spoil](target.read_bytes()))
    # The net loaded again as an additional file passes our checks; SUMO refuses it, naming no file.
    named = cfg.name if (kind, spoil) == ("additional", "wrong root") else target.name
    assert_one_line(run("bench", str(cfg), "-c", "fixed"), named)


@pytest.mark.parametrize("kind", ["net", "routes", "additional"])
@pytest.mark.parametrize("spoil", ["gzip that is not gzip", "truncated gzip"])
def test_bad_gzip_is_one_line(kind: str, spoil: str, tmp_path: Path) -> None:
    names = {k: f"{v}.gz" if k == kind else v for k, v in FILES.items()}
    cfg = write_scenario(tmp_path, **names)
    good = (tmp_path / FILES[kind]).read_bytes()
    (tmp_path / names[kind]).write_bytes(GARBAGE if spoil == "gzip that is not gzip" else _gzip_truncated(good))
    assert_one_line(run("bench", str(cfg), "-c", "fixed"), names[kind])


def test_a_missing_scenario_folder_is_one_line(tmp_path: Path) -> None:
    shutil.rmtree(tmp_path)
    assert_one_line(run("bench", str(tmp_path / "city.sumocfg")), "not found", "city.sumocfg")
