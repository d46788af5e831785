import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
application = get_asgi_application()

# This web process joins the process registry (GET /api/v1/processes/).
from orchestration.core.choices import ProcessRole  # noqa: E402 - needs the apps loaded above
from orchestration.core.process_registry import start_heartbeat  # noqa: E402

start_heartbeat(ProcessRole.WEB)
