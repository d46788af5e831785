"""Code that may be run by name: ``python.call`` jobs, python worker targets and
pipeline stage runners resolve a dotted path only through this registry.

A function is runnable when the deployment says so, in one of two ways:

* ``@runnable`` on its definition, in a module listed in ``RUNNABLE_MODULES`` (imported
  by every process at start, so the web server and every cluster node agree);
* its exact path in ``RUNNABLE_PATHS``, for code that cannot carry the decorator.

Either way the object must be the one *defined* at that path (``__module__`` and
``__qualname__``): a name merely imported into a module (``os.system`` seen as
``somemodule.system``) is a different path and is refused. Nothing is imported for a
path nobody declared. Defining or changing what runs needs the ``RUN_CODE_PERMISSION``
(superusers have it; staff do not, unless granted).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import import_module
from typing import Any, TypeVar

RUN_CODE_PERMISSION = "orchestration.run_code"
RUN_CODE_DENIED = "Defining code that runs by name needs the 'orchestration.run_code' permission."

F = TypeVar("F", bound=Callable[..., Any])

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_REGISTRY: dict[str, Callable[..., Any]] = {}


class NotRunnable(LookupError):
    """The path names nothing the deployment declared runnable."""


def defined_path(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"


def runnable(func: F) -> F:
    """Declare ``func`` runnable by its defining path (``module.qualname``)."""
    path = defined_path(func)
    if not _DOTTED.match(path):
        # A nested function or lambda has no path anyone could name.
        raise TypeError(f"{path!r} is not a module-level function and cannot be declared runnable")
    _REGISTRY[path] = func
    return func


def load_modules(modules: list[str]) -> None:
    """Import the modules whose ``@runnable`` functions a process must know."""
    from django.core.exceptions import ImproperlyConfigured

    for module in modules:
        try:
            import_module(module)
        except ImportError as exc:
            raise ImproperlyConfigured(f"RUNNABLE_MODULES names {module!r}, which cannot be imported: {exc}") from exc


def resolve(path: Any) -> Callable[..., Any]:
    """The callable declared at exactly ``path``; ``NotRunnable`` otherwise."""
    from django.conf import settings

    if not isinstance(path, str) or not _DOTTED.match(path):
        raise NotRunnable(f"{path!r} is not a dotted path like package.module.function")
    func = _REGISTRY.get(path)
    if func is None and path in settings.RUNNABLE_PATHS:
        module_name, _, attr = path.rpartition(".")
        try:
            func = getattr(import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise NotRunnable(f"{path!r} is listed in RUNNABLE_PATHS but cannot be imported: {exc}") from None
        if defined_path(func) != path:
            raise NotRunnable(f"{path!r} is only imported there; it is defined as {defined_path(func)!r}")
    if func is None:
        raise NotRunnable(
            f"{path!r} is not declared runnable (decorate it with @orchestration.core.runnables.runnable "
            "in a module of RUNNABLE_MODULES, or list it in RUNNABLE_PATHS)"
        )
    if not callable(func):
        raise NotRunnable(f"{path!r} is not callable")
    return func


def problem(path: Any) -> str:
    """Why ``path`` cannot run, or "" when it can: for validation at creation."""
    try:
        resolve(path)
    except NotRunnable as exc:
        return str(exc)
    return ""


def may_define(user: Any) -> bool:
    return bool(user is not None and user.has_perm(RUN_CODE_PERMISSION))


def registered() -> list[str]:
    return sorted(_REGISTRY)
