"""Balancing strategies: a registry of functions that order capable, healthy services.

Contract: ``strategy(candidates, ctx) -> list[str]``: the candidate names in the order
to try them (primary first, then fallbacks). ``ctx`` carries what a strategy may need:
a round-robin position (persisted by the caller, shared by every process), in-flight
counts, learned stats, and a random source. A strategy says in ``ctx.notes[name]`` what
it saw of each candidate, so a decision's reasoning can say why that one and why not
the others. Pure: no ORM.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestration.routing.learning import ServiceStats, best_scores, recent_ms


@dataclass
class StrategyContext:
    rotation: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)
    stats: dict[str, ServiceStats] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    rng: _random.Random = field(default_factory=_random.Random)
    notes: dict[str, str] = field(default_factory=dict)


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
    for i, name in enumerate(ordered):
        ctx.notes[name] = f"position {i} of the rotation, now at {start}"
    return ordered[start:] + ordered[:start]


@strategy("random")
def random_order(candidates: list[str], ctx: StrategyContext) -> list[str]:
    ordered = sorted(candidates)
    ctx.rng.shuffle(ordered)
    for i, name in enumerate(ordered):
        ctx.notes[name] = f"drawn {i + 1} of {len(ordered)}"
    return ordered


@strategy("least_loaded")
def least_loaded(candidates: list[str], ctx: StrategyContext) -> list[str]:
    """Fewest tasks in flight first; ties by weight (higher first), then name."""
    _note_in_flight(candidates, ctx)
    return sorted(candidates, key=lambda s: (ctx.in_flight.get(s, 0), -ctx.weights.get(s, 1.0), s))


def _note_in_flight(candidates: list[str], ctx: StrategyContext, prefix: str = "") -> None:
    for name in candidates:
        ctx.notes[name] = f"{prefix}{ctx.in_flight.get(name, 0)} in flight"


@strategy("least_request")
def least_request(candidates: list[str], ctx: StrategyContext) -> list[str]:
    """Power of two choices: two candidates drawn at random, the one with fewer tasks in
    flight goes first (a tie goes to the higher weight); the rest follow by in-flight
    count. Near least-loaded balance without every router herding to one service."""
    if len(candidates) < 2:
        _note_in_flight(candidates, ctx)
        return list(candidates)
    a, b = ctx.rng.sample(sorted(candidates), 2)
    key = lambda s: (ctx.in_flight.get(s, 0), -ctx.weights.get(s, 1.0), s)  # noqa: E731
    winner, loser = sorted((a, b), key=key)
    rest = sorted((s for s in candidates if s not in (a, b)), key=key)
    _note_in_flight(candidates, ctx)
    ctx.notes[winner] = f"drawn with {loser}; {ctx.in_flight.get(winner, 0)} in flight"
    ctx.notes[loser] = f"drawn with {winner}; {ctx.in_flight.get(loser, 0)} in flight"
    for name in rest:
        ctx.notes[name] = f"not drawn; {ctx.in_flight.get(name, 0)} in flight"
    return [winner, loser, *rest]


def ewma_cost(name: str, ctx: StrategyContext) -> float | None:
    """Expected wait on a service: its recent latency (failures at a penalty) × the
    tasks in flight there plus this one. None while it has no timing yet."""
    latency = recent_ms(ctx.stats.get(name, ServiceStats(name)))
    if latency is None:
        return None
    return latency * (ctx.in_flight.get(name, 0) + 1)


@strategy("ewma")
def ewma(candidates: list[str], ctx: StrategyContext) -> list[str]:
    """Lowest expected wait first (``ewma_cost``): latency-weighted, errors penalised,
    load-aware. A service with no timing yet and nothing in flight goes first so that it
    gets one; unknown ones already being tried wait their turn, so a burst of tasks at a
    cold start spreads instead of all landing on the same unknown service."""
    costs = {name: ewma_cost(name, ctx) for name in candidates}
    order = {name: ctx.rng.random() for name in candidates}
    for name, cost in costs.items():
        if cost is None:
            ctx.notes[name] = f"no latency learned yet ({ctx.in_flight.get(name, 0)} in flight), tried to learn it"
        else:
            latency = recent_ms(ctx.stats[name])
            ctx.notes[name] = (
                f"expected wait {cost:.0f} ms ({latency:.0f} ms recent latency × {ctx.in_flight.get(name, 0) + 1})"
            )

    def key(name: str) -> tuple:
        if costs[name] is None:
            # Exploring: idle unknowns first, then busy unknowns after the known ones.
            return (0, 0.0, order[name]) if not ctx.in_flight.get(name, 0) else (2, ctx.in_flight[name], order[name])
        return (1, costs[name], order[name])

    return sorted(candidates, key=key)


@strategy("best")
def best(candidates: list[str], ctx: StrategyContext) -> list[str]:
    """Highest learned success rate × speed first."""
    scores = best_scores([ctx.stats.get(s, ServiceStats(s)) for s in candidates])
    for name in candidates:
        stats = ctx.stats.get(name, ServiceStats(name))
        latency = recent_ms(stats)
        ctx.notes[name] = f"score {scores[name]:.3f} ({stats.successes}/{stats.count} ok" + (
            f", {latency:.0f} ms recent)" if latency else ", no timing yet)"
        )
    return sorted(candidates, key=lambda s: (-scores[s], ctx.in_flight.get(s, 0), s))
