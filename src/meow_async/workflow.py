"""The live set of patterns, recipes and the rules they make, changeable while running."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from .exceptions import ConfigError
from .patterns import Pattern
from .recipes import Recipe
from .rules import Rule, make_rules

__all__ = ["Workflow"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_T = TypeVar("_T", bound=_Named)


class Workflow:
    """Patterns and recipes by name; rules are derived, as in meow_base.

    A pattern whose recipe is missing makes no rule until the recipe is added; removing a
    recipe removes its rules. Listeners are called after every change, so monitors can open
    or close what they watch. Change it from the event loop's thread.
    """

    def __init__(self, patterns: Iterable[Pattern] = (), recipes: Iterable[Recipe] = ()) -> None:
        self.patterns: dict[str, Pattern] = {}
        self.recipes: dict[str, Recipe] = {}
        self.rules: dict[str, Rule] = {}
        self._listeners: list[Callable[[], None]] = []
        for r in recipes:
            self._put(self.recipes, r, "recipe", new=True)
        for p in patterns:
            self._put(self.patterns, p, "pattern", new=True)
        self._rebuild()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after each change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def add_pattern(self, pattern: Pattern) -> None:
        self._put(self.patterns, pattern, "pattern", new=True)
        self._rebuild()

    def update_pattern(self, pattern: Pattern) -> None:
        self._put(self.patterns, pattern, "pattern", new=False)
        self._rebuild()

    def remove_pattern(self, name: str) -> None:
        self._pop(self.patterns, name, "pattern")
        self._rebuild()

    def add_recipe(self, recipe: Recipe) -> None:
        self._put(self.recipes, recipe, "recipe", new=True)
        self._rebuild()

    def update_recipe(self, recipe: Recipe) -> None:
        self._put(self.recipes, recipe, "recipe", new=False)
        self._rebuild()

    def remove_recipe(self, name: str) -> None:
        self._pop(self.recipes, name, "recipe")
        self._rebuild()

    def _put(self, table: dict[str, _T], item: _T, what: str, *, new: bool) -> None:
        if new and item.name in table:
            raise ConfigError(
                f"a {what} named {item.name!r} already exists; use update_{what}",
                where=what,
                field="name",
                value=item.name,
            )
        if not new and item.name not in table:
            raise ConfigError(
                f"no {what} named {item.name!r} to update; use add_{what}",
                where=what,
                field="name",
                value=item.name,
            )
        table[item.name] = item

    def _pop(self, table: dict[str, _T], name: str, what: str) -> None:
        if name not in table:
            raise ConfigError(
                f"no {what} named {name!r}; known: {sorted(table) or 'none'}",
                where=what,
                field="name",
                value=name,
            )
        del table[name]

    def _rebuild(self) -> None:
        self.rules = make_rules(self.patterns.values(), self.recipes)
        for listener in list(self._listeners):
            listener()
