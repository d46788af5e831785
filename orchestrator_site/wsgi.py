import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
application = get_wsgi_application()

from orchestrator_site import web_process  # noqa: E402 - needs the apps loaded above

web_process.started()

# Everything loaded so far (Django, the apps, their modules) lives as long as the
# process: move it out of the garbage collector's sight, so a full collection during a
# request scans what requests allocate, not the whole framework (under load those
# collections were among the slowest requests).
gc.freeze()
