"""Small name -> builder registries, one per kind (backbones, losses, datasets)."""

from __future__ import annotations

from typing import Callable

from engine.errors import UserError


class Registry:
    def __init__(self, kind: str, config_key: str):
        self.kind = kind
        self.config_key = config_key
        self._builders: dict[str, Callable] = {}

    def register(self, name: str):
        def decorator(builder: Callable) -> Callable:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            return builder
        return decorator

    def get(self, name: str) -> Callable:
        if name not in self._builders:
            raise UserError(f"key '{self.config_key}': unknown {self.kind} {name!r}; "
                            f"valid choices: {', '.join(sorted(self._builders))}")
        return self._builders[name]

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders
