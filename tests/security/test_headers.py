"""Headers and deployment: a Content-Security-Policy of default-src 'self' that the
console and admin keep (no inline script, style or event handler anywhere they render),
HTTPS settings from the environment, and a clean `manage.py check --deploy`."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from orchestration.console.palette import STYLESHEET, stylesheet
from tests.security.routes import PUBLIC, all_routes, values_for
from tests.support.processes import ROOT

pytestmark = pytest.mark.django_db

ROUTES = all_routes()
PAGES = [r for r in ROUTES if not r.is_api and not r.is_admin and r.name not in PUBLIC and r.name != "console:static"]
PROJECT_APPS = {"orchestration", "routing", "health", "pipeline"}

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=", re.I)
HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)


def policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.strip() for part in header.split(";") if part.strip()}


def inline_content(html: str) -> list[str]:
    return [m.group(0) for pattern in (INLINE_SCRIPT, INLINE_STYLE, HANDLER) for m in pattern.finditer(html)]


def test_every_answer_carries_the_policy(staff_session, staff_client):
    for response in (
        Client().get("/login/"),
        Client().get("/admin/login/"),
        Client().get("/health"),
        staff_session.get("/"),
        staff_client.get("/api/v1/jobs/"),
    ):
        directives = policy(response)
        assert directives["default-src"] == "default-src 'self'"
        assert directives["frame-ancestors"] == "frame-ancestors 'none'"
        assert "script-src" not in directives  # scripts: 'self' only, from default-src
    assert "style-src" not in policy(staff_session.get("/"))


def test_the_browsable_api_may_inline_styles_but_never_scripts(staff_session):
    directives = policy(staff_session.get("/api/v1/", HTTP_ACCEPT="text/html"))
    assert directives["style-src"] == "style-src 'self' 'unsafe-inline'" and "script-src" not in directives


def test_the_api_docs_load_their_script_from_a_url(staff_session):
    page = staff_session.get("/api/docs/")
    assert page.status_code == 200 and not INLINE_SCRIPT.findall(page.content.decode())
    script = staff_session.get("/api/docs/?script")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


def test_console_pages_hold_no_inline_script_style_or_handler(world, staff_session):
    found = {}
    for route in PAGES:
        values = values_for(route, world)
        if route.name.startswith("console:worker"):
            values["name"] = world.worker.name
        path = route.path(values)
        for query in ({}, {"live": "1"}):
            response = staff_session.get(path, query)
            if response.status_code == 405:
                continue
            assert response.status_code == 200, path
            if bad := inline_content(response.content.decode()):
                found[f"{path}?{query}"] = bad
    for path in ("/login/", "/no-such-page/"):
        if bad := inline_content(Client().get(path).content.decode()):
            found[path] = bad
    assert not found, found


def test_admin_pages_hold_no_inline_script_style_or_handler(world, admin_client):
    found = {}
    paths = ["/admin/"]
    for model in admin.site._registry:
        opts = model._meta
        if opts.app_label not in PROJECT_APPS:
            continue
        paths.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        first = model.objects.order_by("pk").first()
        if first is not None:
            paths.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[first.pk]))
    for path in paths:
        response = admin_client.get(path)
        assert response.status_code == 200, path
        if bad := inline_content(response.content.decode()):
            found[path] = bad
    assert not found, found


def test_the_palette_stylesheet_is_current():
    # Generated from the palettes; write it again with `python -m orchestration.console.palette`.
    assert STYLESHEET.read_text() == stylesheet()


def test_https_settings_come_from_the_environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "SESSION_", "CSRF_"))}
    code = (
        "from django.conf import settings as s; print(s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT, "
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER)"
    )
    env["DJANGO_SETTINGS_MODULE"] = "orchestrator_site.settings"
    off = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert off.stdout.split() == ["0", "False", "False", "False", "None"]
    on_env = {
        **env,
        "SECURE_HSTS_SECONDS": "3600",
        "SECURE_SSL_REDIRECT": "true",
        "SESSION_COOKIE_SECURE": "true",
        "CSRF_COOKIE_SECURE": "yes",
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    }
    on = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=on_env, capture_output=True, text=True, check=True)
    assert on.stdout.split() == ["3600", "True", "True", "True", "('HTTP_X_FORWARDED_PROTO',", "'https')"]


def test_https_redirect_and_hsts_when_switched_on(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    client = Client()
    response = client.get("/login/")
    assert response.status_code == 301 and response["Location"].startswith("https://")
    assert client.get("/health").status_code == 200  # load balancers probe over plain HTTP
    secure = client.get("/login/", secure=True)
    assert secure.status_code == 200 and secure["Strict-Transport-Security"].startswith("max-age=3600")


def _deploy_check(extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "SESSION_", "CSRF_"))}
    env.pop("SECRET_KEY", None)  # the install's generated key
    env.update(DEBUG="false", **extra)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout + result.stderr


def test_check_deploy_reports_nothing_of_ours_with_the_production_settings():
    production = {
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
        "SECURE_HSTS_PRELOAD": "true",
        "SECURE_SSL_REDIRECT": "true",
        "SESSION_COOKIE_SECURE": "true",
        "CSRF_COOKIE_SECURE": "true",
    }
    ids = set(re.findall(r"\(([a-z_]+\.[A-Z]\d{3})\)", _deploy_check(production)))
    assert ids == set(), ids
    # Without them, Django's deploy checks do speak up: the check above is a real one.
    bare = set(re.findall(r"\(([a-z_]+\.[A-Z]\d{3})\)", _deploy_check({})))
    assert {"security.W004", "security.W008", "security.W012", "security.W016"} <= bare
