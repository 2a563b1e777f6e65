"""A/B slots and systemd-boot entries: names, counting, update planning, fallback."""

from __future__ import annotations

import pytest

from outpost_appliance import slots
from outpost_appliance.slots import LoaderEntry
from outpost_server.errors import InvalidInput


def test_entry_names_round_trip_with_and_without_counters() -> None:
    for name in (
        "outpost-1795445556-a.conf",
        "outpost-1795449999-b+3.conf",
        "outpost-1795449999-b+2-1.conf",
        "outpost-1795449999-b+0-3.conf",
    ):
        entry = LoaderEntry.parse(name)
        assert entry is not None and entry.filename == name


@pytest.mark.parametrize(
    "name",
    [
        "other.conf",
        "outpost-12-c.conf",
        "outpost--a.conf",
        "outpost-1-a.conf.tmp",
        "outpost-1-a+x.conf",
        "../outpost-1-a.conf",
    ],
)
def test_foreign_or_malformed_names_are_not_ours(name: str) -> None:
    assert LoaderEntry.parse(name) is None


def test_counting_states() -> None:
    fresh = LoaderEntry.parse("outpost-2-b+3.conf")
    failed = LoaderEntry.parse("outpost-2-b+0-3.conf")
    blessed = LoaderEntry.parse("outpost-2-b.conf")
    assert fresh and fresh.in_trial and not fresh.bad
    assert failed and failed.bad and not failed.in_trial
    assert blessed and not blessed.bad and not blessed.in_trial


def test_boot_order_prefers_newest_and_puts_bad_entries_last() -> None:
    a = LoaderEntry(100, "a")
    b_trial = LoaderEntry(200, "b", 2, 1)
    b_bad = LoaderEntry(200, "b", 0, 3)
    assert slots.boot_order([a, b_trial]) == [b_trial, a]
    assert slots.boot_order([b_bad, a]) == [a, b_bad]


def test_update_goes_to_the_inactive_slot_with_three_tries() -> None:
    plan = slots.plan_update(["outpost-100-a.conf", "outpost-50-b.conf", "loader.conf"], "a", 200)
    assert plan.target_slot == "b"
    assert plan.new_entry.filename == "outpost-200-b+3.conf"
    assert plan.remove == ("outpost-50-b.conf",)


def test_update_from_slot_b_writes_slot_a() -> None:
    plan = slots.plan_update(["outpost-100-a.conf", "outpost-200-b.conf"], "b", 300)
    assert plan.target_slot == "a" and plan.remove == ("outpost-100-a.conf",)


def test_downgrade_or_same_version_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not newer"):
        slots.plan_update(["outpost-200-a.conf"], "a", 200)
    with pytest.raises(InvalidInput, match="not newer"):
        slots.plan_update(["outpost-200-a.conf"], "a", 100)


@pytest.mark.parametrize("bad", [0, -1, slots.MAX_VERSION + 1])
def test_out_of_range_version_is_refused(bad: int) -> None:
    with pytest.raises(InvalidInput):
        slots.plan_update([], "a", bad)


def test_unknown_slot_is_refused() -> None:
    with pytest.raises(InvalidInput, match="slot must be"):
        slots.plan_update([], "c", 5)


def test_failed_update_is_reported_as_a_fallback() -> None:
    report = slots.assess(["outpost-100-a.conf", "outpost-200-b+0-3.conf"], "a")
    assert report.default == LoaderEntry(100, "a")
    assert report.fell_back_from == LoaderEntry(200, "b", 0, 3)
    ok = slots.assess(["outpost-100-a.conf", "outpost-200-b.conf"], "b")
    assert ok.default == LoaderEntry(200, "b") and ok.fell_back_from is None


def test_booted_slot_comes_from_the_kernel_command_line() -> None:
    assert slots.booted_slot("root=PARTUUID=x outpost.slot=b ro quiet") == "b"
    assert slots.booted_slot("root=/dev/sda2 ro") is None
    assert slots.booted_slot("outpost.slot=z") is None


def test_entry_text_names_the_slot_partition_and_kernel() -> None:
    text = slots.entry_text("b", 200)
    assert f"root=PARTUUID={slots.ROOT_B.partuuid}" in text
    assert "outpost.slot=b" in text and "linux /outpost/b/vmlinuz" in text
    assert "version 200" in text


def test_layout_is_stable() -> None:
    """PARTUUIDs are written into loader entries on devices in the field: never change them."""
    assert [p.label for p in slots.LAYOUT] == ["esp", "root-a", "root-b", "outpost-data"]
    assert slots.ROOT_A.partuuid != slots.ROOT_B.partuuid
    assert slots.ROOT_A.partuuid == slots.Partition(2, "root-a", slots.ROOT_X86_64_TYPE, 1).partuuid


def test_loader_conf_disables_the_command_line_editor() -> None:
    conf = slots.loader_conf()
    assert "editor no" in conf and "default outpost-*" in conf
