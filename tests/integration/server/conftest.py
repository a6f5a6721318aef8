"""`server`: one started `headwater serve` (ServerProcess and make_server: ../conftest.py)."""

from __future__ import annotations

import pytest

# test_lifecycle.py imports the console script's path from here.
from tests.integration.conftest import HEADWATER as HEADWATER
from tests.integration.conftest import ServerProcess


@pytest.fixture
def server(make_server) -> ServerProcess:
    return make_server()
