"""Balancing strategies: a registry of functions that order capable, healthy services.

Contract: ``strategy(candidates, ctx) -> list[str]``: the candidate names in the order
to try them (primary first, then fallbacks). ``ctx`` carries what a strategy may need:
a round-robin position (persisted by the caller, shared by every process), in-flight
counts, learned stats, and a random source. Pure: no ORM.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestration.routing.learning import ServiceStats, best_scores


@dataclass
class StrategyContext:
    rotation: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)
    stats: dict[str, ServiceStats] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    rng: _random.Random = field(default_factory=_random.Random)


Strategy = Callable[[list[str], StrategyContext], list[str]]
_STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str) -> Callable[[Strategy], Strategy]:
    def register(func: Strategy) -> Strategy:
        _STRATEGIES[name] = func
        return func

    return register


def get_strategy(name: str) -> Strategy:
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"strategy must be one of {', '.join(sorted(_STRATEGIES))} (got {name!r})") from None


def strategy_names() -> list[str]:
    return sorted(_STRATEGIES)


@strategy("round_robin")
def round_robin(candidates: list[str], ctx: StrategyContext) -> list[str]:
    """Exact rotation: the n-th task goes to candidate n mod len (sorted by name)."""
    ordered = sorted(candidates)
    start = ctx.rotation % len(ordered)
    return ordered[start:] + ordered[:start]


@strategy("random")
def random_order(candidates: list[str], ctx: StrategyContext) -> list[str]:
    ordered = sorted(candidates)
    ctx.rng.shuffle(ordered)
    return ordered


@strategy("least_loaded")
def least_loaded(candidates: list[str], ctx: StrategyContext) -> list[str]:
    """Fewest tasks in flight first; ties by weight (higher first), then name."""
    return sorted(candidates, key=lambda s: (ctx.in_flight.get(s, 0), -ctx.weights.get(s, 1.0), s))


@strategy("best")
def best(candidates: list[str], ctx: StrategyContext) -> list[str]:
    """Highest learned success rate × speed first."""
    scores = best_scores([ctx.stats.get(s, ServiceStats(s)) for s in candidates])
    return sorted(candidates, key=lambda s: (-scores[s], ctx.in_flight.get(s, 0), s))
