"""What the command lines of scripts/ run: the paper's table definitions and runner, the collector,
the paired design, the job pool, figures, benchmarks and inspection tools. The top floor with the
entry points: it may use every package below (engine, models, losses, data, rsg, core); nothing
below imports it (tests/test_layering.py).
"""
