"""The rare-class sample generator (RSG) of Wang et al., CVPR 2021: section 3 and Algorithm 1.

RSG sits between two layers of a CNN. In training it receives the feature maps of a batch and its
labels and returns the batch with generated rare-class feature maps appended, their labels, and its
two losses; in evaluation it returns its input unchanged. Shapes: N batch, C channels, H x W spatial,
K centers per class, M = s_new generated samples.

Gradient routes (Algorithm 1, and the authors' code):
- RSG reads detached features, so L_CESC and L_MV never reach the backbone.
- L_CESC (Eq. 5) trains the centers and the center-assignment map in every epoch, and the
  contrastive module before the threshold epoch only.
- From the threshold on, generated samples (Eq. 4) carry gradient into the transformation T only,
  from L_cls and from L_MV (Eq. 6). The contrastive module is frozen then: it is applied with
  detached weights, so gradients flow through it to T while its own weights receive none.

Precision: the center term runs in torch.promote_types(input dtype, float32), outside autocast:
float32 for float32, bf16 and fp16 inputs, float64 for float64 (gradcheck, double-precision tests).
h and T run in the input's dtype promoted with RSG's parameters' dtype (a bf16 input to a float32
RSG: float32), then as autocast sets; rsg.attach puts RSG in the network's device and dtype.

variant="paper" (the default) implements the paper's equations; variant="authors" the authors'
code where it departs from them (rsg/authors.py; docs/CHOICES.md, "The authors' code as a switch").

What a training loop asks of RSG (its losses' names and weights, its statistics, its phases) is
declared in rsg/contract.py; `RSG.arguments_from` turns a config's RSG section into RSG's arguments.
"""

from __future__ import annotations

import inspect
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rsg.authors import Departures, init_like_authors, mv_direction_rows, mv_length_rows, pair_like_authors
from rsg.contract import LOSS_NAMES, MV_TERMS, generates, has_setting, setting, trained_modules

GENERATION_MODES = ("transform", "rare_center", "direct")


def frequent_classes_from_counts(class_counts: Sequence[int], frequent_ratio: float) -> list[int]:
    """The int(alpha * C) classes with the most training samples; ties go to the lower index."""
    if not 0 < frequent_ratio <= 1:        # NaN too; a negative one would drop classes from the end
        raise ValueError(f"frequent_ratio must be in (0, 1] (alpha, the share of classes that are frequent), "
                         f"got {frequent_ratio!r}")
    num_frequent = int(frequent_ratio * len(class_counts))
    order = sorted(range(len(class_counts)), key=lambda c: (-class_counts[c], c))
    return sorted(order[:num_frequent])


def num_generated_per_rare(num_frequent: int, num_rare: int, transfer_strength: float) -> int:
    """s_new / s_rare = max(floor(beta * s_freq / s_rare), 1); 0 when a side of the batch is empty."""
    if num_frequent == 0 or num_rare == 0:
        return 0
    return max(math.floor(transfer_strength * num_frequent / num_rare), 1)


class ContrastiveModule(nn.Module):
    """Eq. 2: h = two 3x3 convs with a ReLU between, global average pooling, then a linear layer.

    Input: a pair concatenated along channels (P, 2C, H, W). Output logits (P, 2) ordered
    [different class, same class]. first_kernel=1 gives the authors' code's h (1x1 then 3x3).
    """

    def __init__(self, in_channels: int, width: int = 256, first_kernel: int = 3):
        super().__init__()
        self.h = nn.Sequential(
            nn.Conv2d(2 * in_channels, width, first_kernel, padding=first_kernel // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
        )
        self.linear = nn.Linear(width, 2)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        pooled = self.h(torch.cat([first, second], dim=1)).mean(dim=(2, 3))
        return self.linear(pooled)


SAME_CLASS, DIFFERENT_CLASS = 1, 0


def is_whole(value, minimum: int, below=None) -> bool:
    """An integer (numpy's and torch's too, not a bool) in [minimum, below)."""
    try:
        number = value.__index__()       # what operator.index accepts; rsg/ imports only torch and math
    except (AttributeError, TypeError):
        return False
    return not isinstance(value, bool) and minimum <= number and (below is None or number < below)


def check_arguments(in_channels, num_classes, frequent_classes, num_centers, contrastive_channels,
                    transfer_strength, threshold_epoch, mv_terms, generation) -> None:
    """RSG's constructor arguments, each refused by name here rather than at the first step."""
    for name, value, minimum in (("in_channels", in_channels, 1), ("num_classes", num_classes, 1),
                                 ("num_centers", num_centers, 1), ("contrastive_channels", contrastive_channels, 1),
                                 ("threshold_epoch", threshold_epoch, 0)):
        if not is_whole(value, minimum):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if not all(is_whole(c, 0, below=num_classes) for c in frequent_classes):
        raise ValueError(f"frequent_classes must be class indices in [0, {num_classes}), got {list(frequent_classes)}")
    if not 0 < len(set(frequent_classes)) < num_classes:
        raise ValueError(f"frequent_classes must hold at least one class and leave at least one of the "
                         f"{num_classes} classes rare, or RSG can never generate; got {list(frequent_classes)}")
    try:
        beta_fits = bool(0 < transfer_strength < math.inf)     # NaN fails; a string raises
    except TypeError:
        beta_fits = False
    if not beta_fits:
        raise ValueError(f"transfer_strength must be a finite number > 0 (beta), got {transfer_strength!r}")
    if len(tuple(mv_terms)) != len(MV_TERMS):
        raise ValueError(f"mv_terms must be {len(MV_TERMS)} booleans, one per term of L_MV (Eq. 6: "
                         f"{', '.join(MV_TERMS)}), got {tuple(mv_terms)}")
    if generation not in GENERATION_MODES:
        raise ValueError(f"generation must be one of {GENERATION_MODES}, got {generation!r}")


def describe(tensor) -> str:
    """'torch.float32 (8, 6, 4, 3) on cpu', or the type of what is not a tensor."""
    if not torch.is_tensor(tensor):
        return type(tensor).__name__
    return f"{tensor.dtype} {tuple(tensor.shape)} on {tensor.device}"


class RSG(nn.Module):
    """Rare-class sample generator.

    Args:
        in_channels: C of the feature maps RSG receives.
        num_classes: number of classes.
        frequent_classes: indices of the frequent classes (see `frequent_classes_from_counts`).
        num_centers: K, centers per class.
        contrastive_channels: width of the contrastive module h.
        transfer_strength: beta.
        threshold_epoch: T_th; generation starts at this epoch index (see `set_epoch`).
        mv_terms: which of the three terms of Eq. 6 are used (Table 3 ablations).
        generation: "transform" (Eq. 4), "rare_center" (T(x_fd-freq) added to the rare sample's
            estimated center instead of the sample) or "direct" (x_fd-freq added to the rare sample,
            no T, no L_MV) — the last two are Table 3 ablations.
        variant: "paper" (the paper's equations), "authors" (the authors' code where it departs
            from them) or a `rsg.authors.Departures` with single departures switched on.
    """

    # The keys of the loss dict `forward` returns: L_CESC (Eq. 3, with the contrastive loss before
    # T_th) and L_MV (Eq. 6). A training loop weights them (Eq. 7: rsg.contract.loss_weights) and adds them.
    loss_names = LOSS_NAMES

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        frequent_classes: Sequence[int],
        num_centers: int = 15,
        contrastive_channels: int = 256,
        transfer_strength: float = 1.0,
        threshold_epoch: int = 160,
        mv_terms: Sequence[bool] = (True, True, True),
        generation: str = "transform",
        variant="paper",
    ):
        super().__init__()
        check_arguments(in_channels, num_classes, frequent_classes, num_centers, contrastive_channels,
                        transfer_strength, threshold_epoch, mv_terms, generation)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_centers = num_centers
        self.transfer_strength = transfer_strength
        self.threshold_epoch = threshold_epoch
        self.mv_terms = tuple(bool(t) for t in mv_terms)
        self.generation = generation
        self.departures = Departures.of(variant)
        self.epoch = 0
        # Detached statistics of the last training forward (see `diagnostics`); the training loop
        # sums them on the device and reads them on the host at its log points only.
        self.record_diagnostics = True
        self.diagnostics: dict[str, torch.Tensor] = {}

        # Center estimation module, Eq. 1: gamma^l = softmax(A^l ave(x^l) + b^l), one map per class.
        self.centers = nn.Parameter(torch.zeros(num_classes, num_centers, in_channels))
        bound = 1.0 / math.sqrt(in_channels)
        self.assign_weight = nn.Parameter(torch.empty(num_classes, in_channels, num_centers).uniform_(-bound, bound))
        self.assign_bias = nn.Parameter(torch.zeros(num_classes, num_centers))
        self.contrastive = ContrastiveModule(in_channels, contrastive_channels,
                                             first_kernel=1 if self.departures.contrastive_1x1 else 3)
        # Vector transformation T of Eq. 4: a 3x3 convolution with C filters. It is a linear map, as
        # the paper defines it, so it has no bias (a bias would shift every generated sample alike);
        # the authors' code has one.
        self.transform = nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=self.departures.transform_bias)
        is_frequent = torch.zeros(num_classes, dtype=torch.bool)
        is_frequent[list(frequent_classes)] = True
        self.register_buffer("is_frequent", is_frequent, persistent=False)
        if self.departures.authors_init:
            init_like_authors(self)
        self.set_epoch(0)

    @classmethod
    def arguments_from(cls, section, class_counts: Sequence[int]) -> dict:
        """The arguments of `cls` but in_channels (the network's), from a config's RSG section (an object
        with the settings as attributes, or a mapping) and the training class counts: num_classes and
        frequent_classes from the counts and the section's frequent_ratio (alpha); every other argument
        from the setting of its name, where the section has one (else the argument's default). A new
        argument, a subclass's too, is read the same way: a new setting is one argument and one key."""
        arguments = {"num_classes": len(class_counts),
                     "frequent_classes": frequent_classes_from_counts(class_counts, setting(section, "frequent_ratio"))}
        for name in cls.argument_names():
            if name not in arguments and name != "in_channels" and has_setting(section, name):
                arguments[name] = setting(section, name)
        return arguments

    @classmethod
    def argument_names(cls) -> list[str]:
        """The named arguments of the constructors of `cls` and of its bases down to RSG."""
        names = []
        for klass in cls.__mro__:
            if issubclass(klass, RSG) and "__init__" in vars(klass):
                for parameter in list(inspect.signature(klass.__init__).parameters.values())[1:]:
                    if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                        names += [parameter.name] if parameter.name not in names else []
        return names

    # -- phase -------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Call at the start of every epoch; generation runs from `threshold_epoch` on.

        Also marks which parameters the phase trains (requires_grad): T only while generating
        (and not for "direct" addition), the contrastive module only before the threshold. A
        parameter the phase does not use then has no gradient at all, which is what lets
        DistributedDataParallel run without a find-unused-parameters pass (it is rebuilt when the
        set changes: engine/runtime.py's PhaseAwareDDP).
        """
        self.epoch = epoch
        trained = trained_modules(epoch, self.threshold_epoch, self.generation)    # the phase rule
        self.transform.requires_grad_("transform" in trained)
        self.contrastive.requires_grad_("contrastive" in trained)

    @property
    def generating(self) -> bool:
        return generates(self.epoch, self.threshold_epoch)

    # -- forward -----------------------------------------------------------------------------------

    def forward(self, features: torch.Tensor, targets: Optional[torch.Tensor] = None):
        """features (N, C, H, W), targets (N,) -> (features', targets', {"cesc", "mv"}).

        Training: features' is (N + M, C, H, W), the input followed by M generated rare-class
        samples, and targets' (N + M,). Evaluation, targets None or N = 0: the input, unchanged (and
        zero losses).
        """
        if not self.training or targets is None:
            return features, targets, dict.fromkeys(self.loss_names, features.new_zeros(()))
        self.check_batch(features, targets)
        self.diagnostics = {}
        if len(features) == 0:                  # the shape is on the host: no synchronisation
            return features, targets, self.empty_batch_losses()
        x = features.detach()
        # The center term is a difference of large sums (see center_loss): at least float32, also
        # under bf16/fp16 autocast; float64 stays float64. h and T: see contrastive_loss.
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            pooled = x.to(dtype).mean(dim=(2, 3))                    # (N, C) = ave(x)
            assignment = self.center_assignment(pooled, targets)     # (N, K) = gamma
            cesc = self.center_loss(x.to(dtype), pooled, targets, assignment)
        self._record_assignment(targets, assignment, cesc)
        if not self.generating:
            contrastive = self.contrastive_loss(x, targets)
            self._record("contrastive_loss", contrastive)
            cesc = cesc + contrastive
            return features, targets, {"cesc": cesc, "mv": cesc.new_zeros(())}
        generated, generated_targets, mv = self.generate(x, targets, assignment.detach())
        return (torch.cat([features, generated.to(features.dtype)]), torch.cat([targets, generated_targets]),
                {"cesc": cesc, "mv": mv})

    def check_batch(self, features, targets) -> None:
        """A ValueError naming what RSG cannot use, before torch fails somewhere inside. Shapes, dtypes
        and devices are on the host: no synchronisation; the labels' values: `check_label_range`."""
        if not (torch.is_tensor(features) and features.dim() == 4 and features.shape[1] == self.in_channels
                and features.is_floating_point()):
            raise ValueError(f"RSG: features must be floating-point (N, C, H, W) feature maps with C = in_channels "
                             f"= {self.in_channels}; got {describe(features)}")
        if not (torch.is_tensor(targets) and targets.shape == features.shape[:1]):
            raise ValueError(f"RSG: targets must be (N,) labels, one per feature map (N = {len(features)}); "
                             f"got {describe(targets)}")
        if targets.dtype not in (torch.int64, torch.int32):     # bool and uint8 would index as masks
            raise ValueError(f"RSG: targets must be int64 (or int32) class indices; got {describe(targets)}")
        if targets.device != features.device:
            raise ValueError(f"RSG: targets must be on the features' device, {features.device}; got {describe(targets)}")
        self.check_label_range(targets)

    def check_label_range(self, targets) -> None:
        """Labels in [0, num_classes): an index out of range would pick another class's centers or
        fail deep inside. Checked where the values are on the host (a CPU tensor); on an accelerator
        reading them would make every step wait for the device, so there the indexing kernels catch
        them (a device-side assertion)."""
        if targets.device.type != "cpu" or len(targets) == 0:
            return
        low, high = targets.aminmax()
        if low < 0 or high >= self.num_classes:
            raise ValueError(f"RSG: targets must be class indices in [0, num_classes = {self.num_classes}); got "
                             f"labels from {int(low)} to {int(high)}")

    def empty_batch_losses(self) -> dict:
        """Zero losses for a batch without samples, where Eq. 5's mean over the batch is 0/0. Like the
        losses of a batch without rare samples (generate), they still touch every parameter the phase
        trains: under DistributedDataParallel every rank uses the same parameters in every step."""
        cesc = [self.centers, self.assign_weight, self.assign_bias]
        if not self.generating:
            cesc += list(self.contrastive.parameters())
        mv = list(self.transform.parameters()) if self.generating and self.generation != "direct" else []
        zero = self.centers.new_zeros(())
        return {"cesc": sum(p.sum() for p in cesc) * 0.0, "mv": sum((p.sum() for p in mv), zero) * 0.0}

    def center_assignment(self, pooled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Eq. 1 with each sample's own class map: (N, C), (N,) -> gamma (N, K)."""
        weight, bias = self.assign_weight[targets].to(pooled.dtype), self.assign_bias[targets].to(pooled.dtype)
        logits = torch.einsum("nc,nck->nk", pooled, weight) + bias
        return logits.softmax(dim=1)

    def center_loss(self, x, pooled, targets, assignment) -> torch.Tensor:
        """First term of Eq. 5: < sum_i gamma_i sum_{d,j,k} (x - up(C_i))^2 >_s.

        Expanded so the (N, K, C, H, W) difference is never built:
        sum_{d,j,k} (x_djk - c_d)^2 = ||x||^2 - 2 HW <ave(x), c> + HW ||c||^2.
        """
        hw = x.shape[2] * x.shape[3]
        centers = self.centers[targets].to(x.dtype)                       # (N, K, C)
        squared_norm = x.flatten(1).pow(2).sum(dim=1, keepdim=True)       # (N, 1)
        cross = torch.einsum("nc,nkc->nk", pooled, centers)               # (N, K)
        distances = squared_norm - 2 * hw * cross + hw * centers.pow(2).sum(dim=2)
        return (assignment * distances).sum(dim=1).mean()

    def contrastive_loss(self, x, targets) -> torch.Tensor:
        """Second term of Eq. 5: binary cross-entropy over s/2 random pairs of the batch."""
        num_pairs = x.shape[0] // 2
        if num_pairs == 0:
            return x.new_zeros(())
        # h sees what T sees from T_th on (x - up(C_K), Eq. 3): the input promoted with RSG's own dtype,
        # so a bf16 input to a float32 RSG runs h in float32 (a no-op when the dtypes agree).
        x = x.to(torch.promote_types(x.dtype, self.centers.dtype))
        order = torch.randperm(x.shape[0], device=x.device)
        first, second = order[:num_pairs], order[num_pairs:2 * num_pairs]
        same = (targets[first] == targets[second]).long()           # y = 1: same class
        logits = self.contrastive(x[first], x[second])
        labels = same * SAME_CLASS + (1 - same) * DIFFERENT_CLASS
        self._record("contrastive_accuracy", lambda: (logits.argmax(dim=1) == labels).float().mean())
        return F.cross_entropy(logits, labels)

    def pair_frequent_with_rare(self, targets: torch.Tensor):
        """Indices (M,) of the frequent sample and of the rare sample of each generated sample.

        Each rare sample gets max(floor(beta * s_freq / s_rare), 1) frequent partners, drawn from a
        random permutation of the batch's frequent samples, reused cyclically when too few. The
        authors' code pairs positionally and swaps the roles when rare outnumber frequent
        (`rsg.authors.pair_like_authors`).
        """
        frequent_mask = self.is_frequent[targets]
        # M depends on the labels, so the host must read one number: this is the step's only host
        # synchronisation. A stable sort puts the frequent indices first, each side in batch order
        # (what two nonzero() calls give, at the cost of two synchronisations).
        num_frequent = int(frequent_mask.sum())
        by_side = torch.sort((~frequent_mask).to(torch.uint8), stable=True).indices
        frequent, rare = by_side[:num_frequent], by_side[num_frequent:]
        if self.departures.swapped_pairing:
            return pair_like_authors(frequent, rare, self.transfer_strength)
        per_rare = num_generated_per_rare(len(frequent), len(rare), self.transfer_strength)
        if per_rare == 0:
            return frequent[:0], rare[:0]
        rare_index = rare.repeat(per_rare)                           # (M,), M = per_rare * s_rare
        shuffled = frequent[torch.randperm(len(frequent), device=targets.device)]
        positions = torch.arange(len(rare_index), device=targets.device) % len(frequent)
        return shuffled[positions], rare_index

    def displacement(self, x, targets, assignment) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 3: x - up(C_K) with K the sample's most probable center; also returns up(C_K)."""
        closest = assignment.argmax(dim=1)
        center = self.centers.detach()[targets, closest][:, :, None, None]    # (n, C, 1, 1)
        return x - center, center

    def generate(self, x, targets, assignment):
        """Eqs. 3, 4 and 6 -> generated (M, C, H, W), their targets (M,), L_MV."""
        frequent_index, rare_index = self.pair_frequent_with_rare(targets)
        if len(rare_index) == 0:  # a zero that still touches T: every step uses the same parameters
            return x[:0], targets[:0], sum(p.sum() for p in self.transform.parameters()) * 0.0
        fd_frequent, _ = self.displacement(x[frequent_index], targets[frequent_index], assignment[frequent_index])
        x_rare = x[rare_index]
        fd_rare, rare_center = self.displacement(x_rare, targets[rare_index], assignment[rare_index])
        generated_targets = targets[rare_index]
        if self.generation == "direct":
            self._record_generation(x_rare, fd_rare, rare_center, fd_frequent, fd_frequent)
            return x_rare + fd_frequent, generated_targets, x.new_zeros(())
        transformed = self.transform(fd_frequent)                    # T(x_fd-freq)
        anchor = rare_center if self.generation == "rare_center" else x_rare
        self._record_generation(anchor, fd_rare, rare_center, fd_frequent, transformed)
        mv = self.mv_loss(transformed, fd_frequent, fd_rare, x[frequent_index])
        return anchor + transformed, generated_targets, mv

    def mv_loss(self, transformed, fd_frequent, fd_rare, x_frequent) -> torch.Tensor:
        """Eq. 6, with cosine and norm over the channel vector at each spatial position (j, k).

        The authors' code: cosine and norms over rows of x.view(-1, C) (departure mv_rows), and
        the contrastive term on [x_freq, T(x_fd-freq)] (departure mv_pair).
        """
        loss = transformed.new_zeros(())
        for name, kept in zip(MV_TERMS, self.mv_terms):
            if kept:
                term = self.mv_term(name, transformed, fd_frequent, fd_rare, x_frequent)
                self._record(f"mv_{name}", term)
                loss = loss + term
        return loss

    def mv_term(self, name: str, transformed, fd_frequent, fd_rare, x_frequent) -> torch.Tensor:
        """The term `name` of Eq. 6 (rsg.contract.MV_TERMS)."""
        rows = self.departures.mv_rows
        if name == "direction":
            return (mv_direction_rows if rows else mv_direction)(transformed, fd_rare)
        if name == "length":
            return (mv_length_rows if rows else mv_length)(transformed, fd_frequent)
        if name == "contrast":
            pair = (x_frequent, transformed) if self.departures.mv_pair else (transformed, fd_rare)
            logits = self.frozen_contrastive(*pair)
            different = torch.full((len(logits),), DIFFERENT_CLASS, device=logits.device)
            return F.cross_entropy(logits, different)                             # -<log gamma*>
        raise ValueError(f"no term {name!r} in L_MV; its terms: {', '.join(MV_TERMS)}")

    def frozen_contrastive(self, first, second) -> torch.Tensor:
        """The contrastive module with detached weights: gradient reaches its inputs, not itself."""
        weights = {name: p.detach() for name, p in self.contrastive.named_parameters()}
        return functional_call(self.contrastive, weights, (first, second))

    # -- diagnostics -------------------------------------------------------------------------------
    # What `self.diagnostics` holds after a training forward: the statistics of
    # rsg.contract.SCALAR_DIAGNOSTICS and CLASS_DIAGNOSTICS (their meanings are there), detached, on
    # the features' device, from tensors the step computes anyway (no host synchronisation).

    def _record(self, name: str, value) -> None:
        """Store a detached statistic; `value` may be a callable, evaluated only when recording."""
        if self.record_diagnostics:
            with torch.no_grad():
                self.diagnostics[name] = (value() if callable(value) else value).detach().float()

    def _record_assignment(self, targets, assignment, center_loss) -> None:
        if not self.record_diagnostics:
            return
        self._record("center_loss", center_loss)
        with torch.no_grad():
            gamma = assignment.detach()
            entropy = -(gamma * gamma.clamp_min(1e-12).log()).sum(dim=1).mean()
            self._record("assignment_entropy", entropy)
            shape = (self.num_classes, self.num_centers)
            mass = gamma.new_zeros(shape).index_add_(0, targets, gamma)
            # scatter, not F.one_hot, which checks its input's range on the host (a sync per step)
            hits = torch.zeros_like(gamma).scatter_(1, gamma.argmax(dim=1, keepdim=True), 1.0)
            self.diagnostics["assignment_mass"] = mass
            self.diagnostics["assignment_argmax"] = gamma.new_zeros(shape).index_add_(0, targets, hits)

    def _record_generation(self, anchor, fd_rare, rare_center, fd_frequent, transformed) -> None:
        """Norms over the channel vector at each position (j, k), averaged over samples and positions."""
        if not self.record_diagnostics:
            return
        with torch.no_grad():
            generated = anchor + transformed
            real_rare = fd_rare + rare_center                            # x_rare of each generated sample
            for name, tensor in (("norm_rare", real_rare), ("norm_generated", generated), ("norm_fd_rare", fd_rare),
                                 ("norm_fd_frequent", fd_frequent), ("norm_transformed", transformed),
                                 ("spread_generated", generated - rare_center)):
                self._record(name, tensor.float().norm(dim=1).mean())
            self._record("cosine_transformed_rare",
                         F.cosine_similarity(transformed.float(), fd_rare.float(), dim=1).mean())

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
                f"num_centers={self.num_centers}, frequent={int(self.is_frequent.sum())}, "
                f"transfer_strength={self.transfer_strength}, threshold_epoch={self.threshold_epoch}, "
                f"generation={self.generation!r}, variant={self.departures.name!r}")


def mv_direction(transformed: torch.Tensor, fd_rare: torch.Tensor) -> torch.Tensor:
    """Eq. 6, first term: sum over positions of |cos(T(x_fd-freq), x_fd-rare) - 1|, mean over samples."""
    cosine = F.cosine_similarity(transformed, fd_rare, dim=1)                # (M, H, W)
    return (cosine - 1).abs().sum(dim=(1, 2)).mean()


def mv_length(transformed: torch.Tensor, fd_frequent: torch.Tensor) -> torch.Tensor:
    """Eq. 6, second term: sum over positions of | ||T(x_fd-freq)|| - ||x_fd-freq|| |, mean over samples."""
    length_change = transformed.norm(dim=1) - fd_frequent.norm(dim=1)         # (M, H, W)
    return length_change.abs().sum(dim=(1, 2)).mean()
