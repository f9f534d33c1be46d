#!/usr/bin/env bash
# Table 7 (iNaturalist 2018, ResNet-50): 8 configs (5 paper cells) x 1 seed; train, then eval.py on best.pt.
# Finished runs are skipped, interrupted ones resume. Options: --gpus N, --data-root DIR, --output-root DIR
# (default runs), --seeds 0,1,2, --cells GLOB, --dry-run (list the commands), key=value overrides for every run.
exec bash "$(dirname "$0")/run_table.sh" 7 "$@"
