"""Small name -> class registries (paths, models, samplers): recipes name things, never import them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from simplexdiff.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to constructors; ``build`` checks the name and the keyword names before calling,
    and reports a value the constructor refuses (``ValueError`` / ``TypeError``) as a one-line
    ``ConfigError``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def add(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            obj.registry_name = name  # type: ignore[attr-defined]
            return obj

        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    REQUIRED = inspect.Parameter.empty
    """The default ``options`` gives an option the constructor requires."""

    def options(self, name: str) -> dict[str, Any]:
        """The keyword options of ``name``'s constructor, each with its default (``REQUIRED``
        where it has none); ``**kwargs`` is not an option."""
        params = inspect.signature(self.get(name)).parameters.values()
        return {
            p.name: p.default
            for p in params
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def build(self, name: str, **kwargs: Any) -> T:
        factory = self.get(name)
        params = inspect.signature(factory).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            known = list(self.options(name))
            for key in kwargs:
                if key not in known:
                    raise ConfigError(
                        f"unknown option {key!r} for {self.kind} {name!r}; known: {', '.join(known)}"
                    )
        try:
            return factory(**kwargs)
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:  # a value the constructor refuses, e.g. n_heads
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"{self.kind} {name!r}: {first}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries
