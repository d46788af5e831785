"""Call one API operation in-process and check the answer against ``/api/schema/``.

The regression tests of the fuzzing run (tests/e2e/test_api_fuzz.py) replay what it
found through the same schemathesis checks, without a server process: the Django WSGI
application is driven directly, inside the test's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import schemathesis
from django.core.signals import request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

# The checks the fuzzing run applies (see tests/e2e/test_api_fuzz.py for why these).
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


class Contract:
    def __init__(self, token: str):
        self.auth = {"Authorization": f"Bearer {token}"}
        with in_process():
            self.schema = schemathesis.openapi.from_wsgi(
                "/api/schema/?format=json", get_wsgi_application(), headers=self.auth
            )

    def call(self, method: str, path: str, **case: Any):
        """Send one request for the operation ``method path`` (the schema's path template),
        raise if the answer breaks the schema or is a server error, return the answer."""
        operation = self.schema[path][method.upper()]
        if "body" in case:
            case.setdefault("media_type", "application/json")
        built = operation.Case(**case)
        with in_process():
            response = built.call(headers=self.auth)
        built.validate_response(response, checks=CHECKS, headers=self.auth)
        return response


@contextmanager
def in_process() -> Iterator[None]:
    """Django closes "old" connections when a request starts; under test that would be
    the test's own connection (its transaction holds the fixtures). Django's test
    client detaches the same handler for the same reason."""
    request_started.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
