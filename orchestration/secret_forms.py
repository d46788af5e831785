"""Admin forms that never show a stored secret header.

A change form shows its JSON fields as ``redact`` masks them; saving the form back
unchanged sends the mask, which becomes the stored value again (as the API does), so
opening and saving an object cannot wipe a credential nor put it on a page.
"""

from __future__ import annotations

from django import forms

from orchestration.redaction import MaskedSecretError, redact, restore


class MaskedSecretsForm(forms.ModelForm):
    #: JSON fields whose ``headers`` mappings hold secrets.
    masked_fields: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            for name in self.masked_fields:
                if name in self.fields:
                    self.initial[name] = redact(getattr(self.instance, name))

    def _post_clean(self) -> None:
        # Before the instance takes the cleaned values, so it still holds the stored ones.
        for name in self.masked_fields:
            if name not in self.cleaned_data:
                continue
            stored = getattr(self.instance, name) if self.instance.pk is not None else None
            try:
                self.cleaned_data[name] = restore(self.cleaned_data[name], stored)
            except MaskedSecretError as exc:
                self.add_error(name, str(exc))
        super()._post_clean()
