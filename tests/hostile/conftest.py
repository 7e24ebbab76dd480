"""Two hostile servers over real HTTP: the provider, and another origin its links point to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.server import ServerThread
from tests.hostile.server import Hostile, create_app


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[Hostile, str]]:
    """(state, provider base URL); the state's `other_origin` serves the same app on another port."""
    state = Hostile()
    with ServerThread(create_app(state)) as provider, ServerThread(create_app(state)) as other:
        state.other_origin = other.url
        yield state, provider.url
