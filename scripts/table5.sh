#!/usr/bin/env bash
# Table 5 (RSG position in ResNet-32, rho = 50): 3 positions x 4 columns x 3 seeds = 36 runs.
# Finished runs are skipped, interrupted ones resume. Options: --gpus N, --data-root DIR, --output-root DIR
# (default runs), --seeds 0,1,2, --cells GLOB, --dry-run (list the commands),
# --subset first|ldam_drw (every cell on that CIFAR subset, runs under <output-root>/subset_<name>), key=value overrides.
exec bash "$(dirname "$0")/run_table.sh" 5 "$@"
