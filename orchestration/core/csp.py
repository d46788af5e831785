"""The Content-Security-Policy header (django-csp): ``default-src 'self'`` everywhere.

The console and the admin serve every script and style from static files. The pages
of the browsable API and the API docs come from DRF and drf-spectacular, whose
templates carry inline ``<style>`` (never inline script: the docs load their
initialisation script from a URL): under ``/api/`` styles may also be inline.
"""

from __future__ import annotations

from csp.constants import SELF, UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts

INLINE_STYLE_PREFIXES = ("/api/",)


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if request.path_info.startswith(INLINE_STYLE_PREFIXES) and parts.update is None:
            parts.update = {"style-src": [SELF, UNSAFE_INLINE]}
        return parts
