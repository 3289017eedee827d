"""A tiny name -> object registry, so that configs pick code by string.

Adding a model, loss, source or evaluator is one new function and one decorator line;
the train loop never grows an if-chain.
"""

from collections.abc import Callable
from typing import Any


class Registry:
    """Maps names to callables; unknown names fail with the list of known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice.")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> Any:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise ValueError(f"Unknown {self.kind} {name!r}; known: {known}.")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
