"""Credentials: one random secret per principal, kept across runs, never shared."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from anmin.security import HUB_USER, Credentials, Inventory, Principal, Role, issue
from anmin.security.credentials import SecurityError, device_user, gateway_user, parse_devices


def test_usernames_cannot_collide_across_roles_sites_and_gateways() -> None:
    names = {
        HUB_USER,
        gateway_user("s1", "gw-1"),
        gateway_user("s1", "gw-1.a"),
        gateway_user("s1.gw-1", "a"),
        device_user("s1", "gw-1", "a"),
        device_user("s1", "gw-1.a", "b"),
        device_user("s2", "gw-1", "a"),
    }
    assert len(names) == 7


def test_an_inventory_lists_the_hub_each_gateway_and_each_device_once() -> None:
    inventory = Inventory("s1", {"gw-2": ("b", "a", "a"), "gw-1": ()})
    principals = inventory.principals()
    assert [p.username for p in principals] == [
        HUB_USER,
        "gw-1@s1",
        "gw-2@s1",
        "a@gw-2@s1",
        "b@gw-2@s1",
    ]
    assert Principal(Role.DEVICE, "s1", "gw-2", "a") in principals
    assert HUB_USER not in {p.username for p in Inventory("s1", {}, hub=False).principals()}


def test_bad_ids_are_refused() -> None:
    with pytest.raises(SecurityError):
        Inventory("s1", {"gw 1": ()})
    with pytest.raises(SecurityError, match=r"devices\.txt:2"):
        parse_devices("gw-1 a b\ngw-2 bad:id\n", "devices.txt")


def test_the_device_list_format() -> None:
    text = "# gateway then devices\ngw-1 gas-1, gas-2\n\ngw-2: pir-1  # upstairs\ngw-1 spk-1\n"
    assert parse_devices(text) == {"gw-1": ("gas-1", "gas-2", "spk-1"), "gw-2": ("pir-1",)}


def test_secrets_are_random_and_kept_unless_rotated_and_dropped_when_unlisted() -> None:
    first = issue(Inventory("s1", {"gw-1": ("a", "b")}).principals())
    assert len(set(first.passwords.values())) == len(first.passwords) == 4
    assert all(len(secret) >= 40 for secret in first.passwords.values())
    again = issue(Inventory("s1", {"gw-1": ("a", "c")}).principals(), first, rotate=["gw-1@s1"])
    assert again["a@gw-1@s1"] == first["a@gw-1@s1"]
    assert again["gw-1@s1"] != first["gw-1@s1"]
    assert "b@gw-1@s1" not in again, "a removed device can no longer log in"
    assert "c@gw-1@s1" in again


def test_the_credentials_file_is_private_and_round_trips(tmp_path: Path) -> None:
    issued = issue(Inventory("s1", {"gw-1": ("a",)}).principals())
    path = tmp_path / "credentials.json"
    issued.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Credentials.load(path) == issued
    assert issued["gw-1@s1"] not in repr(issued), "secrets stay out of reprs and logs"
    path.write_text("{not json")
    with pytest.raises(SecurityError):
        Credentials.load(path)
