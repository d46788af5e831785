"""Admin changelists that hold at a million rows.

A big table's changelist never counts the whole table (an exact count up to 10,000
rows, an estimate above), has no date hierarchy (a DISTINCT over the dates of every
row), lists filter values from choices or small tables (never a DISTINCT scan of the
big one), and searches and sorts only on indexed fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.utils.functional import cached_property

from orchestration.api.pagination import bounded_count


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
