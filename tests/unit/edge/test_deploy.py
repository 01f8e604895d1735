"""The gateway's systemd units: the template for several agents on one machine stays the
single agent's unit, but for its instance's config, secrets and name."""

from __future__ import annotations

import configparser
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def _unit(name: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys as systemd spells them
    parser.read_string((DEPLOY / name).read_text())
    return {section: dict(parser[section]) for section in parser.sections()}


def test_the_template_unit_is_the_agents_unit_per_instance() -> None:
    single, template = _unit("anmin-edge.service"), _unit("anmin-edge@.service")
    assert template.keys() == single.keys() == {"Unit", "Service", "Install"}
    expected = {
        section: {
            key: value.replace("edge.yaml", "edge-%i.yaml")
            .replace("edge.env", "edge-%i.env")
            .replace("Anmin edge agent (", "Anmin edge agent %i (")
            for key, value in options.items()
        }
        for section, options in single.items()
    }
    assert template == expected
    service = template["Service"]
    assert service["ExecStart"].endswith(
        "anmin edge run --config /etc/anmin/edge-%i.yaml --json-logs"
    )
    assert "check-config --config /etc/anmin/edge-%i.yaml" in service["ExecStartPre"]
