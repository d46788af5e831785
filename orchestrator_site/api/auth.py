from __future__ import annotations

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header


class BearerTokenAuthentication(TokenAuthentication):
    """``Authorization: Bearer <token>``; the ``Token <token>`` form works too."""

    keywords = ("bearer", "token")

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].decode(errors="replace").lower() not in self.keywords:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header: expected 'Bearer <token>'.")
        try:
            token = parts[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token: not valid text.") from None
        return self.authenticate_credentials(token)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="orchestrator"'
