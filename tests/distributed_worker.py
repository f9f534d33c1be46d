"""Run under torchrun by tests/test_distributed.py (or alone, as one process, for the reference).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed_worker.py MODE CONFIG OUT

MODE step: one training step on the first global batch of a model without batch-norm, then the
           model's weights to OUT/weights.pt (rank 0), and an evaluation of a test set of odd size to
           OUT/eval.pt (rank 0).
MODE skipped: each rank "replaced" one unreadable image (data.skip_corrupt); rank 0 reports both.
MODE fail: a normal fit() whose loss raises on rank 1 in epoch 1, through the entry points'
           error reporting (engine.exits.reports_user_errors), as train.py runs it.
MODE user_fail: the same with a UserError.
"""

import os
import sys

import torch

import engine.build as engine_build
import engine.run as engine_run
from core.errors import UserError
from engine.config import load_config
from engine.distributed import init_distributed, shutdown
from engine.evaluation import build_eval_loader, predict
from engine.exits import reports_user_errors
from engine.loop import loss_weights, training_step
from engine.runtime import resolve_device

ODD_TEST_SIZE = 299


def without_batch_norm(build_model):
    """The configured model with every BatchNorm replaced by the identity: on the CPU, DDP has no
    SyncBatchNorm, and per-rank batch statistics would differ from the whole batch's."""
    def build(*args, **kwargs):
        model = build_model(*args, **kwargs)
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.BatchNorm2d):
                    setattr(parent, name, torch.nn.Identity())
        return model
    return build


def one_step(cfg, out):
    engine_build.build_model = without_batch_norm(engine_build.build_model)
    ctx, device = init_distributed(cfg.train.device)
    device = device or resolve_device(cfg.train.device)
    run = engine_build.build_run(cfg, ctx, device, resuming=False)
    run.data.sampler.set_epoch(0)
    run.model.set_epoch(0)
    if ctx.is_main:
        torch.save({k: v.clone() for k, v in run.model.state_dict().items()}, os.path.join(out, "initial.pt"))
    images, targets = next(iter(run.data.train_loader))
    training_step(run.trainer.network.for_current_phase(), run.trainer.criterion, run.trainer.optimizer, images, targets, None,
                  loss_weights(run.cfg))
    test_set = run.data.test_set.subset(list(range(ODD_TEST_SIZE)))
    loader = build_eval_loader(cfg, test_set, device, ctx)        # train.py's and eval.py's evaluation loader
    predictions, labels = predict(run.model, loader, device)
    if ctx.is_main:
        torch.save(run.model.state_dict(), os.path.join(out, "weights.pt"))
        rank_items = len(loader.sampler) if ctx.world_size > 1 else len(test_set)
        torch.save({"predictions": predictions, "labels": labels, "rank_items": rank_items},
                   os.path.join(out, "eval.pt"))
    shutdown()


def report_skipped(cfg):
    from types import SimpleNamespace

    from engine.runtime import setup_logging

    ctx, _ = init_distributed(cfg.train.device)
    setup_logging(is_main=ctx.is_main)
    engine_run.take_unreadable = lambda dataset: [f"images/broken_on_rank{ctx.rank}.png"]
    engine_run.report_unreadable_over_ranks(SimpleNamespace(ctx=ctx), [object()], "epoch 0")
    shutdown()


class FailsOnRank1(torch.nn.Module):
    """The configured loss, except that rank 1 raises `error` once epoch 1 has started."""

    epoch = 0
    error = RuntimeError("injected failure on rank 1")

    def __init__(self, criterion):
        super().__init__()
        self.criterion = criterion

    def forward(self, logits, targets, weights=None):
        if os.environ.get("RANK") == "1" and FailsOnRank1.epoch >= 1:
            raise FailsOnRank1.error
        return self.criterion(logits, targets, weights)


@reports_user_errors
def fail_on_rank_1(cfg):
    build_loss, learning_rate = engine_build.build_loss, engine_run.learning_rate

    def tracking_learning_rate(epoch, optim_cfg, *total_epochs):   # called once at the start of every epoch
        FailsOnRank1.epoch = epoch
        return learning_rate(epoch, optim_cfg, *total_epochs)

    engine_build.build_loss = lambda cfg, counts: FailsOnRank1(build_loss(cfg, counts))
    engine_run.learning_rate = tracking_learning_rate
    engine_run.fit(cfg)
    return 0


if __name__ == "__main__":
    mode, config_path, output = sys.argv[1:4]
    config = load_config(config_path)
    torch.set_num_threads(1)
    if mode == "step":
        one_step(config, output)
    elif mode == "skipped":
        report_skipped(config)
    else:
        if mode == "user_fail":        # a mistake the user can fix (an unreadable image, say)
            FailsOnRank1.error = UserError("injected user error on rank 1")
        sys.exit(fail_on_rank_1(config))
