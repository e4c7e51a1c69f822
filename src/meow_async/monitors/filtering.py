"""Which of an event's rules want it: each rule's ``when:`` filter, evaluated by the monitor
before anything of the event is kept, so a rejected event makes no job folder.

Shared by every monitor of a runner, which counts what each rule's filter rejected (for
``meow_events_filtered_total``) and warns, at a bounded rate, of filters that fail on an
event (a missing field, a wrong type): a failure means no match, never a crash.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..model.filters import Facts, Filter, FilterError, keep_paths
from ..model.rules import Rule
from .log_limit import LogLimit

__all__ = ["Filtering"]

logger = logging.getLogger("meow_async.monitors.filtering")


class Filtering:
    """The rules that want an event, by their filters; counts per rule."""

    def __init__(self) -> None:
        #: Events each rule's filter rejected (failures included).
        self.filtered: Counter[str] = Counter()
        #: Events each rule's filter failed on (counted in ``filtered`` too).
        self.failed: Counter[str] = Counter()
        self._warn = LogLimit(logger, every=60.0)
        self._keep: dict[tuple[Filter, ...], dict[str, frozenset[tuple[str, ...]] | None]] = {}

    @staticmethod
    def needed(rules: Sequence[Rule]) -> bool:
        """Whether any of ``rules`` has a filter (if not, the event's names are not made)."""
        return any(r.pattern.filter is not None for r in rules)

    def wanted(
        self, rules: Sequence[Rule], kind: str, names: Callable[[], Mapping[str, Any]]
    ) -> list[Rule]:
        """The rules among ``rules`` whose filter passes the event; ``names()`` (called at
        most once) gives what the filters see."""
        filters = tuple(r.pattern.filter for r in rules if r.pattern.filter is not None)
        if not filters:
            return list(rules)
        keep = self._keep.get(filters)
        if keep is None:  # what these filters read together, worked out once
            if len(self._keep) > 1024:
                self._keep.clear()
            keep = self._keep[filters] = keep_paths(list(filters))
        facts = Facts(kind, names, keep)  # only what the filters read is made
        return [rule for rule in rules if self.passes(rule, facts)]

    def passes(self, rule: Rule, facts: Facts) -> bool:
        f = rule.pattern.filter
        if f is None:
            return True
        try:
            if f.test(facts):
                return True
        except FilterError as e:
            self.failed[rule.name] += 1
            self._warn.log(
                logging.WARNING,
                f"failed:{rule.name}",
                "rule %s: its filter failed on an event, which counts as no match: %s",
                rule.name,
                e,
            )
        self.filtered[rule.name] += 1
        logger.debug("rule %s: its filter rejected an event", rule.name)
        return False
