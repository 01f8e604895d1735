from __future__ import annotations

import pytest

from bus import Broker
from hub.settings import DEFAULT_DATABASE_URL, HubSettings


def test_defaults_give_each_process_its_own_client_id() -> None:
    one, two = HubSettings(), HubSettings()
    assert one.client_id.startswith("anmin-hub-") and one.client_id != two.client_id
    assert one.database_url == DEFAULT_DATABASE_URL
    assert one.shared_subscription is True
    assert HubSettings(client_id="hub-1").client_id == "hub-1"


def test_from_env_reads_anmin_variables() -> None:
    settings = HubSettings.from_env(
        {
            "ANMIN_HUB_DB": "postgresql+psycopg://hub@db/anmin",
            "ANMIN_BROKER_HOST": "broker.local",
            "ANMIN_BROKER_PORT": "8883",
            "ANMIN_HUB_CLIENT_ID": "hub-a",
            "ANMIN_HUB_SHARED": "no",
            "ANMIN_HUB_PORT": "9000",
        }
    )
    assert settings.database_url == "postgresql+psycopg://hub@db/anmin"
    assert settings.broker == Broker("broker.local", 8883)
    assert settings.client_id == "hub-a"
    assert settings.shared_subscription is False
    assert settings.http_port == 9000


def test_from_env_with_nothing_set_is_the_defaults() -> None:
    settings = HubSettings.from_env({})
    assert settings.broker == Broker()
    assert settings.database_url == DEFAULT_DATABASE_URL


@pytest.mark.parametrize(
    "env",
    [{"ANMIN_BROKER_PORT": "mqtt"}, {"ANMIN_HUB_PORT": "70000"}, {"ANMIN_HUB_SHARED": "maybe"}],
)
def test_from_env_rejects_bad_values_by_name(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=next(iter(env))):
        HubSettings.from_env(env)
