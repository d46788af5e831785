import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
application = get_asgi_application()

from orchestrator_site import web_process  # noqa: E402 - needs the apps loaded above

web_process.started()
