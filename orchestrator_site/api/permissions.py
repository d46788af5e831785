from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from orchestration.core import runnables


class ReadAuthenticatedWriteStaff(BasePermission):
    """Any signed-in user reads; writes need staff, or every permission the view
    lists in ``write_permissions`` (e.g. ``pipeline.approve_gate``)."""

    message = "Writes need a staff account or the specific permission."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if request.method in SAFE_METHODS:
            return True
        if user.is_staff:
            return True
        needed = getattr(view, "write_permissions", None)
        return bool(needed) and user.has_perms(needed)


class PublicEndpoint(BasePermission):
    def has_permission(self, request, view) -> bool:
        return True


def require_run_code(context: dict) -> None:
    """403 unless the caller may define code that runs by name (``orchestration.run_code``,
    apart from staff). Serializers take the user from ``request`` (the API) or ``user``
    (admin forms); with neither, nobody is asking, and nobody is allowed."""
    from rest_framework.exceptions import PermissionDenied

    request = context.get("request")
    user = context.get("user") or getattr(request, "user", None)
    if not runnables.may_define(user):
        raise PermissionDenied(runnables.RUN_CODE_DENIED)
