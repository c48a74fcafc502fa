"""Name → class registries, so configs can select components by name.

Adding a component is one decorator on its class; nothing else has to be touched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twinnet.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories (classes or functions) of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str, *, field: str = "") -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            prefix = f"{field}: " if field else ""
            raise ConfigError(f"{prefix}unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def build(self, name: str, params: dict[str, Any] | None = None, *, field: str = "") -> T:
        """Instantiate ``name`` with ``params``, naming any parameter it does not take.

        Components raise plain ``ValueError`` (or ``TypeError``) for a bad argument; here that
        becomes a one-line :class:`ConfigError` naming the config ``field`` it came from.
        """
        factory = self.get(name, field=field)
        params = dict(params or {})
        where = field or f"{self.kind} {name!r}"
        check_params(factory, params, field=where)
        try:
            return factory(**params)
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{where}: {err}") from None

    def items(self) -> list[tuple[str, Callable[..., T]]]:
        return sorted(self._entries.items())


def check_params(factory: Callable[..., Any], params: dict[str, Any], *, field: str) -> None:
    """Raise ConfigError naming every key in ``params`` that ``factory`` does not accept."""
    signature = inspect.signature(factory)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return
    accepted = {
        name
        for name, p in signature.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(
            f"{field}: unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(sorted(accepted))}"
        )
