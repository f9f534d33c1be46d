#!/usr/bin/env bash
# The "beyond" table on ImageNet-LT (docs/CHOICES.md, "Today's baselines"): Kang et al.'s cRT, LWS and tau-norm on ERM and on ERM-RSG,
# ResNeXt-50: 8 configs x 1 seed; first stages first, then eval.py on best.pt --split test.
# Options as scripts/table_beyond.sh (--data-root is the ILSVRC-2012 folder with the ImageNet_LT lists).
exec bash "$(dirname "$0")/run_table.sh" beyond_imagenet "$@"
