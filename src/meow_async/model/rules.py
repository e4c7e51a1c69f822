"""Rules pair a pattern with the recipe it names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..exceptions import ConfigError
from .patterns import FilePattern, HttpPattern, NetworkPattern, Pattern, TimePattern
from .recipes import BashRecipe, NotebookRecipe, PythonRecipe, Recipe

__all__ = ["SHELL_NAMES", "Rule", "make_rules"]

#: Names a Bash recipe may not take as parameters: assigning them changes the shell itself.
SHELL_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "IFS",
        "PWD",
        "OLDPWD",
        "SHELL",
        "ENV",
        "BASH_ENV",
        "CDPATH",
        "PS1",
        "PS2",
        "PS4",
        "SHELLOPTS",
        "BASHOPTS",
        "GLOBIGNORE",
        "HOSTNAME",
        "UID",
        "EUID",
        "PPID",
        "RANDOM",
        "SECONDS",
        "LINENO",
        "OPTIND",
        "OPTARG",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "USER",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PYTHONHOME",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """A pattern and its recipe; named after the pattern, since a pattern names one recipe."""

    pattern: Pattern
    recipe: Recipe
    #: The workflow file's version (a content hash) the rule was loaded from; None for rules
    #: made through the API. An event carries its rule, so a job records the version its
    #: event was made under, even if a reload came between.
    version: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, FilePattern | NetworkPattern | HttpPattern | TimePattern):
            raise ConfigError(
                f"expected a pattern, got {type(self.pattern).__name__}",
                where="rule",
                field="pattern",
                value=self.pattern,
            )
        if not isinstance(self.recipe, PythonRecipe | BashRecipe | NotebookRecipe):
            raise ConfigError(
                f"expected a recipe, got {type(self.recipe).__name__}",
                where=f"rule {self.pattern.name!r}",
                field="recipe",
                value=self.recipe,
            )
        if self.pattern.recipe != self.recipe.name:
            raise ConfigError(
                f"pattern {self.pattern.name!r} names recipe {self.pattern.recipe!r}, "
                f"not {self.recipe.name!r}",
                where=f"rule {self.pattern.name!r}",
                field="recipe",
                value=self.recipe.name,
            )

        if isinstance(self.recipe, BashRecipe):
            names = {
                self.pattern.variable,
                *self.pattern.parameters,
                *self.pattern.outputs,
                *self.pattern.sweep,
                *self.recipe.parameters,
            }
            clash = sorted(names & SHELL_NAMES)
            if clash:
                raise ConfigError(
                    f"{clash[0]!r} is a shell variable Bash itself uses; a parameter of that "
                    "name would change how the script runs: rename it",
                    where=f"rule {self.pattern.name!r}",
                    field="parameters",
                    value=clash[0],
                )

    @property
    def name(self) -> str:
        return self.pattern.name


def make_rules(
    patterns: Iterable[Pattern], recipes: Mapping[str, Recipe], version: str | None = None
) -> dict[str, Rule]:
    """One rule per pattern whose recipe exists; the others wait for their recipe."""
    return {
        p.name: Rule(pattern=p, recipe=recipes[p.recipe], version=version)
        for p in patterns
        if p.recipe in recipes
    }
