"""Admin changelists that hold at a million rows, and the display helpers (badges,
links, JSON) every app's admin shares.

A big table's changelist never counts the whole table (an exact count up to 10,000
rows, an estimate above), has no date hierarchy (a DISTINCT over the dates of every
row), lists filter values from choices or small tables (never a DISTINCT scan of the
big one), and searches and sorts only on indexed fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import slugify

from orchestrator_site.api.pagination import bounded_count


class EstimatedCountPaginator(Paginator):
    """Django's paginator with the API's count: exact up to 10,000 rows, then the
    database's estimate (PostgreSQL's planner; SQLite's id span)."""

    @cached_property
    def count(self) -> int:
        return bounded_count(self.object_list)[0]


class BigTableAdmin(admin.ModelAdmin):
    """Defaults for a changelist over a table that grows without bound."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    date_hierarchy = None
    list_per_page = 50
    # Exact matches on indexed fields: (field, how the search term becomes a value or
    # None when it cannot be one). A term with no field to match finds nothing.
    exact_search: tuple[tuple[str, Callable[[str], object]], ...] = ()

    def get_search_fields(self, request):
        # Non-empty so the changelist shows its search box; get_search_results decides.
        return ["exact_search"] if self.exact_search else []

    def get_search_results(self, request, queryset: QuerySet, search_term: str):
        term = search_term.strip()
        if not term or not self.exact_search:
            return queryset, False
        match = Q()
        for field, convert in self.exact_search:
            value = convert(term)
            if value is not None:
                match |= Q(**{field: value})
        return (queryset.filter(match) if match else queryset.none()), False


def as_int(term: str) -> int | None:
    return int(term) if term.isdigit() and len(term) < 19 else None


def as_text(term: str) -> str:
    return term


def choices_filter(
    title: str,
    parameter: str,
    values: Callable[[], Iterable[str]],
    *,
    field: str | None = None,
    prefix: Callable[[QuerySet, str], QuerySet] | None = None,
) -> type[admin.SimpleListFilter]:
    """A list filter whose values come from ``values()`` (choices, a registry or a
    small table), filtering ``field`` by equality or by ``prefix(queryset, value)``."""

    column = field or parameter

    class ValuesFilter(admin.SimpleListFilter):
        def lookups(self, request, model_admin):
            return [(v, v) for v in values()]

        def queryset(self, request, queryset):
            value = self.value()
            if not value:
                return queryset
            if prefix:
                return prefix(queryset, value)
            return queryset.filter(**{column: value})

    ValuesFilter.title = title
    ValuesFilter.parameter_name = parameter
    ValuesFilter.__name__ = f"{parameter.title().replace('_', '')}Filter"
    return ValuesFilter


# --- display helpers every app's admin shares ---------------------------------------
def badge(value: str, label: str | None = None):
    """A coloured pill for a state; colours come from choices.BADGE_COLORS, as classes of
    static/console/palette.css (the Content-Security-Policy allows no inline style)."""
    return format_html('<span class="ob-badge b-{}">{}</span>', slugify(str(value)).replace("-", "_"), label or value)


def admin_link(obj, label: str | None = None):
    """A link to ``obj``'s change page in the admin ("—" for None)."""
    if obj is None:
        return "—"
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


def subject_link(subject: str):
    """Ledger subjects name what they are about (``service:api``, ``worker:x``,
    ``job:12``, ``pipeline:3``…); link the ones that have a page."""
    kind, _, name = (subject or "").partition(":")
    targets = {
        "service": lambda n: f"/services/{n}/",
        "worker": lambda n: f"/workers/{n}/",
        "job": lambda n: reverse("admin:orchestration_job_change", args=[n]) if n.isdigit() else None,
        "pipeline": lambda n: f"/pipelines/{n}/" if n.isdigit() else None,
        "rule": lambda n: reverse("admin:orchestration_rule_changelist") + f"?name={n}",
    }
    url = targets[kind](name) if kind in targets and name else None
    return format_html('<a href="{}">{}</a>', url, subject) if url else (subject or "—")


def pretty_json(value) -> str:
    return format_html('<pre class="ob-json">{}</pre>', json.dumps(value, indent=2, default=str))


class GuardedDeleteAdmin(admin.ModelAdmin):
    """Deleting goes through the model's ``remove(actor=…)``, the API's write with its
    guard and ledger entry. What blocks a deletion is listed as protected on the
    confirmation page, and the admin deletes nothing while anything is."""

    #: What ``remove`` raises when the guard refuses (a race after the confirmation page).
    guard_errors: tuple[type[Exception], ...] = ()

    def delete_blockers(self, obj) -> list[str]:
        """Names of the objects that keep ``obj`` from being deleted."""
        raise NotImplementedError

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        doomed = {str(obj) for obj in objs}
        for obj in objs:
            # Blockers deleted in the same go do not count: delete_queryset removes them first.
            blockers = [name for name in self.delete_blockers(obj) if name not in doomed]
            if blockers:
                protected = [*protected, f"{obj}: required by {', '.join(blockers)}"]
        return deleted, counts, perms_needed, protected

    def delete_model(self, request, obj):
        try:
            obj.remove(actor=request.user.username)
        except self.guard_errors as exc:
            self.message_user(request, f"{obj} was not deleted: {exc}", messages.ERROR)

    def delete_queryset(self, request, queryset):
        pending = list(queryset)
        while pending:
            names = {str(obj) for obj in pending}
            ready = [obj for obj in pending if not (set(self.delete_blockers(obj)) - {str(obj)}) & names]
            if not ready:
                break
            for obj in ready:
                self.delete_model(request, obj)
                pending.remove(obj)
        for obj in pending:
            blockers = ", ".join(self.delete_blockers(obj))
            self.message_user(request, f"{obj} was not deleted: required by {blockers}", messages.ERROR)
