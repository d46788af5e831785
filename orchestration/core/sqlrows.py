"""Rows of hand-written SQL into model instances and values, as the ORM would make them.

The queue's and the fleet's hot statements are plain SQL made once per database (see
``orchestration.core.jobs.statements``); these helpers prepare their parameters and
read their rows the way a save and a normal read do, with the per-column converters
worked out once per connection rather than on every row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import models


def prepared_values(model: type[models.Model], fields: Mapping[str, Any], connection) -> list[Any]:
    """Each value prepared as the field itself prepares it for a save (JSON, datetimes)."""
    return [model._meta.get_field(name).get_db_prep_save(value, connection) for name, value in fields.items()]


def row_converters(model: type[models.Model], connection) -> list[tuple[int, list[Any], Any]]:
    """(column position, converters, expression) of every column of ``model`` that has
    any (datetimes and JSON on SQLite, JSON on PostgreSQL), once per connection."""
    cache = connection.__dict__.setdefault("_orchestrator_row_converters", {})
    found = cache.get(model)
    if found is None:
        found = []
        for position, field in enumerate(model._meta.concrete_fields):
            col = field.get_col(model._meta.db_table)
            converters = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
            if converters:
                found.append((position, converters, col))
        cache[model] = found
    return found


def instance(model: type[models.Model], values: Sequence[Any], connection) -> models.Model:
    """A model instance from a row of all its concrete columns, in field order."""
    values = list(values)
    for position, converters, expression in row_converters(model, connection):
        for convert in converters:
            values[position] = convert(values[position], expression, connection)
    return model.from_db(connection.alias, [f.attname for f in model._meta.concrete_fields], values)
