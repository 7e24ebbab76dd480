"""MSeller settings: the interface contract's names, secrets from files, plans and their overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers import FACTORIES
from providers.mseller import PLANS, MSellerSettings
from providers.mseller.client import plan_rates


def test_defaults_reach_the_local_sandbox() -> None:
    settings = MSellerSettings.from_env({})
    assert settings.base == "http://127.0.0.1:8080/mseller/TesteCF"
    assert settings.plan == "gratis"
    assert (settings.requests_per_second, settings.requests_per_month) == (5, 1_000)
    assert settings.batch_size == 50
    assert FACTORIES["mseller"] == "providers.mseller:from_env"


def test_environment_secrets_and_overrides(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3creto\n")
    settings = MSellerSettings.from_env(
        {
            "MSELLER_URL": "https://ecf.api.mseller.app/",
            "MSELLER_ENV": "eCF",
            "MSELLER_EMAIL": "facturas@example.com",
            "MSELLER_PASSWORD_FILE": str(secret),
            "MSELLER_PASSWORD": "stale",
            "MSELLER_API_KEY": "key",
            "MSELLER_PLAN": "Negocio",
            "MSELLER_MONTHLY_REQUESTS": "12000",
            "CELERY_BROKER_URL": "redis://broker:6379/0",
        }
    )
    assert settings.base == "https://ecf.api.mseller.app/eCF"
    assert settings.password == "s3creto"
    assert (settings.requests_per_second, settings.requests_per_month) == (30, 12_000)
    assert settings.redis_url == "redis://broker:6379/0"
    assert "s3creto" not in repr(settings) and "key" not in repr(settings).replace("api_key", "")


@pytest.mark.parametrize(
    "environ",
    [{"MSELLER_ENV": "prod"}, {"MSELLER_PLAN": "corporativo"}, {"MSELLER_BATCH_SIZE": "101"}],
)
def test_bad_settings_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        MSellerSettings.from_env(environ)


@pytest.mark.parametrize("plan", list(PLANS))
def test_the_bucket_never_passes_the_plan_in_any_second(plan: str) -> None:
    rate = PLANS[plan].rate_per_second
    (bucket,) = plan_rates(rate)
    # A full bucket plus one second of refill: what a gateway holding one second's requests accepts.
    assert bucket.capacity + bucket.refill_per_second <= 2 * rate
    assert bucket.refill_per_second >= 0.98 * rate
    assert plan_rates(0) == []


def test_clients_from_the_environment_take_the_registered_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from providers.mseller import from_env
    from providers.mseller.budget import InProcessBudget, MonthlyBudget, use_budget_factory

    made: list[tuple[str, int]] = []

    def factory(provider: str, limit: int) -> MonthlyBudget:
        made.append((provider, limit))
        return InProcessBudget(limit, provider=provider)

    monkeypatch.setenv("MSELLER_PLAN", "basico")
    use_budget_factory(factory)
    try:
        client = from_env()
        client.close()
    finally:
        use_budget_factory(None)
    assert made == [("mseller", 4_000)]
    assert client.usage() == (0, 4_000)
