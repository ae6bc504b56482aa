from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servers import Server, redis_server, valkey_server

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


@pytest.fixture
def valkey() -> Iterator[Server]:
    with valkey_server() as srv:
        yield srv


@pytest.fixture
def redis7() -> Iterator[Server]:
    with redis_server() as srv:
        yield srv


@pytest.fixture(params=["valkey", "redis"])
def any_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    make = valkey_server if request.param == "valkey" else redis_server
    with make() as srv:
        yield srv
