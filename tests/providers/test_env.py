import pytest

from providers.env import Env


def test_readers_fall_back_to_defaults_and_strip_text() -> None:
    env = Env({"A": "  x  ", "N": " 2.5 ", "I": "7", "EMPTY": ""})
    assert env.text("A", "d") == "x"
    assert env.get("A") == "  x  "  # secrets keep their spaces
    assert env.text("EMPTY", "d") == "d"
    assert env.number("N", 1.0) == 2.5
    assert env.number("MISSING", 1.0) == 1.0
    assert env.integer("I", 1) == 7
    assert env.optional_integer("I") == 7
    assert env.optional_integer("MISSING") is None


def test_malformed_numbers_name_their_variable() -> None:
    env = Env({"N": "fast", "I": "1.5"})
    with pytest.raises(ValueError, match="N must be a number"):
        env.number("N", 1.0)
    with pytest.raises(ValueError, match="I must be an integer"):
        env.integer("I", 1)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"X_REDIS_URL": "redis://a/1", "CELERY_BROKER_URL": "redis://b/0"}, "redis://a/1"),
        ({"CELERY_BROKER_URL": "redis://b/0"}, "redis://b/0"),
        ({"CELERY_BROKER_URL": "amqp://b//"}, None),
        ({}, None),
    ],
)
def test_redis_url_falls_back_to_a_redis_broker(environ: dict[str, str], expected: str | None) -> None:
    assert Env(environ).redis_url("X_REDIS_URL") == expected
