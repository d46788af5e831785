"""Orchestrator settings. Everything that differs between deployments comes from the
environment (see README "Configuration"); nothing secret is committed."""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from orchestrator_site.env import env_bool, env_float, env_int, env_list, env_str
from orchestrator_site.private import private_dir, secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("ORCHESTRATOR_VAR_DIR", str(BASE_DIR / "var")))

# A key per install: from the environment, else generated once into var/secret_key (0600)
# and read by every later start and every process. django-q2 signs its broker packages
# with it, so a public constant would let anyone who can write to the broker run code.
SECRET_KEY = env_str("SECRET_KEY", "").strip() or secret_key(VAR_DIR)
DEBUG = env_bool("DEBUG", False)

# --- HTTPS and headers (Django's names; see README "Production settings") ------------
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Load balancers probe liveness over plain HTTP: no redirect for those two.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^api/v1/healthz$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
# Behind a proxy that terminates TLS: "HTTP_X_FORWARDED_PROTO,https" (header, value).
_proxy_ssl = env_list("SECURE_PROXY_SSL_HEADER", [])
if _proxy_ssl and len(_proxy_ssl) != 2:
    raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER must be 'HEADER,value', e.g. HTTP_X_FORWARDED_PROTO,https")
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl) if _proxy_ssl else None
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "django_tasks",
    "axes",
    "orchestration",
    "orchestration.routing",
    "health",
    "pipeline",
    # An example of Django's Tasks API on the orchestrator (README "Use it from your
    # Django code"); its @task functions run under make run like any job.
    "examples.tasks_demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy: default-src 'self' (orchestration/core/csp.py).
    "orchestration.core.csp.ContentSecurityPolicyMiddleware",
    # Before anything reads the URL into a query: PostgreSQL refuses NUL characters.
    "orchestration.console.middleware.RefuseNulMiddleware",
    "orchestration.console.middleware.BodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Inside CommonMiddleware, so the Content-Length it sets is the masked page's.
    "orchestration.console.middleware.RedactHtmlMiddleware",
    # The admin's bulk actions send no model signal: its writes drop the console's copies.
    "orchestration.console.middleware.AdminWritesDropCopiesMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: answers a locked-out sign-in (console and admin) with its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "orchestrator_site.urls"
WSGI_APPLICATION = "orchestrator_site.wsgi.application"
ASGI_APPLICATION = "orchestrator_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Outbound guard (orchestration/core/outbound.py) -------------------------------------
# Every outbound call (health checks, worker HTTP targets, http.request jobs, routed
# calls, alert webhooks) is refused to an address in a blocked network (link-local: cloud
# metadata) and, when the allowed list is set, to one outside it. Comma-separated CIDRs.
OUTBOUND_BLOCKED_NETWORKS = env_list("OUTBOUND_BLOCKED_NETWORKS", ["169.254.0.0/16", "fe80::/10"])
OUTBOUND_ALLOWED_NETWORKS = env_list("OUTBOUND_ALLOWED_NETWORKS", [])
for _name, _networks in (
    ("OUTBOUND_BLOCKED_NETWORKS", OUTBOUND_BLOCKED_NETWORKS),
    ("OUTBOUND_ALLOWED_NETWORKS", OUTBOUND_ALLOWED_NETWORKS),
):
    for _network in _networks:
        try:
            ipaddress.ip_network(_network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{_name}: {_network!r} is not a network (e.g. 169.254.0.0/16)") from None

# --- Database ---------------------------------------------------------------
# Default: one SQLite file in WAL mode. IMMEDIATE transactions take the write lock at
# BEGIN, so read-then-write transactions from several processes queue up instead of
# failing with "database is locked". The busy timeout is set once, through "timeout".
DEFAULT_SQLITE_PATH = VAR_DIR / "orchestrator.sqlite3"
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DEFAULT_SQLITE_PATH}")
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
except Exception as exc:  # dj_database_url raises several types for bad URLs
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # var/ holds the database (with token keys and sessions): created 0700, ours alone.
    _sqlite_dir = Path(_db["NAME"]).parent
    if _sqlite_dir == VAR_DIR:
        private_dir(VAR_DIR)
    else:
        _sqlite_dir.mkdir(parents=True, exist_ok=True)
    _db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # Keep each thread's connection between requests: opening one per request (and
    # running the PRAGMAs above) was a large part of a short API request under load.
    _db["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60, minimum=0)
    # A file (not :memory:) so end-to-end tests can share it with real subprocesses.
    _db["TEST"] = {"NAME": env_str("TEST_DATABASE_PATH", str(VAR_DIR / "test-orchestrator.sqlite3"))}
elif _db["ENGINE"].startswith("django.db.backends.postgresql"):
    # Keep connections between requests and tasks: a new PostgreSQL connection costs
    # more than a whole no-op job. Health checks drop one the server has closed.
    _db["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60, minimum=0)
    _db["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Sign-in: failed-login throttling and lockout (django-axes) ----------------------
# Axes first: it refuses a locked-out user or address before any password is checked
# (it needs the request, which both login forms pass). API tokens and sessions do not
# go through authenticate(), so they are not affected.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# After AXES_FAILURE_LIMIT failures a username is locked (from any address), and an
# address is locked (for any username), for AXES_COOLOFF_MINUTES; each lockout is in
# the ledger (orchestration/core/signin.py). The client address is REMOTE_ADDR: behind a
# proxy, have the proxy set it (X-Forwarded-For is not trusted).
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []

LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/"

# --- Orchestrator -----------------------------------------------------------
ORCHESTRATOR_ENABLED = env_bool("ORCHESTRATOR_ENABLED", True)
ORCHESTRATOR_INTERVAL_SECONDS = env_float("ORCHESTRATOR_INTERVAL_SECONDS", 2.0, minimum=0.1)
ORCHESTRATOR_DRY_RUN = env_bool("ORCHESTRATOR_DRY_RUN", False)
# Guardrails: a risky action waits this long for a person's approval, then expires; an
# action's triggering condition is checked again this long after it ran (effective or not).
ORCHESTRATOR_APPROVAL_TIMEOUT_MINUTES = env_int("ORCHESTRATOR_APPROVAL_TIMEOUT_MINUTES", 60, minimum=1)
ORCHESTRATOR_VERIFY_AFTER_SECONDS = env_int("ORCHESTRATOR_VERIFY_AFTER_SECONDS", 60, minimum=0)
# /orchestrator/snapshot shares one snapshot per process for this long (0: always fresh).
SNAPSHOT_MAX_AGE_SECONDS = env_float("SNAPSHOT_MAX_AGE_SECONDS", 1.0, minimum=0.0)
# /health/status (unfiltered) shares one rendered body per process for this long (0: always
# fresh). At 20,000 services a body costs ~0.24 s of CPU: rebuilt every second, it took a
# quarter of a core per web process; services are checked every 20-60 s.
HEALTH_STATUS_MAX_AGE_SECONDS = env_float("HEALTH_STATUS_MAX_AGE_SECONDS", 5.0, minimum=0.0)
# Web processes lower their CPU priority by this much (os.nice) when they start, so on a
# machine they share with the cluster and the loop a busy console slows its own pages,
# not the checks and cycles behind them (0: left as started).
WEB_NICE = env_int("WEB_NICE", 5, minimum=0, maximum=19)
# The console's show-only panels (lists, counts) are read and rendered once per process
# for this long and shared by the requests that see them alike (0: always fresh).
CONSOLE_COPY_MAX_AGE_SECONDS = env_float("CONSOLE_COPY_MAX_AGE_SECONDS", 2.0, minimum=0.0)
# How long a processing job may go without a heartbeat before the loop reclaims it.
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 30, minimum=2)
# Lanes not listed in the Lane table get this concurrency limit (0 = unlimited).
JOB_DEFAULT_LANE_LIMIT = env_int("JOB_DEFAULT_LANE_LIMIT", 0, minimum=0)
# An idle node on SQLite looks for new jobs at most this far apart (its interval
# starts at 2 ms after work and doubles while the queue stays empty). PostgreSQL
# nodes are woken by NOTIFY instead.
JOB_POLL_SECONDS = env_float("JOB_POLL_SECONDS", 0.02, minimum=0.001)
# What may run by dotted path (python.call jobs, python worker targets, stage runners):
# @runnable functions of these modules (imported by every process at start) and the exact
# paths of RUNNABLE_PATHS. Nothing else is ever imported by name (orchestration/core/runnables.py).
RUNNABLE_MODULES = [
    "orchestration.fleet.builtins",
    "orchestration.fleet.demo_targets",
    "orchestration.core.jobs.kinds",
    "health.tasks",
    "pipeline.runners",
    *env_list("RUNNABLE_MODULES", []),
]
RUNNABLE_PATHS = env_list("RUNNABLE_PATHS", [])
RUNS_DIR = Path(env_str("RUNS_DIR", str(BASE_DIR / "runs")))
ADMIN_TOKEN = env_str("ORCHESTRATOR_ADMIN_TOKEN", "")
LEDGER_RETENTION_DAYS = env_int("LEDGER_RETENTION_DAYS", 30, minimum=1)
# Finished jobs older than this are deleted by the job-retention worker; their counts
# stay in JobRollup.
JOB_RETENTION_DAYS = env_int("JOB_RETENTION_DAYS", 30, minimum=1)
# The snapshot, dashboard and /metrics count finished jobs of this many recent hours
# (an index range), never every job ever run.
JOB_FINISHED_WINDOW_HOURS = env_int("JOB_FINISHED_WINDOW_HOURS", 24, minimum=1)
# Every web process, cluster node and loop runner updates its row in the process
# registry this often; it counts as alive for three intervals.
PROCESS_HEARTBEAT_SECONDS = env_float("PROCESS_HEARTBEAT_SECONDS", 5.0, minimum=0.2)

# --- django-q2 ----------------------------------------------------------------
# The Job table is the only queue, on every profile: django-q2's broker is
# JobBroker, whose dequeue claims Job rows (orchestration/core/jobs/broker.py). django-q2
# runs them (cluster, worker processes, time limits, schedules). Retries are the Job
# model's business, so django-q2 itself never re-runs a task (max_attempts=1).
if "Q_BROKER" in os.environ:
    raise ImproperlyConfigured(
        "Q_BROKER is no longer read: jobs are queued in the database on every profile, so there is "
        "no broker to set. Unset Q_BROKER; to share the cache (write throttle, snapshot) between web "
        "processes through Redis, set CACHE_URL=redis://host:6379/0 instead."
    )
# The cluster kills a task running past Q_TIMEOUT. Jobs keep their own, shorter limits
# (a pipeline stage's timeout, up to 180 minutes in the seeded definition; a worker's
# timeout and its cap, checked against this when a worker is saved), so the cluster's
# limit only ends what hangs past all of them: 4 h by default.
Q_TIMEOUT = env_int("Q_TIMEOUT", 14400, minimum=1)
_Q_WORKERS = env_int("Q_WORKERS", 2, minimum=1)
Q_CLUSTER: dict = {
    "name": env_str("Q_CLUSTER_NAME", "orchestrator"),
    "workers": _Q_WORKERS,
    "timeout": Q_TIMEOUT,
    "retry": Q_TIMEOUT + 60,
    "max_attempts": 1,
    "save_limit": env_int("Q_SAVE_LIMIT", 250, minimum=-1),
    # A node claims at most "bulk" jobs in one statement and holds at most
    # "queue_limit" claimed jobs that no worker process has taken yet: enough to keep
    # its workers busy between claims, few enough that other nodes get their share.
    "bulk": env_int("Q_BULK", 4 * _Q_WORKERS, minimum=1),
    "queue_limit": env_int("Q_QUEUE_LIMIT", 4 * _Q_WORKERS, minimum=1),
    "catch_up": False,
    "ack_failures": True,
    "label": "Task queue",
    "sync": env_bool("Q_SYNC", False),
    "broker_class": "orchestration.core.jobs.broker.JobBroker",
}
# Benchmarks only: bare django-q2 on one of its own brokers ("orm" or a redis:// URL),
# the baseline the Job-table queue is measured against (bench/throughput.py).
BASELINE_BROKER = env_str("DJANGO_Q_BASELINE_BROKER", "")
if BASELINE_BROKER:
    del Q_CLUSTER["broker_class"]
    Q_CLUSTER["poll"] = 0.1
    Q_CLUSTER["queue_limit"] = 50
    if BASELINE_BROKER == "orm":
        Q_CLUSTER["orm"] = "default"
    else:
        Q_CLUSTER["redis"] = BASELINE_BROKER

# Redis, when CACHE_URL names it, is the cache every web process shares: the write
# throttle counts are then per deployment, not per process. It is optional at run time:
# while it is unreachable each process falls back to its own memory (no 500s), and short
# socket timeouts keep a Redis that does not answer from holding requests up.
CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {
        "default": {
            "BACKEND": "orchestrator_site.cache.FallbackRedisCache",
            "LOCATION": CACHE_URL,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
elif CACHE_URL:
    raise ImproperlyConfigured(f"CACHE_URL must be a redis:// URL (got {CACHE_URL!r})")
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Django's Tasks API -----------------------------------------------------------
# A @task's enqueue() becomes a job of kind "django.task" (orchestration/core/jobs/django_tasks.py);
# the queues a task may name are lanes.
TASKS = {
    "default": {
        "BACKEND": "orchestration.core.jobs.django_tasks.OrchestratorBackend",
        "QUEUES": env_list("TASK_QUEUES", ["default", "reports", "emails"]),
        "OPTIONS": {"max_attempts": env_int("TASK_MAX_ATTEMPTS", 3, minimum=1)},
    }
}

# --- REST API ---------------------------------------------------------------------
# Poison input (API.md "Errors and limits"): a larger body → 413 before anything reads
# it; JSON nested deeper → 400 naming the field (at most 100, so that whatever was
# accepted is shown whole: reads cut deeper values at 100 levels).
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 2621440, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
API_MAX_JSON_DEPTH = env_int("API_MAX_JSON_DEPTH", 64, minimum=2, maximum=100)
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes DRF answer 401 (not 403) to
    # requests without credentials.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "orchestrator_site.api.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["orchestrator_site.api.permissions.ReadAuthenticatedWriteStaff"],
    # DRF's parsers, refusing NUL characters (PostgreSQL cannot store them).
    # Every answer is masked on its way out (orchestration/core/redaction.py).
    "DEFAULT_RENDERER_CLASSES": [
        "orchestrator_site.api.renderers.RedactingJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "orchestrator_site.api.parsers.JSONParser",
        "orchestrator_site.api.parsers.FormParser",
        "orchestrator_site.api.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "orchestrator_site.api.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["orchestrator_site.api.filters.StrictFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "orchestrator_site.api.schema.OrchestratorAutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["orchestrator_site.api.throttles.WriteRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"writes": env_str("API_WRITE_RATE", "600/min")},
    "EXCEPTION_HANDLER": "orchestrator_site.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Orchestrator API",
    "DESCRIPTION": "Control loop, job queue, service health, pipelines, workers and routing.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # One schema name per choice set: fields of the same name (status, priority) with
    # different choices, and one choice set under several field names, got generated
    # names (Status8afEnum) that change whenever the choices do.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "orchestration.core.choices.JobStatus",
        "PriorityEnum": "orchestration.core.choices.Priority",
        "NotifySeverityEnum": "orchestration.core.choices.NotifySeverity",
        "AnomalySeverityEnum": "orchestration.core.choices.AnomalySeverity",
        "ActionStatusEnum": "orchestration.core.choices.ActionStatus",
        "RunStatusEnum": "orchestration.fleet.choices.RunStatus",
        "PipelineStatusEnum": "pipeline.choices.PipelineStatus",
        "SuggestionStatusEnum": "orchestration.routing.models.SuggestionStatus",
        "SuggestionPriorityEnum": "orchestration.routing.models.SuggestionPriority",
    },
}

# --- Logging ------------------------------------------------------------------------
LOG_FORMAT = env_str("LOG_FORMAT", "text")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {
            "()": "orchestration.core.logformat.TextFormatter",
            "format": "%(asctime)s %(levelname)s [%(name)s] %(message)s",
        },
        "json": {"()": "orchestration.core.logformat.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json" if LOG_FORMAT == "json" else "text"}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # axes.apps announces itself at every start; lockouts still log (axes.handlers) and go to the ledger.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes.apps": {"level": "WARNING"}},
}

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# The SMTP server the e-mail notification channel made from FLEET_ALERT_EMAILS sends through.
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)

# --- Worker fleet ---
# HTTP targets of the fleet write their URL as "{base_url}/…"; this fills it in.
FLEET_BASE_URL = env_str("FLEET_BASE_URL", "http://127.0.0.1:8100").rstrip("/")
# The demo fleet (seed 004's 14 workers) calls this server's own /demo/workers/ endpoints.
FLEET_DEMO_BASE_URL = env_str("FLEET_DEMO_BASE_URL", f"http://127.0.0.1:{env_int('PORT', 8000)}").rstrip("/")
# Lane of the job queue that worker runs go through.
FLEET_LANE = env_str("FLEET_LANE", "workers")
# A running worker writes a heartbeat this often; a run silent for FLEET_CRASH_AFTER_SECONDS crashed.
FLEET_HEARTBEAT_SECONDS = env_float("FLEET_HEARTBEAT_SECONDS", 10.0, minimum=0.2)
FLEET_CRASH_AFTER_SECONDS = env_float("FLEET_CRASH_AFTER_SECONDS", 45.0, minimum=1.0)
# SIGTERM lets a running worker finish for this long, then marks it interrupted and queues a re-run.
FLEET_SHUTDOWN_GRACE_SECONDS = env_float("FLEET_SHUTDOWN_GRACE_SECONDS", 30.0, minimum=0.0)
# How often the loop runner sweeps the fleet for anomalies (crashes, failure rates, staleness).
FLEET_SWEEP_SECONDS = env_float("FLEET_SWEEP_SECONDS", 15.0, minimum=0.5)
# Recovery: wait between attempts, give up after N.
FLEET_RECOVERY_COOLDOWN_SECONDS = env_int("FLEET_RECOVERY_COOLDOWN_SECONDS", 300, minimum=0)
FLEET_MAX_RECOVERY_ATTEMPTS = env_int("FLEET_MAX_RECOVERY_ATTEMPTS", 3, minimum=1)
# Read once, at migrate (0021): the first tier of the seeded "unrecovered" escalation
# policy; from then on the policy (admin, API) says when an unrecovered anomaly escalates.
FLEET_ESCALATE_AFTER_SECONDS = env_int("FLEET_ESCALATE_AFTER_SECONDS", 600, minimum=0)
FLEET_RUN_RETENTION_DAYS = env_int("FLEET_RUN_RETENTION_DAYS", 14, minimum=1)
# The built-in worker that calls into the health app (a dotted path, imported when it runs).
FLEET_CHECK_RETENTION_PATH = env_str("FLEET_CHECK_RETENTION_PATH", "health.tasks.prune_checks")
# Alerts: channels per severity (comma-separated names of registered channels).
FLEET_ALERT_ROUTES = {
    # "channels": the notification channels kept as data, each with its own severity/tag route.
    # ("webhook" and "email" in an older route mean "channels": they are channels now.)
    "critical": env_list("FLEET_ALERT_ROUTE_CRITICAL", ["ledger", "channels"]),
    "high": env_list("FLEET_ALERT_ROUTE_HIGH", ["ledger", "channels"]),
    "medium": env_list("FLEET_ALERT_ROUTE_MEDIUM", ["ledger", "channels"]),
    "escalation": env_list("FLEET_ALERT_ROUTE_ESCALATION", ["ledger", "channels"]),
    # A gate waiting for people: each assignee gets their own signed decision links,
    # through the channels that carry notices.
    "gate": env_list("FLEET_ALERT_ROUTE_GATE", ["ledger", "channels"]),
}
# After migrate these become notification channels (a JSON webhook; e-mail through
# Django's EMAIL_HOST/EMAIL_PORT/EMAIL_HOST_USER/EMAIL_HOST_PASSWORD/EMAIL_USE_TLS).
FLEET_ALERT_WEBHOOK_URL = env_str("FLEET_ALERT_WEBHOOK_URL", "")
FLEET_ALERT_EMAILS = env_list("FLEET_ALERT_EMAILS", [])
FLEET_ALERT_EMAIL_FROM = env_str("FLEET_ALERT_EMAIL_FROM", "orchestrator@localhost")

# --- Pipelines ---
# How long the placeholder stage runner takes after writing its files (seconds).
PIPELINE_PLACEHOLDER_SECONDS = env_float("PIPELINE_PLACEHOLDER_SECONDS", 0.5, minimum=0.0)
# Longest an SSE event stream stays open, and how often it polls for new events.
PIPELINE_SSE_MAX_SECONDS = env_float("PIPELINE_SSE_MAX_SECONDS", 300.0, minimum=1.0)
PIPELINE_SSE_POLL_SECONDS = env_float("PIPELINE_SSE_POLL_SECONDS", 0.25, minimum=0.05)
# Executables a `command` stage runner may start (argv[0], exactly as written); none by default.
PIPELINE_COMMANDS = env_list("PIPELINE_COMMANDS", [])
# What a command or http stage runner keeps of each output (stdout, stderr, a response body).
PIPELINE_RUNNER_OUTPUT_BYTES = env_int("PIPELINE_RUNNER_OUTPUT_BYTES", 1024 * 1024, minimum=1024)
# Files a `command` stage runner's process writes into its folder become artifacts, up to
# this many files and bytes per run, so a runaway command cannot flood the artifact table.
PIPELINE_COMMAND_ARTIFACT_FILES = env_int("PIPELINE_COMMAND_ARTIFACT_FILES", 200, minimum=0)
PIPELINE_COMMAND_ARTIFACT_BYTES = env_int("PIPELINE_COMMAND_ARTIFACT_BYTES", 512 * 1024 * 1024, minimum=0)
# Longest wait an `http` stage runner's target may ask for with Retry-After (429, 503);
# a longer one is cut to this.
PIPELINE_HTTP_RETRY_AFTER_MAX_SECONDS = env_int("PIPELINE_HTTP_RETRY_AFTER_MAX_SECONDS", 300, minimum=0)
# Signed one-click gate decision links: how long they stay valid, and the address they point at.
PIPELINE_LINK_MAX_AGE_SECONDS = env_int("PIPELINE_LINK_MAX_AGE_SECONDS", 24 * 3600, minimum=60)
PIPELINE_LINK_BASE_URL = env_str("PIPELINE_LINK_BASE_URL", f"http://127.0.0.1:{env_int('PORT', 8000)}").rstrip("/")

# --- Service health ---
# Concurrent checks: at most this many requests in flight per sweep.
HEALTH_MAX_WORKERS = env_int("HEALTH_MAX_WORKERS", 64, minimum=1, maximum=512)
# Check history kept per service (newest) and in days, whichever is smaller.
HEALTH_CHECK_RETENTION_DAYS = env_int("HEALTH_CHECK_RETENTION_DAYS", 7, minimum=1)
HEALTH_CHECK_MAX_PER_SERVICE = env_int("HEALTH_CHECK_MAX_PER_SERVICE", 2000, minimum=10)
# A service is alerted as down after this many consecutive failed checks.
HEALTH_ALERT_AFTER_FAILURES = env_int("HEALTH_ALERT_AFTER_FAILURES", 2, minimum=1)
# Largest health response body read (bytes); the rest is ignored.
HEALTH_MAX_BODY_BYTES = env_int("HEALTH_MAX_BODY_BYTES", 65536, minimum=1024)
# The demo registers services that point at this server's own /demo/health/ endpoints.
HEALTH_DEMO_BASE_URL = env_str("HEALTH_DEMO_BASE_URL", f"http://127.0.0.1:{env_int('PORT', 8000)}").rstrip("/")
