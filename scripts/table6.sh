#!/usr/bin/env bash
# Table 6 (Imbalanced CIFAR, rho = 100 and 50): 7 methods x 8 columns x 3 seeds = 168 runs.
# Finished runs are skipped, interrupted ones resume. Options: --gpus N, --data-root DIR, --output-root DIR
# (default runs), --seeds 0,1,2, --cells GLOB, --dry-run (list the commands),
# --subset first|ldam_drw (every cell on that CIFAR subset, runs under <output-root>/subset_<name>), key=value overrides.
exec bash "$(dirname "$0")/run_table.sh" 6 "$@"
