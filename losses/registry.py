"""LOSSES: loss.name -> builder(cfg, class_counts), which returns a module computing
loss(logits (N, C), targets (N,), class_weights (C,) or None) -> a scalar.

What a registration states, read by the config without building anything:
  settings  {key: core.registry.Setting}: the keys of the `loss` section it reads (cfg.loss.<key>),
            with their defaults, meanings and checks
  head      "cosine" if it puts its margin on cosine logits (model.classifier auto then picks the
            cosine head); linear otherwise
  help      one line on what it is (docs/CONFIG.md)
"""

from core.registry import Registry

LOSSES = Registry("loss", "loss.name")
