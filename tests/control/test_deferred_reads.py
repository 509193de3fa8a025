"""Reading lanes by rows (deferred fields, the city-scale path) decides exactly as whole arrays do: two guards
on the same observations and requests, one reading the boxes and stop lines by rows, one handed whole arrays,
write the same states and keep the same max-red clocks at every step; two AI controllers, one reading its
inputs at the deciding intersections only, one given whole arrays, request the same greens."""

from __future__ import annotations

import numpy as np
import pytest
from bundled import bundled_layout

from citysignal.control.adaptive import AdvancedMaxPressure
from citysignal.control.ai import AiController
from citysignal.control.guard import GUARD_FIELDS, SafetyGuard
from citysignal.loop import deferrable
from citysignal.scenarios import resolve
from citysignal.twin import Twin


@pytest.mark.parametrize(("name", "max_red"), [("ingolstadt21", 40.0), ("cologne3", 120.0)])
def test_rows_and_whole_arrays_decide_alike(name: str, max_red: float) -> None:
    scenario = resolve(name)
    scenario = resolve(name, scenario.begin, scenario.begin + 600.0)
    layout = bundled_layout(name)
    controller = AdvancedMaxPressure(interval=1.0)  # many changes: the boxes and stop lines matter often
    by_rows, whole = SafetyGuard(layout, max_red=max_red), SafetyGuard(layout, max_red=max_red)
    fields = controller.requires | GUARD_FIELDS
    with Twin(scenario, layout, fields=fields, defer=deferrable(controller)) as twin:
        position = twin.program_position()
        controller.reset(layout, position)
        writes = by_rows.start(twin.time, position)
        assert writes == whole.start(twin.time, position)
        twin.write(writes)
        while twin.time < scenario.end - 1.0:
            now = twin.time
            obs = twin.observe(by_rows.green.copy(), by_rows.time_in_phase(now))
            requests = controller.decide(obs)
            writes = by_rows.apply(now, requests, obs.waiting(), obs.rows("passed"), obs.rows("box"))
            assert not isinstance(obs.rows("passed"), np.ndarray)  # deferred: the guard read rows
            expected = whole.apply(now, requests, obs.waiting(), obs.lane("passed"), obs.lane("box"))
            assert writes == expected, now
            assert np.array_equal(by_rows.red_since, whole.red_since), now
            twin.write(writes)
            twin.step()
        stale = twin.observe(by_rows.green.copy(), by_rows.time_in_phase(twin.time))
        twin.step()
        with pytest.raises(RuntimeError):  # a deferred field read after its instant is a clear error
            stale.lane("box")
    assert by_rows.stats.max_red_preemptions == whole.stats.max_red_preemptions
    assert by_rows.stats.clearance_extensions == whole.stats.clearance_extensions
    assert by_rows.stats.clearance_extensions + by_rows.stats.max_red_preemptions > 0


def test_the_ai_reads_the_deciding_intersections_only_and_decides_alike() -> None:
    scenario = resolve("ingolstadt7")
    scenario = resolve("ingolstadt7", scenario.begin, scenario.begin + 300.0)
    layout = bundled_layout("ingolstadt7")
    by_rows, whole = AiController(), AiController()
    guard = SafetyGuard(layout)
    with Twin(scenario, layout, fields=by_rows.requires | GUARD_FIELDS, defer=deferrable(by_rows)) as twin:
        position = twin.program_position()
        by_rows.reset(layout, position)
        whole.reset(layout, position)
        twin.write(guard.start(twin.time, position))
        decisions = 0
        while not twin.done:
            now = twin.time
            obs = twin.observe(guard.green.copy(), guard.time_in_phase(now))
            requests = by_rows.decide(obs)
            if by_rows.deciding.any():
                assert obs.deferred is not None and not obs.deferred.full_names  # no field read in full
                decisions += 1
            assert np.array_equal(requests, whole.decide(obs.gathered())), now
            twin.write(guard.apply(now, requests, obs.waiting(), obs.rows("passed"), obs.rows("box")))
            twin.step()
            k = int(np.argmax(by_rows.deciding))
            assert by_rows.explain(k) == whole.explain(k)  # what the decision saw, after the twin moved on
    assert decisions > 50
