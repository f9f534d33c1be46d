"""Importing this package registers every backbone: each module in it is imported
(core.registry.import_modules), so a new backbone is its module alone."""

from core.registry import import_modules

import_modules(__name__, __path__)
