"""docs/CONFIG.md is generated (tools/config_reference.py) and kept fresh: it lists every key and
every registered name, and this test fails when the config or a registry changed without it."""

from __future__ import annotations

import dataclasses
import typing

from engine.config import REGISTRIES, section_keys
from tools.config_reference import REFERENCE_PATH, main, render, sections


def test_docs_config_md_is_what_the_script_writes():
    with open(REFERENCE_PATH) as f:
        assert f.read() == render(), "docs/CONFIG.md is stale: run python scripts/config_reference.py"


def test_every_key_and_every_registered_name_is_listed():
    text = render()
    for prefix, cls in sections():
        hints = typing.get_type_hints(cls)
        nested = {f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}
        for key in section_keys(cls):
            assert key in nested or f"| `{prefix}{key}` |" in text, f"{prefix}{key}"
    for key, registry in REGISTRIES.items():
        for name in registry.names():
            assert f"| `{name}` |" in text, f"{key} {name}"


def test_check_says_whether_the_file_is_stale(tmp_path, capsys):
    written = tmp_path / "CONFIG.md"
    assert main(["--output", str(written)]) == 0
    assert main(["--output", str(written), "--check"]) == 0
    written.write_text("old\n")
    assert main(["--output", str(written), "--check"]) == 1
    assert "is stale" in capsys.readouterr().err
