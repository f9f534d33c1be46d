"""Run an authors' training script unchanged on the CPU, on CIFAR files that are not the originals.

    python tools/authors_code.py --code CHECKOUT --data-root DIR --workdir DIR -- SCRIPT_ARGS...

CHECKOUT is a clone of kaidic/LDAM-DRW (or Jianf-Wang/RSG's Imbalanced_Classification folder);
its `cifar_train.py` runs as `__main__` with SCRIPT_ARGS, in WORKDIR, where `./data` is a link to
DIR (which holds cifar-10-batches-py/, e.g. written by scripts/write_cifar_batches.py). Not a line of
the checkout changes; instead, before it runs, this launcher replaces what a machine without a GPU,
or files that are not CIFAR's originals, cannot pass (docs/REPRODUCTION.md lists each line of the
authors' code this touches):

- `torch.Tensor.cuda` and `torch.nn.Module.cuda` return their object unchanged: every `.cuda(...)`
  of the script (the model, the targets, the DRW class weights, the criterion) leaves it on the CPU;
- `torch.cuda.FloatTensor` is `torch.FloatTensor`: LDAMLoss builds its margins and one-hot index
  with it;
- `torch.load` maps to the CPU: the script's `--resume` maps to 'cuda:0';
- torchvision's CIFAR md5 checks pass: the files hold other pixels than the originals, so their md5
  sums differ, and the script asks for `download=True`, which would otherwise try to download;
- with `--resume`, the script opens log_train.csv and log_test.csv with 'w'; the launcher first
  renames the existing ones to `*.upto_epoch<N>.csv`, so that no line of the earlier part is lost.

One thread by default (`--threads`), as a study beside other work on a 2-core machine asks.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys


def patch_for_cpu() -> None:
    import torch
    import torchvision.datasets.cifar as cifar

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.cuda.FloatTensor = torch.FloatTensor
    original_load = torch.load

    def load_on_cpu(*args, **kwargs):
        kwargs["map_location"] = "cpu"
        kwargs.setdefault("weights_only", False)   # the script's checkpoints hold numpy scalars and args
        return original_load(*args, **kwargs)

    torch.load = load_on_cpu
    cifar.check_integrity = lambda *args, **kwargs: True
    cifar.CIFAR10._check_integrity = lambda self: True


def keep_earlier_logs(workdir: str, script_args: list[str]) -> None:
    """Before a resume, move the logs that the script would truncate out of its way."""
    if "--resume" not in script_args:
        return
    import torch

    checkpoint = script_args[script_args.index("--resume") + 1]
    epoch = torch.load(os.path.join(workdir, checkpoint), map_location="cpu", weights_only=False)["epoch"]
    for root, _, files in os.walk(os.path.join(workdir, "log")):
        for name in ("log_train.csv", "log_test.csv"):
            if name in files:
                kept = os.path.join(root, name.replace(".csv", f".upto_epoch{epoch}.csv"))
                if os.path.exists(kept):
                    raise SystemExit(f"{kept} exists already; move it away before resuming again from epoch {epoch}")
                os.rename(os.path.join(root, name), kept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", required=True, help="the authors' checkout (holds cifar_train.py)")
    parser.add_argument("--data-root", required=True, help="folder holding cifar-10-batches-py/")
    parser.add_argument("--workdir", required=True, help="where the script runs (its log/ and checkpoint/)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="after --: the script's own arguments")
    args = parser.parse_args()
    script_args = args.script_args[1:] if args.script_args[:1] == ["--"] else args.script_args
    code = os.path.abspath(args.code)
    os.makedirs(args.workdir, exist_ok=True)
    link = os.path.join(args.workdir, "data")
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(args.data_root), link)
    import torch

    torch.set_num_threads(args.threads)
    patch_for_cpu()
    keep_earlier_logs(args.workdir, script_args)
    os.chdir(args.workdir)
    sys.path.insert(0, code)
    sys.argv = [os.path.join(code, "cifar_train.py"), *script_args]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
