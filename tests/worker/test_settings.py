"""Settings are typed: a bad or empty value names its variable instead of becoming a silent 0."""

from __future__ import annotations

import pytest

from worker.settings import Settings, SettingsError


def test_policy_overrides_are_parsed_as_their_types() -> None:
    settings = Settings.from_env(
        {"EINVOICE_LEASE_SECONDS": "12.5", "EINVOICE_SWEEP_BATCH": "40", "METRICS_PORT": "9100"}
    )
    assert settings.policy.lease_seconds == 12.5
    assert settings.policy.sweep_batch == 40
    assert settings.metrics_port == 9100


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("EINVOICE_LEASE_SECONDS", "", "valid number"),
        ("EINVOICE_LEASE_SECONDS", "ten", "valid number"),
        ("EINVOICE_RETRY_BASE_SECONDS", "-1", "greater than or equal to 0"),
        ("EINVOICE_SWEEP_BATCH", "0", "greater than or equal to 1"),
        ("EINVOICE_SWEEP_BATCH", "2.5", "valid integer"),
        ("METRICS_PORT", "99999", "less than or equal to 65535"),
    ],
)
def test_a_bad_value_is_refused_with_the_variable_named(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({name: value})
    assert f"{name}={value!r}" in str(refused.value)
    assert says in str(refused.value)
