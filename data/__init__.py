"""Datasets, samplers, transforms and loaders. Importing this package imports each of its modules,
so every dataset, registered beside its reader (data/registry.py), is known by `data.name` without
being listed anywhere; a new loader module in data/ is found the same way."""

from core.registry import import_modules

import_modules(__name__, __path__)
