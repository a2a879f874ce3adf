"""One registry type for every kind of named thing: models, attacks, quantizers, pipelines,
defenses, detectors, experiments.

A :class:`Registry` maps names to entries (any type ``T``) with a one-line description each, in
one dict. It refuses a name registered twice with another entry, and an unknown name with an
error (a :class:`UnknownNameError`, the kind's own subclass) that names the kind and lists the
valid names. What a kind resolves beyond its registered names (``timm:NAME`` models, quantizer
spec strings, pipeline modifiers) is parsed by that kind's own functions above its registry.

This module imports nothing of advimage: every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name no registry holds; ``str()`` is the message (a plain KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(ValueError):
    """A name registered a second time with another entry."""


@dataclass(frozen=True)
class _Item(Generic[T]):
    entry: T
    description: str


def first_line(doc: str | None) -> str:
    """The first paragraph of a docstring on one line ('' for none)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _same(a: object, b: object) -> bool:
    """The same entry: identical, or equal values of one type (a re-registered frozen dataclass)."""
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # an entry whose == is not a truth value
        return False


class Registry(Generic[T]):
    """Named entries of one kind (``kind``: "model", "attack", ...).

    ``error``: the kind's :class:`UnknownNameError` subclass raised for unknown names; ``label``:
    how its error introduces the valid names (default ``valid <kind>s``). ``reg[name]`` is
    :meth:`get`; iteration, :meth:`items` and :meth:`entries` follow registration order,
    :meth:`names` is sorted.
    """

    def __init__(self, kind: str, error: type[UnknownNameError] = UnknownNameError, *,
                 label: str | None = None) -> None:
        self.kind = kind
        self.error = error
        self.label = label or f"valid {kind}s"
        self._items: dict[str, _Item[T]] = {}

    # -- registering ----------------------------------------------------------------------------
    def register(self, name: str, entry: T, description: str | None = None) -> T:
        """Add ``entry`` under ``name`` and return it. ``description``: one line for listings
        (default: the first paragraph of the entry's docstring). Registering the same name again
        with an equal entry does nothing; with another entry it raises :class:`DuplicateNameError`."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name is a non-empty string, got {name!r}")
        text = first_line(getattr(entry, "__doc__", None)) if description is None else " ".join(description.split())
        old = self._items.get(name)
        if old is not None:
            if _same(old.entry, entry):
                return entry
            raise DuplicateNameError(f"{self.kind} {name!r} is already registered ({old.description or old.entry!r}); "
                                     f"unregister it first or choose another name")
        self._items[name] = _Item(entry, text)
        return entry

    def decorator(self, name: str, description: str | None = None) -> Callable[[T], T]:
        """``@reg.decorator(name)``: :meth:`register` the decorated object under ``name``."""
        def deco(entry: T) -> T:
            return self.register(name, entry, description)
        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and plugins that replace an entry); unknown names are ignored."""
        self._items.pop(name, None)

    # -- looking up -----------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The entry of ``name``; an unknown name raises the kind's error listing the valid ones."""
        try:
            return self._items[name].entry
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise self.unknown(name) from None

    __getitem__ = get

    def unknown(self, name: object, *, context: str = "", hint: str = "") -> UnknownNameError:
        """The error for an unknown ``name``: ``unknown <kind> 'name'<context>; <label>: a, b<hint>``."""
        return self.error(f"unknown {self.kind} {name!r}{context}; {self.label}: {', '.join(self.names())}{hint}")

    def description(self, name: str) -> str:
        """The one-line description of ``name`` (the kind's error if unknown)."""
        if name not in self._items:
            raise self.unknown(name)
        return self._items[name].description

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in registration order."""
        return [(k, v.entry) for k, v in self._items.items()]

    def entries(self) -> dict[str, T]:
        """A copy of name -> entry, in registration order."""
        return {k: v.entry for k, v in self._items.items()}

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"
