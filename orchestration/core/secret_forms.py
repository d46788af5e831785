"""Admin forms that never show a stored secret.

A change form shows its text and JSON fields as ``redact`` masks them (URL user-info,
secret query values, secret-named keys and headers); saving the form back unchanged
sends the masks, which become the stored values again (as the API does), so opening and
saving an object can neither wipe a credential nor put it on a page.

Every admin of the project's apps gets this form (``mask_admin_forms``, at start-up):
the pages are masked as a whole on their way out (RedactHtmlMiddleware), so a field
left out here would store the mask over the secret when its page is saved.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin import AdminSite
from django.db import models

from orchestration.core.redaction import MaskedSecretError, redact, restore

PROJECT_APPS = ("orchestration", "health", "pipeline")


class MaskedSecretsForm(forms.ModelForm):
    #: Fields shown masked and restored on save; None: every text and JSON field.
    masked_fields: tuple[str, ...] | None = None

    def _masked(self) -> list[str]:
        if self.masked_fields is not None:
            return [name for name in self.masked_fields if name in self.fields]
        names = []
        for name in self.fields:
            try:
                field = self._meta.model._meta.get_field(name)
            except Exception:  # a form-only field: nothing stored behind it
                continue
            if isinstance(field, models.CharField | models.TextField | models.JSONField) and not field.choices:
                names.append(name)
        return names

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            for name in self._masked():
                value = getattr(self.instance, name)
                if isinstance(value, str | dict | list):
                    self.initial[name] = redact(value)

    def _post_clean(self) -> None:
        # Before the instance takes the cleaned values, so it still holds the stored ones.
        for name in self._masked():
            value = self.cleaned_data.get(name)
            if not isinstance(value, str | dict | list):
                continue
            stored = getattr(self.instance, name) if self.instance.pk is not None else None
            try:
                self.cleaned_data[name] = restore(value, stored, name)
            except MaskedSecretError as exc:
                self.add_error(name, str(exc))
        super()._post_clean()


def mask_admin_forms(site: AdminSite) -> None:
    """Give every admin of the project's apps a form that masks and restores (idempotent)."""
    for model, model_admin in site._registry.items():
        form = model_admin.form
        if model._meta.app_label in PROJECT_APPS and not issubclass(form, MaskedSecretsForm):
            model_admin.form = type(f"Masked{form.__name__}", (MaskedSecretsForm, form), {"__module__": __name__})
