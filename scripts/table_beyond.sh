#!/usr/bin/env bash
# The "beyond" table (docs/CHOICES.md, "Today's baselines"): ERM, logit-adjusted loss, balanced softmax, cRT and tau-norm on ERM,
# each w/o and w/ RSG, long-tailed CIFAR-10 and CIFAR-100, rho 100 and 50, ResNet-32: 40 configs x 3 seeds.
# First stages (ERM, ERM-RSG) train before the classifier stages that start from them. Finished runs are
# skipped, interrupted ones resume. Options: --gpus N, --data-root DIR, --output-root DIR (default runs),
# --seeds 0,1,2, --cells GLOB, --dry-run (list the commands), key=value overrides for every run.
exec bash "$(dirname "$0")/run_table.sh" beyond "$@"
