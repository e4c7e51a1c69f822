"""The live set of patterns, recipes and the rules they make, changeable while running."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

from ..exceptions import ConfigError
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
    recipe removes its rules. Validators see the new rules before a change is made and may
    refuse it by raising (e.g. a port already in use), leaving everything as it was; listeners
    are called after every change, so monitors can open or close what they watch. Change it
    from the event loop's thread.
    """

    def __init__(
        self,
        patterns: Iterable[Pattern] = (),
        recipes: Iterable[Recipe] = (),
        version: str | None = None,
    ) -> None:
        self.patterns: dict[str, Pattern] = {}
        self.recipes: dict[str, Recipe] = {}
        self.rules: dict[str, Rule] = {}
        #: The workflow file's version the rules were loaded from (None: made in code).
        self.version = version
        self._listeners: list[Callable[[], None]] = []
        self._validators: list[Callable[[dict[str, Rule]], None]] = []
        for r in recipes:
            self._put(self.recipes, r, "recipe", new=True)
        for p in patterns:
            self._put(self.patterns, p, "pattern", new=True)
        self.rules = make_rules(self.patterns.values(), self.recipes, version)

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after each change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def add_validator(self, validator: Callable[[dict[str, Rule]], None]) -> Callable[[], None]:
        """Let ``validator(new_rules)`` refuse changes by raising; returns its remover."""
        self._validators.append(validator)
        return lambda: self._validators.remove(validator)

    def add_pattern(self, pattern: Pattern) -> None:
        with self._change():
            self._put(self.patterns, pattern, "pattern", new=True)

    def update_pattern(self, pattern: Pattern) -> None:
        with self._change():
            self._put(self.patterns, pattern, "pattern", new=False)

    def remove_pattern(self, name: str) -> None:
        with self._change():
            self._pop(self.patterns, name, "pattern")

    def add_recipe(self, recipe: Recipe) -> None:
        with self._change():
            self._put(self.recipes, recipe, "recipe", new=True)

    def update_recipe(self, recipe: Recipe) -> None:
        with self._change():
            self._put(self.recipes, recipe, "recipe", new=False)

    def remove_recipe(self, name: str) -> None:
        with self._change():
            self._pop(self.recipes, name, "recipe")

    def replace(
        self, patterns: Iterable[Pattern], recipes: Iterable[Recipe], version: str | None
    ) -> None:
        """Put these patterns and recipes in place of all of them, as one change: validators
        see the whole new set once, listeners are called once, and no event is made under a
        half-applied set (a reload of the workflow file). An unchanged pattern or recipe keeps
        its object, so a monitor that compares by identity sees no change there."""
        old_patterns, old_recipes = self.patterns, self.recipes
        with self._change(version):
            self.recipes, self.patterns = {}, {}
            for r in recipes:
                was = old_recipes.get(r.name)
                if was is not None and was == r and was.digest == r.digest:
                    r = was  # the same recipe, as it was
                self._put(self.recipes, r, "recipe", new=True)
            for p in patterns:
                kept = old_patterns.get(p.name)
                if kept is not None and kept == p:
                    p = kept  # the same pattern, as it was
                self._put(self.patterns, p, "pattern", new=True)

    @contextlib.contextmanager
    def _change(self, version: str | None = None) -> Iterator[None]:
        """Apply a change only if every validator accepts the rules it makes."""
        patterns, recipes = dict(self.patterns), dict(self.recipes)
        try:
            yield
            rules = make_rules(self.patterns.values(), self.recipes, version)
            for validate in list(self._validators):
                validate(rules)
        except BaseException:
            self.patterns, self.recipes = patterns, recipes
            raise
        self.rules = rules
        self.version = version
        for listener in list(self._listeners):
            listener()

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
