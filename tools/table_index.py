"""Every table by its key (`--table 6`, `--table beyond`): the paper's (tools/table_spec.py) and the
beyond tables (tools/beyond_tables.py)."""

from __future__ import annotations

from core.errors import UserError
from tools.beyond_tables import BEYOND_TABLES
from tools.table_spec import TABLES, Table

ALL_TABLES = {**TABLES, **BEYOND_TABLES}


def get_table(number) -> Table:
    if number not in ALL_TABLES:
        raise UserError(f"no Table {number}; tables with configs: {', '.join(map(str, ALL_TABLES))}")
    return ALL_TABLES[number]()


def table_key(text: str):
    """--table 6 -> 6; --table beyond -> 'beyond'."""
    return int(text) if text.strip().isdigit() else text.strip()
