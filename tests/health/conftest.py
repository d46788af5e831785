from __future__ import annotations

import pytest

from tests.health.servers import serving


@pytest.fixture
def server():
    with serving() as srv:
        yield srv


@pytest.fixture
def refused_url():
    from tests.support.processes import free_port

    return f"http://127.0.0.1:{free_port()}"
