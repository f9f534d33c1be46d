#!/usr/bin/env bash
# Table 9 (ImageNet-LT, ResNeXt-50): 4 configs (2 with paper numbers) x 1 seed; train, then eval.py on best.pt.
# Finished runs are skipped, interrupted ones resume. Options: --gpus N, --data-root DIR, --output-root DIR
# (default runs), --seeds 0,1,2, --cells GLOB, --dry-run (list the commands), key=value overrides for every run.
exec bash "$(dirname "$0")/run_table.sh" 9 "$@"
