"""The registries of the pipeline's extension points (tokenizers, recommenders, raw-data sources): a dict from name
to entry that refuses a second, different entry under one name and names what is registered when a lookup fails."""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...  # read-only, so that frozen dataclasses satisfy it


T = TypeVar("T", bound=Named)


class Registry(dict[str, T], Generic[T]):
    def __init__(self, kind: str, check: Callable[[str], object] | None = None):
        super().__init__()
        self.kind = kind  # what an entry is, for messages
        self.check = check  # refuses a name that cannot serve (e.g. as a path component)

    def register(self, entry: T) -> T:
        if self.check is not None:
            self.check(entry.name)
        if entry.name in self and self[entry.name] != entry:
            raise ValueError(f"a different {self.kind} is already registered as {entry.name!r}")
        self[entry.name] = entry
        return entry

    def lookup(self, name: str) -> T:
        if name not in self:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self)}")
        return self[name]
