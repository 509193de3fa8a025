"""The network model on every bundled scenario, on generated nets, and on broken input."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from bundled import BUNDLED, bundled_layout, bundled_network

from citysignal.errors import UserError
from citysignal.network import load_network, signals
from citysignal.network.plans import ACTUATED_PROGRAM_ID, write_actuated
from citysignal.sumo_home import binary
from citysignal.xmlfile import open_xml

EXPECTED_TLS = {
    "arterial4x4": 16,
    "bologna_joined": 13,  # measured: 13 tlLogic ids in the net, all overridden by bologna_joined_tls.add.xml
    "cologne1": 1,
    "cologne3": 3,
    "cologne8": 8,
    "grid4x4": 16,
    "hangzhou_4x4": 16,
    "ingolstadt1": 1,
    "ingolstadt7": 7,
    "ingolstadt21": 21,
    "manhattan_28x7": 196,
    "manhattan_evening_peak": 196,  # the same net under a synthetic evening-peak demand
}


def test_every_bundled_scenario_has_an_expected_count() -> None:
    assert sorted(EXPECTED_TLS) == sorted(BUNDLED)


@pytest.mark.parametrize("name", BUNDLED)
def test_signal_counts(name, network_of) -> None:
    net = network_of(name)
    assert len(net.intersections) == EXPECTED_TLS[name]
    assert len({i.id for i in net.intersections}) == EXPECTED_TLS[name]
    assert len(net.controllable) == EXPECTED_TLS[name]


@pytest.mark.parametrize("name", BUNDLED)
def test_every_intersection_has_a_green(name, network_of) -> None:
    for inter in network_of(name).intersections:
        assert len(inter.greens) >= 1, inter.id
        assert len(set(inter.greens)) == len(inter.greens), inter.id
        for g in inter.greens:
            assert not signals.is_transitional(g), (inter.id, g)
            assert signals.green_mask(g).any(), (inter.id, g)
        # every green is a program phase and every program phase is a green or a transition
        assert {p.state for p in inter.program} >= set(inter.greens)
        for phase, g in zip(inter.program, inter.program_green_index, strict=True):
            assert (g >= 0) == (not signals.is_transitional(phase.state))
            if g >= 0:
                assert inter.greens[g] == phase.state


@pytest.mark.parametrize("name", BUNDLED)
def test_movements_reference_valid_signals(name, network_of) -> None:
    net = network_of(name)
    for inter in net.intersections:
        n = inter.n_signals
        assert n > 0
        assert all(len(p.state) == n for p in inter.program), inter.id
        assert inter.movements, inter.id
        for m in inter.movements:
            assert 0 <= m.signal < n, (inter.id, m)
            assert m.from_lane in net.lanes, (inter.id, m)
            assert m.to_lane in net.lanes, (inter.id, m)
        assert [m.signal for m in inter.movements] == sorted(m.signal for m in inter.movements)


@pytest.mark.parametrize("name", BUNDLED)
def test_hard_conflicts_are_symmetric_with_false_diagonal(name, network_of) -> None:
    net = network_of(name)
    for inter in net.intersections:
        hc = inter.hard_conflict
        assert hc.dtype == np.bool_
        assert hc.shape == (inter.n_signals, inter.n_signals), inter.id
        assert np.array_equal(hc, hc.T), inter.id
        assert not hc.diagonal().any(), inter.id
    # the relation is not empty, so the conflict checks below are not vacuous
    assert any(inter.hard_conflict.any() for inter in net.intersections)


@pytest.mark.parametrize("name", BUNDLED)
def test_no_green_shows_hard_conflicting_signals(name, network_of) -> None:
    for inter in network_of(name).intersections:
        for g in inter.greens:
            assert signals.conflicting_pairs(g, inter.hard_conflict) == [], (inter.id, g)


@pytest.mark.parametrize("name", BUNDLED)
def test_every_transition_is_legal(name, network_of) -> None:
    checked = 0
    for inter in network_of(name).intersections:
        assert inter.transition(0, 0) == ()
        for a, b in itertools.permutations(range(len(inter.greens)), 2):
            steps = inter.transition(a, b)
            for state, duration in steps:
                assert len(state) == inter.n_signals
                assert duration > 0, (inter.id, a, b, state)
            chain = [inter.greens[a], *(s for s, _ in steps), inter.greens[b]]
            for before, after in itertools.pairwise(chain):
                assert signals.lost_green_without_yellow(before, after) == [], (inter.id, a, b, chain)
                assert signals.conflicting_pairs(after, inter.hard_conflict) == [], (inter.id, a, b, chain)
            if signals.lost_green_without_yellow(inter.greens[a], inter.greens[b]):
                # a signal loses its green: some yellow must be shown, for at least a second
                assert any(signals.yellow_mask(s).any() and d >= 1.0 for s, d in steps), (inter.id, a, b)
            checked += 1
    assert checked > 0 or all(len(i.greens) == 1 for i in network_of(name).intersections)


@pytest.mark.parametrize("name", BUNDLED)
def test_service_is_major_green_unless_only_permissive(name, network_of) -> None:
    for inter in network_of(name).intersections:
        serve, green = inter.serve_signals, inter.green_signals
        major = np.stack([signals.major_mask(g) for g in inter.greens])
        assert serve.shape == green.shape
        assert not (serve & ~green).any(), inter.id  # only a green can serve
        protected = major.any(axis=0)
        assert np.array_equal(serve[:, protected], major[:, protected]), inter.id
        assert np.array_equal(serve[:, ~protected], green[:, ~protected]), inter.id
        # every signal some green shows is served by some green
        assert np.array_equal(serve.any(axis=0), green.any(axis=0)), inter.id


@pytest.mark.parametrize("name", BUNDLED)
def test_green_bounds(name, network_of) -> None:
    for inter in network_of(name).intersections:
        assert inter.min_green.shape == (len(inter.greens),)
        assert np.all(np.isfinite(inter.min_green)), inter.id
        assert np.all(inter.min_green > 0), inter.id
        assert np.all(inter.min_green <= inter.max_green), inter.id
        assert inter.yellow_time > 0
        assert inter.all_red_time >= 0


@pytest.mark.parametrize("name", BUNDLED)
def test_neighbours_are_mutual(name, network_of) -> None:
    net = network_of(name)
    for inter in net.intersections:
        assert inter.id not in inter.upstream and inter.id not in inter.downstream
        for d in inter.downstream:
            assert inter.id in net.by_id[d].upstream, (inter.id, d)
        for u in inter.upstream:
            assert inter.id in net.by_id[u].downstream, (inter.id, u)


@pytest.mark.parametrize(
    ("name", "rows", "cols"),
    [("grid4x4", 4, 4), ("arterial4x4", 4, 4), ("hangzhou_4x4", 4, 4), ("manhattan_28x7", 28, 7)],
)
def test_grid_neighbour_counts(name, rows, cols, network_of) -> None:
    counts = Counter(len(set(i.upstream) | set(i.downstream)) for i in network_of(name).intersections)
    assert counts == {2: 4, 3: 2 * (rows - 2) + 2 * (cols - 2), 4: (rows - 2) * (cols - 2)}


def test_additional_file_program_overrides_the_net(network_of, scenario_of) -> None:
    """bologna_joined's tls additional file replaces the net's program "0" with "utopia"."""
    net = network_of("bologna_joined")
    assert {i.program_id for i in net.intersections} == {"utopia"}
    plain = load_network(scenario_of("bologna_joined").net_file)
    assert {i.program_id for i in plain.intersections} == {"0"}
    assert plain.by_id["235"].program != net.by_id["235"].program


@pytest.mark.parametrize("name", BUNDLED)
def test_layout_indexing(name, network_of, layout_of) -> None:
    net, lay = network_of(name), layout_of(name)
    inters = lay.intersections
    assert lay.n_intersections == len(net.controllable)
    assert lay.n_greens == sum(len(i.greens) for i in inters)
    assert lay.n_signals_total == sum(i.n_signals for i in inters)
    assert list(lay.green_start) == list(np.cumsum([0] + [len(i.greens) for i in inters])[:-1])
    for g in range(lay.n_greens):
        assert lay.green_start[lay.green_int[g]] <= g
    # (green, movement) incidence agrees with each intersection's serve_signals
    served = set(zip(lay.serve_green.tolist(), lay.serve_mov.tolist(), strict=True))
    for j in range(len(lay.mov_int)):
        k = int(lay.mov_int[j])
        for g in range(len(inters[k].greens)):
            expect = bool(inters[k].serve_signals[g, lay.mov_signal[j]])
            assert ((int(lay.green_start[k]) + g, j) in served) == expect


@pytest.mark.parametrize("name", ["cologne8", "ingolstadt21", "grid4x4"])
def test_layout_argmax_green_matches_brute_force(name, layout_of) -> None:
    lay = layout_of(name)
    rng = np.random.default_rng(7)
    for _ in range(20):
        score = rng.integers(0, 3, lay.n_greens).astype(float)  # many ties: first green must win
        best = lay.argmax_green(score)
        for k in range(lay.n_intersections):
            s, n = int(lay.green_start[k]), len(lay.intersections[k].greens)
            assert best[k] == int(np.argmax(score[s : s + n]))
    per_mov = rng.random(len(lay.mov_int))
    want = np.zeros(lay.n_greens)
    for g, m in zip(lay.serve_green, lay.serve_mov, strict=True):
        want[g] += per_mov[m]
    assert np.allclose(lay.per_green(per_mov), want)


@pytest.mark.parametrize("name", BUNDLED)
def test_actuated_plan_is_a_legal_cycle(name, network_of, tmp_path) -> None:
    """The actuated reference program (an additional file) runs the greens with legal transitions."""
    net = network_of(name)
    path = write_actuated(net.intersections, tmp_path / "actuated.add.xml")
    logics = {t.get("id"): t for t in ET.parse(path).getroot().iter("tlLogic")}
    assert set(logics) == {i.id for i in net.controllable}
    for inter in net.controllable:
        tl = logics[inter.id]
        assert tl.get("type") == "actuated" and tl.get("programID") == ACTUATED_PROGRAM_ID
        states = [p.get("state") for p in tl.iter("phase")]
        assert {s for s in states if s in inter.greens} == {inter.greens[r.green] for r in inter.cycle}
        for before, after in itertools.pairwise([*states, states[0]]):
            assert not signals.lost_green_without_yellow(before, after), (inter.id, before, after)
            assert not signals.conflicting_pairs(after, inter.hard_conflict), (inter.id, after)
        for p in tl.iter("phase"):
            if p.get("state") in inter.greens:
                assert 0 < float(p.get("minDur")) <= float(p.get("maxDur"))


# generated and broken nets -------------------------------------------------------------------


def _netgenerate(out: Path, *extra: str) -> Path:
    subprocess.run(
        [binary("netgenerate"), "--grid", "--no-turnarounds", "-o", str(out), *extra],
        check=True,
        capture_output=True,
    )
    return out


def test_net_without_traffic_lights_is_a_user_error(tmp_path) -> None:
    net = _netgenerate(tmp_path / "plain.net.xml", "--grid.number=2")
    text = net.read_text()
    assert "<tlLogic" not in text and 'type="priority"' in text  # netgenerate made priority junctions
    with pytest.raises(UserError, match="no traffic lights") as info:
        load_network(net)
    assert str(net) in str(info.value)


def test_generated_traffic_light_net_is_modelled(tmp_path) -> None:
    net_file = _netgenerate(
        tmp_path / "tls.net.xml", "--grid.number=3", "--grid.attach-length=100", "--default-junction-type=traffic_light"
    )
    net = load_network(net_file)
    assert len(net.intersections) == 9
    for inter in net.intersections:
        assert len(inter.greens) >= 2
        assert inter.hard_conflict.any()
        for a, b in itertools.permutations(range(len(inter.greens)), 2):
            chain = [inter.greens[a], *(s for s, _ in inter.transition(a, b)), inter.greens[b]]
            for before, after in itertools.pairwise(chain):
                assert not signals.lost_green_without_yellow(before, after)
                assert not signals.conflicting_pairs(after, inter.hard_conflict)
    centre = net.by_id["B1"]
    assert set(centre.upstream) == set(centre.downstream) == {"A1", "B0", "B2", "C1"}


def test_missing_net_is_a_user_error_naming_the_file(tmp_path) -> None:
    missing = tmp_path / "nowhere.net.xml"
    with pytest.raises(UserError, match="not found") as info:
        load_network(missing)
    assert str(missing) in str(info.value)


def test_truncated_gz_net_is_a_user_error_naming_the_file(tmp_path, scenario_of) -> None:
    data = scenario_of("cologne1").net_file.read_bytes()
    broken = tmp_path / "broken.net.xml.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt") as info:
        load_network(broken)
    assert str(broken) in str(info.value)


def test_truncated_xml_net_is_a_user_error_naming_the_file(tmp_path, scenario_of) -> None:
    with open_xml(scenario_of("cologne1").net_file) as fh:
        text = fh.read()
    broken = tmp_path / "broken.net.xml"
    broken.write_bytes(text[: len(text) // 3])
    with pytest.raises(UserError, match="corrupt") as info:
        load_network(broken)
    assert str(broken) in str(info.value)


def test_garbage_gz_net_is_a_user_error(tmp_path) -> None:
    broken = tmp_path / "garbage.net.xml.gz"
    broken.write_bytes(b"this is not gzip at all")
    with pytest.raises(UserError) as info:
        load_network(broken)
    assert str(broken) in str(info.value)


def test_non_net_xml_is_a_user_error(tmp_path, scenario_of) -> None:
    cfg = tmp_path / "cologne1.net.xml"
    shutil.copy(scenario_of("cologne1").sumocfg, cfg)
    with pytest.raises(UserError, match="not a SUMO net") as info:
        load_network(cfg)
    assert str(cfg) in str(info.value)


def test_missing_additional_file_is_a_user_error(tmp_path, scenario_of) -> None:
    missing = tmp_path / "gone.add.xml"
    with pytest.raises(UserError, match="not found") as info:
        load_network(scenario_of("cologne1").net_file, [missing])
    assert str(missing) in str(info.value)


def test_pedestrian_crossings(tmp_path: Path) -> None:
    """No bundled net has crossings, so build a junction with sidewalks and signalized crossings."""
    net_file = tmp_path / "ped.net.xml"
    subprocess.run(
        [binary("netgenerate"), "--grid", "--grid.x-number", "1", "--grid.y-number", "1", "--grid.attach-length",
         "200", "--default-junction-type", "traffic_light", "--sidewalks.guess", "--crossings.guess",
         "-o", str(net_file)],
        check=True, capture_output=True,
    )  # fmt: skip
    inter = load_network(net_file).by_id["A0"]  # the junction; the arms' ends are plain
    peds = inter.pedestrian_signals
    assert len(peds) == 4  # one signalized crossing per arm
    assert all(m.from_lane.startswith(":") for m in inter.movements if m.pedestrian)
    assert inter.hard_conflict[list(peds)].any()  # crossings conflict with turning vehicles
    assert all(not m.pedestrian for m in inter.vehicle_movements)
    # the program clears crossings with a pedestrian red (no yellow) while vehicles keep green:
    # that is its own legal transition, kept as it is
    for a in range(len(inter.greens)):
        for b in range(len(inter.greens)):
            chain = [inter.greens[a], *(s for s, _ in inter.transition(a, b)), inter.greens[b]]
            for before, after in itertools.pairwise(chain):
                assert not signals.conflicting_pairs(after, inter.hard_conflict)
                dropped = signals.lost_green_without_yellow(before, after)
                assert set(dropped) <= set(peds)
    assert inter.transition(0, 1) == ()  # green -> pedestrian clearance, straight from the program


def test_feeders_are_the_roads_leading_only_to_an_approach() -> None:
    """ingolstadt7's approach 10425609#1 is a 0.92 m stub: its queue stands on the road behind it, which
    leads nowhere else; the layout spreads a feeder lane's queue evenly over the lanes of the edge it
    feeds."""
    net = bundled_network("ingolstadt7")
    assert "10425609#0" in net.feeders["10425609#1"]
    assert all(edge not in fed for edge, fed in net.feeders.items())
    layout = bundled_layout("ingolstadt7")
    row = layout.lanes.index("10425609#1_1")
    per_lane = layout.from_feeders(np.ones(len(layout.feed_lanes)))
    lanes_of = Counter(lane.edge for lane in net.lanes.values())
    fed = sum(lanes_of[e] for e in net.feeders["10425609#1"])
    assert per_lane[row] == pytest.approx(fed / lanes_of["10425609#1"])
    assert layout.from_feeders(np.zeros(len(layout.feed_lanes))).sum() == 0


def test_a_road_split_at_a_pass_through_runs_on_and_a_link_into_a_junction_does_not() -> None:
    """bologna_joined's 11 m edge b35[1][1][0] ends at b30, a junction nothing else enters and where it goes
    on as one road: its run is that road's. a134 (11.3 m) ends where a133 and a165 merge, and ingolstadt21's
    12.1 m link 174800513 at a signal: each runs only its own length."""
    bologna = bundled_network("bologna_joined")
    b35 = bologna.lanes["b35[1][1][0]_0"]
    assert b35.length < 12.0 < 100.0 < bologna.runs[b35.edge]
    assert "a134" not in bologna.runs
    assert "174800513" not in bundled_network("ingolstadt21").runs
    layout = bundled_layout("bologna_joined")
    row = layout.lanes.index("b35[1][1][0]_0")
    assert layout.lane_run[row] == bologna.runs["b35[1][1][0]"]
    assert (layout.lane_run >= layout.lane_length).all()


def test_synthesized_transitions_clear_as_long_as_the_plan_does() -> None:
    """bologna_joined's UTOPIA plan at 219 starts greens 16, 17, 22, 23 while 3-6 are still yellow (an
    intergreen under the yellow); the guard cannot show that, so it synthesizes yellow then green, with no
    all-red the plan never asked for. A hand-over the plan never makes keeps the program's all-red where
    the pair hard-conflicts."""
    inter = bundled_network("bologna_joined").by_id["219"]
    assert inter.all_red_time == 3.0
    src, dst = 4, 5  # rrrGGGG... -> ...GGg...GGg: the plan's own way shows greens beside conflicting yellows
    assert inter._program_transition(src, dst) is None
    assert np.nanmax(inter.intergreen[np.ix_([3, 4, 5, 6], [16, 17, 22, 23])]) < inter.yellow_time
    steps = inter.transition(src, dst)
    assert [s.count("y") > 0 for s, _ in steps] == [True]
    cleared = 0
    for a in range(len(inter.greens)):
        for b in range(len(inter.greens)):
            lost = inter.green_signals[a] & ~inter.green_signals[b]
            gained = inter.green_signals[b] & ~inter.green_signals[a]
            never = np.isnan(inter.intergreen[np.ix_(lost, gained)])
            if (never & inter.hard_conflict[np.ix_(lost, gained)]).any() and inter._program_transition(a, b) is None:
                assert inter.transition(a, b)[-1] == (inter.transition(a, b)[-1][0], 3.0)
                assert not any(c in "yY" for c in inter.transition(a, b)[-1][0])
                cleared += 1
    assert cleared > 0
