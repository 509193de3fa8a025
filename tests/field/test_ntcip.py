"""The NTCIP 1202 mapping: bit groups, commands and how a controller reads them, states read back from
channel colours, and which controller measures which lane."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from citysignal.errors import UserError
from citysignal.field import ntcip
from citysignal.field.client import parse_address
from citysignal.network.layout import Layout


def test_bit_groups_round_trip_past_eight_items() -> None:
    mask = np.zeros(11, dtype=bool)
    mask[[0, 7, 8, 10]] = True
    values = ntcip.bits(mask)
    assert values == [0b10000001, 0b00000101]
    assert (ntcip.unbits(values, 11) == mask).all()


@pytest.mark.parametrize("target", [0, 3, 9])
def test_a_command_asks_for_its_green_from_any_green_and_in_a_transition(target: int) -> None:
    control = ntcip.command_groups(target, 10)
    for showing in (-1, 0, 3, 9):
        assert ntcip.requested_phase(control, 10, showing) == target


def test_no_command_keeps_what_runs_and_a_force_off_goes_to_the_next_called_phase() -> None:
    assert ntcip.requested_phase(ntcip.command_groups(-1, 4), 4, 2) == -1
    call = ntcip.bits(np.array([True, False, False, True]))
    zero = [0]
    control = {ntcip.CONTROL_HOLD: zero, ntcip.CONTROL_OMIT: zero, ntcip.CONTROL_CALL: call,
               ntcip.CONTROL_FORCE_OFF: ntcip.bits(np.array([False, True, False, False]))}  # fmt: skip
    assert ntcip.requested_phase(control, 4, 1) == 3  # after phase 2 (index 1): the next called one
    assert ntcip.requested_phase(control, 4, 2) == -1  # not forced off: it keeps running


def test_block_objects_keep_values_and_unknowns() -> None:
    values = np.array([0.0, 3.0, 12.37, np.nan])
    back = ntcip.unpack(ntcip.pack(values, 100.0), 100.0)
    assert back[:3] == pytest.approx([0.0, 3.0, 12.37])
    assert np.isnan(back[3])


def test_reported_colours_read_back_as_the_models_states(layout_of: Callable[[str], Layout]) -> None:
    """Protected and permissive greens look alike on NTCIP channels: the book restores them."""
    layout = layout_of("cologne3")
    for inter in layout.intersections:
        book = ntcip.StateBook(inter)
        states = list(inter.greens) + [s for a in range(len(inter.greens)) for b in range(len(inter.greens))
                                       if a != b for s, _ in inter.transition(a, b)]  # fmt: skip
        assert any("g" in s for s in states)  # minor greens exist, so the test can fail
        for g, green in enumerate(inter.greens):
            assert book.state(*ntcip.channel_groups(green), g) == green
        for state in states:
            read = book.state(*ntcip.channel_groups(state), -1)
            assert ntcip.pattern(read) == ntcip.pattern(state)


def test_every_lane_and_box_lane_has_exactly_one_detector(layout_of: Callable[[str], Layout]) -> None:
    layout = layout_of("grid4x4")
    detectors = ntcip.DetectorMap.of(layout)
    lanes = np.concatenate(detectors.lanes)
    assert sorted(lanes.tolist()) == list(range(len(layout.lanes)))
    box = np.concatenate(detectors.box)
    assert sorted(box.tolist()) == list(range(len(layout.box_lanes)))
    for k, mine in enumerate(detectors.lanes):  # a controller measures its own approaches
        incoming = np.unique(layout.mov_in[layout.mov_int == k])
        assert set(incoming.tolist()) <= set(mine.tolist())


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1:161", "snmp://127.0.0.1", "snmp://127.0.0.1:x", "snmpv3://127.0.0.1:161",
     "snmp://127.0.0.1:161?timeout=abc", "snmp://127.0.0.1:161?timeout=0", "snmp://127.0.0.1:161?retries=3"],
)  # fmt: skip
def test_bad_field_addresses_are_one_line_errors(uri: str) -> None:
    with pytest.raises(UserError):
        parse_address(uri)


def test_field_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = parse_address("snmp://127.0.0.1:1161")
    assert (plain.community, plain.port, plain.user) == ("public", 1161, None)
    assert parse_address("snmp://city@10.0.0.2:161?timeout=0.1").community == "city"
    monkeypatch.delenv("CITYSIGNAL_SNMP_AUTH_KEY", raising=False)
    with pytest.raises(UserError, match="CITYSIGNAL_SNMP_AUTH_KEY"):
        parse_address("snmpv3://ops@10.0.0.2:161")
    monkeypatch.setenv("CITYSIGNAL_SNMP_AUTH_KEY", "auth-secret-1")
    monkeypatch.setenv("CITYSIGNAL_SNMP_PRIV_KEY", "priv-secret-1")
    address = parse_address("snmpv3://ops@10.0.0.2:161")
    assert address.user is not None and address.user.name == "ops"
    assert "secret" not in str(address)
