#!/usr/bin/env bash
# Table 8 (Places-LT, ResNet-152): 2 configs x 1 seed; train, then eval.py --split test on best.pt.
# Finished runs are skipped, interrupted ones resume. Options: --gpus N, --data-root DIR, --output-root DIR
# (default runs), --seeds 0,1,2, --cells GLOB, --dry-run (list the commands), key=value overrides for every run.
exec bash "$(dirname "$0")/run_table.sh" 8 "$@"
