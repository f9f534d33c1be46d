"""Small name -> builder registries, one per kind: datasets (data.name), samplers (data.sampler),
losses (loss.name), backbones (model.backbone).

A registry is the only list of its names: the config checks a name against it when it loads
(engine/config.py), so a misspelled one stops `--print-config` with the valid names, before any data
is read. A builder may carry facts the config needs without building anything (`info`), such as a
backbone's stage names (where RSG can sit) or whether a dataset reads split lists, a line saying
what it is (`help=`, else its docstring's first line: docs/CONFIG.md lists them), and the settings
it reads from its config section (`settings=`, a `Setting` per key), which the config then accepts
and checks.

A registry fills as its package is imported: `import_modules` imports every module of a package,
so a builder registered in a new module of data/ or losses/ is found without being listed anywhere.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Union

from core.errors import UserError


@dataclass(frozen=True)
class Bounds:
    """Where a number must lie, written as one writes it: '>= 0', '> 0', '<= 1', '[0, 1)', '(0, 1]'.
    A bound is a finite number; NaN and the infinities lie in no Bounds."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False          # '>' or '(': low itself lies outside
    high_open: bool = False
    text: str = ""

    INTERVAL = re.compile(r"^([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")
    COMPARISON = re.compile(r"^(>=|>|<=|<)\s*(\S+)$")

    @classmethod
    def parse(cls, text: str) -> "Bounds":
        text = text.strip()
        interval, comparison = cls.INTERVAL.match(text), cls.COMPARISON.match(text)
        if interval:
            opening, low, high, closing = interval.groups()
            return cls(float(low), float(high), opening == "(", closing == ")", f"in {text}")
        if comparison:
            sign, bound = comparison.groups()
            if sign.startswith(">"):
                return cls(low=float(bound), low_open=sign == ">", text=text)
            return cls(high=float(bound), high_open=sign == "<", text=text)
        raise ValueError(f"bounds {text!r}: write '>= a', '> a', '<= b', '< b' or an interval like '[a, b)'")

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Setting:
    """A key of its config section that a registered builder reads, declared where it registers:

        @LOSSES.register("focal", settings={"focal_gamma": Setting(1.0, "gamma of (1 - p_t)^gamma",
                                                                   lambda g: g >= 0, "must be >= 0")})

    The config then accepts `loss.focal_gamma`, converts its value to `type` (default: the type of
    `default`) and refuses one for which `valid` is false with "key 'loss.focal_gamma' must be >= 0".
    `valid` may also be bounds as text (Bounds: `Setting(1.0, "gamma", ">= 0")`), which say their
    requirement themselves.
    Several builders may read one key (LDAM and AM read loss.scale): each declares it, with its own
    `help`, and one default and type; a value must pass every declaration's `valid`.
    """

    default: Any
    help: str
    valid: Union[Callable[[Any], bool], str, None] = None
    requirement: str = ""           # what `valid` asks, said after the key: "must be positive"
    type: Optional[type] = None

    def __post_init__(self):
        if isinstance(self.valid, str):
            bounds = Bounds.parse(self.valid)
            object.__setattr__(self, "valid", bounds.contains)
            object.__setattr__(self, "requirement", self.requirement or f"must be {bounds}")

    @property
    def value_type(self) -> type:
        return self.type or type(self.default)

    def problem(self, value) -> Optional[str]:
        """`requirement` when `value` fails `valid`, else None."""
        if self.valid is None or self.valid(value):
            return None
        return self.requirement or f"is {value!r}, which is not valid"


class Registry:
    def __init__(self, kind: str, config_key: str):
        self.kind = kind
        self.config_key = config_key
        self._builders: dict[str, Callable] = {}
        self._info: dict[str, dict] = {}

    def register(self, name: str, **info):
        """Decorator: `builder` is built by `name`; `info` is kept for `info(name)`. Two info keys mean
        something here: `help` (a line on what it is) and `settings` ({key: Setting}, see Setting)."""
        def decorator(builder: Callable) -> Callable:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            for key, setting in info.get("settings", {}).items():
                self._check_declaration(name, key, setting)
            self._builders[name] = builder
            self._info[name] = info
            return builder
        return decorator

    def _check_declaration(self, name: str, key: str, setting: Setting) -> None:
        """One key, one default and type, and a default its own check accepts (raised at import,
        where the builder registers: a mistake of the code, not of a config)."""
        if not isinstance(setting, Setting):
            raise TypeError(f"{self.kind} '{name}': setting '{key}' must be a core.registry.Setting")
        if setting.problem(setting.default):
            raise ValueError(f"{self.kind} '{name}': the default {setting.default!r} of setting '{key}' "
                             f"{setting.problem(setting.default)}")
        for other, declared in self.declared_settings().get(key, {}).items():
            if (declared.default, declared.value_type) != (setting.default, setting.value_type):
                raise ValueError(
                    f"{self.kind} '{name}' declares setting '{key}' as {setting.value_type.__name__} "
                    f"{setting.default!r}, but {self.kind} '{other}' declares it as "
                    f"{declared.value_type.__name__} {declared.default!r}: a key has one default and "
                    f"type; give this setting another name")

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

    def describe(self, name: str) -> str:
        """One line on what `name` is: its `help=`, else the first line of its builder's docstring."""
        text = self.info(name).get("help") or (self._builders[name].__doc__ or "").strip()
        return text.splitlines()[0].strip() if text else ""

    def settings(self, name: str) -> dict[str, Setting]:
        """The settings `name` reads ({key: Setting}), as it declared them."""
        return dict(self.info(name).get("settings", {}))

    def declared_settings(self) -> dict[str, dict[str, Setting]]:
        """{key: {name: Setting}} of every registered builder, keys in the order first declared."""
        declared: dict[str, dict[str, Setting]] = {}
        for name, info in self._info.items():
            for key, setting in info.get("settings", {}).items():
                declared.setdefault(key, {})[name] = setting
        return declared


def import_modules(package: str, path: Iterable[str]) -> None:
    """Import every module of the package named `package` whose folders are `path` (its __path__),
    so that what each registers is registered."""
    for module in pkgutil.iter_modules(list(path)):
        importlib.import_module(f"{package}.{module.name}")
