"""Admin for notification channels: URLs shown masked, a send-test action, and every
delivery with its attempts (read-only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from orchestration.core.models import Delivery, DeliveryAttempt, NotificationChannel
from orchestration.core.models.ledger import record
from orchestration.core.notifications import url_problem


class ChannelForm(forms.ModelForm):
    class Meta:
        model = NotificationChannel
        fields = ["name", "url", "severities", "tags", "remind_every_minutes", "notices", "enabled"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            # The stored URL holds credentials: the form shows it masked; unchanged, it is kept.
            self.initial["url"] = self.instance.masked_url

    def clean_url(self) -> str:
        value = self.cleaned_data["url"].strip()
        if self.instance.pk and value == self.instance.masked_url:
            return self.instance.url
        problem = url_problem(value)
        if problem:
            raise forms.ValidationError(problem)
        return value


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ["name", "shown_url", "severities", "tags", "remind_every_minutes", "notices", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["name"]
    actions = ["send_test"]

    @admin.display(description="URL")
    def shown_url(self, obj: NotificationChannel) -> str:
        return obj.masked_url

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        record(
            f"channel.{'updated' if change else 'created'}",
            f"Notification channel {obj.name} {'updated' if change else 'created'}",
            subject=f"channel:{obj.name}",
            actor=request.user.get_username(),
            data={"url": obj.masked_url, "severities": obj.severities, "tags": obj.tags, "enabled": obj.enabled},
        )

    @admin.action(description="Send a test notification")
    def send_test(self, request, queryset) -> None:
        for channel in queryset:
            delivery = channel.send_test(actor=request.user.get_username())
            level = messages.SUCCESS if delivery.status == "sent" else messages.ERROR
            self.message_user(request, f"{channel.name}: {delivery.status} {delivery.last_error}".strip(), level)


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["attempted_at", "ok", "duration_ms", "error"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "channel", "severity", "title", "status", "attempts", "reminder"]
    list_filter = ["status", "severity", "reminder"]
    list_select_related = ["channel"]
    inlines = [AttemptInline]
    show_full_result_count = False
    # A person's signed links are their credentials: never shown.
    exclude = ["links"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
