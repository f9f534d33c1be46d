"""The ground floor: what every other package of the project may use, importing nothing of it.

errors (UserError), registry (name -> builder tables), class_weights (Cui et al.'s effective number),
seeds (the per-epoch seed). data/, models/, losses/ stand on it; engine/ on them; the entry points
and tools/ on top (docs/DESIGN.md; tests/test_layering.py keeps the arrows pointing down).
"""

# The name of the project's logger (train.log, the terminal). Not "rsg": that is the plug-in's
# package, which logs nothing.
LOGGER_NAME = "rsg_lt"
