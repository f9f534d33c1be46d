"""Small name -> builder registries, one per kind: datasets (data.name), samplers (data.sampler),
losses (loss.name), backbones (model.backbone).

A registry is the only list of its names: the config checks a name against it when it loads
(engine/config.py), so a misspelled one stops `--print-config` with the valid names, before any data
is read. A builder may carry facts the config needs without building anything (`info`), such as a
backbone's stage names (where RSG can sit) or whether a dataset reads split lists.
"""

from __future__ import annotations

from typing import Callable

from core.errors import UserError


class Registry:
    def __init__(self, kind: str, config_key: str):
        self.kind = kind
        self.config_key = config_key
        self._builders: dict[str, Callable] = {}
        self._info: dict[str, dict] = {}

    def register(self, name: str, **info):
        """Decorator: `builder` is built by `name`; `info` is kept for `info(name)`."""
        def decorator(builder: Callable) -> Callable:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            self._info[name] = info
            return builder
        return decorator

    def check(self, name: str, where: str = "") -> None:
        """A UserError naming the key (and `where` it was set) and every valid name, unless `name` is one."""
        if name not in self._builders:
            where = where or f"key '{self.config_key}'"
            raise UserError(f"{where}: unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}")

    def get(self, name: str) -> Callable:
        self.check(name)
        return self._builders[name]

    def info(self, name: str) -> dict:
        self.check(name)
        return self._info[name]

    def names(self, **info) -> list[str]:
        """The registered names, sorted; with `info`, only those registered with those values."""
        return sorted(name for name in self._builders
                      if all(self._info[name].get(key) == value for key, value in info.items()))
