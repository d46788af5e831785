"""The dependency graph of the fleet. Pure: no Django."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class DependencyCycle(ValueError):
    def __init__(self, cycle: list[str]):
        self.cycle = cycle
        super().__init__("dependency cycle: " + " → ".join(cycle))


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle in ``worker → its upstreams`` as a closed path, or None."""
    white, grey, black = 0, 1, 2
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for upstream in edges.get(node, ()):
            state = color.get(upstream, white)
            if state == grey:
                return [*stack[stack.index(upstream) :], upstream]
            if state == white:
                found = visit(upstream)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return None

    for node in sorted(edges):
        if color.get(node, white) == white:
            found = visit(node)
            if found:
                return found
    return None


def check_acyclic(edges: Mapping[str, Iterable[str]]) -> None:
    cycle = find_cycle(edges)
    if cycle:
        raise DependencyCycle(cycle)


def downstream_of(edges: Mapping[str, Iterable[str]], name: str) -> list[str]:
    """Workers that list ``name`` among their upstreams, sorted."""
    return sorted(node for node, ups in edges.items() if name in set(ups))
