"""Contrastive auxiliary losses on intermediate outputs: ``hcl`` (UniPTMs' hierarchical contrastive
loss) and ``infonce`` (standard symmetric two-view InfoNCE).

Both read graph outputs ([N, W, D] per residue, pooled over real residues, or [N, D] already
pooled), pass each through its own projection head (made in ``bind`` from the output sizes),
L2-normalise, and compare with dot products divided by one shared temperature Γ. Both return
``lambda(t) * L`` with a per-epoch weight schedule, so a recipe pairs them with a classification
loss: ``losses: [{type: focal}, {type: hcl}]``. See docs/losses-contrastive.md.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import Loss, PluginConfig

Schedule = Literal["constant", "linear", "cosine", "warmup"]


# ----------------------------------------------------------------------------- pure functions
def schedule_value(
    kind: Schedule, start: float, end: float, epoch: int, total: int, warmup_epochs: int = 5
) -> float:
    """lambda(t) at 1-based ``epoch`` of ``total``; every schedule goes from ``start`` to ``end``.

    ``constant``: ``start`` throughout. ``linear`` and ``cosine``: from ``start`` at epoch 1 to
    ``end`` at the last epoch (cosine: half a cosine wave, flat at both ends). ``warmup``: linear
    from ``start`` at epoch 1 to ``end`` at epoch ``warmup_epochs + 1``, then ``end``.
    """
    if kind == "constant":
        return float(start)
    span = warmup_epochs if kind == "warmup" else total - 1
    p = min(max((epoch - 1) / span, 0.0), 1.0) if span > 0 else 0.0
    if kind == "cosine":
        return float(end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p)))
    if kind in ("linear", "warmup"):
        return float(start + (end - start) * p)
    raise ValueError(f"unknown schedule {kind!r}")


def pool(x: torch.Tensor, mask: torch.Tensor | None, how: str, name: str = "input") -> torch.Tensor:
    """[N, D] passes through; [N, W, D] -> [N, D] by masked mean over real residues or the centre."""
    if x.dim() == 2:
        return x
    if x.dim() != 3:
        raise ValueError(
            f"contrastive loss input {name!r} has shape {list(x.shape)}; "
            "expected [N, D] (pooled) or [N, W, D] (per residue)"
        )
    if how == "center":
        return x[:, x.shape[1] // 2]
    if mask is None:
        return x.mean(dim=1)
    if mask.shape != x.shape[:2]:
        raise ValueError(
            f"contrastive loss input {name!r} has shape {list(x.shape)} but the mask is "
            f"{list(mask.shape)}; per-residue outputs must be [N, W, D] over the same windows"
        )
    keep = mask.to(x.dtype).unsqueeze(-1)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)


def supcon(z: torch.Tensor, labels: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) of unit vectors ``z`` [N, P].

    For anchor i with positives P(i) (same label, j != i):
    -1/|P(i)| sum_{j in P(i)} log( exp(z_i.z_j / t) / sum_{m != i} exp(z_i.z_m / t) ),
    averaged over anchors that have at least one positive and one negative. No such anchor
    (one sample, or one class: nothing to contrast against) gives 0 with finite gradients.
    """
    n = z.shape[0]
    if n < 2:
        return z.sum() * 0.0
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    positive = same & ~eye
    anchor = positive.any(dim=1) & (~same).any(dim=1)
    # where(), not multiplication: the diagonal of log_prob is -inf and 0 * -inf is nan.
    per_anchor = -torch.where(positive, log_prob, 0.0).sum(dim=1) / positive.sum(dim=1).clamp(min=1)
    return torch.where(anchor, per_anchor, 0.0).sum() / anchor.sum().clamp(min=1)


def cross_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """InfoNCE from view ``a`` to view ``b`` (unit vectors [N, P]): the positive of a_i is b_i,
    the negatives are b_m, m != i: -1/N sum_i log( exp(a_i.b_i / t) / sum_m exp(a_i.b_m / t) ).

    ``labels`` given: b_m with the same label as i (m != i) are dropped from the denominator
    (no same-class "negatives"). ``symmetric``: the mean of the a->b and b->a directions.
    """
    n = a.shape[0]
    logits = a @ b.T / temperature
    if labels is not None:
        eye = torch.eye(n, dtype=torch.bool, device=a.device)
        logits = logits.masked_fill((labels.unsqueeze(0) == labels.unsqueeze(1)) & ~eye, float("-inf"))
    target = torch.arange(n, device=a.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
    return loss


# ----------------------------------------------------------------------------- shared base
class _ContrastiveConfig(PluginConfig):
    pool: Literal["mean", "center"] = Field(
        "mean",
        description="how [N, W, D] inputs become [N, D]: mean over real residues or the centre "
        "position; [N, D] inputs are used as they are",
    )
    projection: Literal["mlp", "linear", "none"] = Field(
        "mlp",
        description="head per input before L2-normalising: mlp (Linear-ReLU-Linear), linear, "
        "or none (inputs must then have equal sizes)",
    )
    proj_dim: int = Field(128, gt=0, description="output size of every projection head")
    temperature: float = Field(0.1, gt=0, description="initial (or fixed) temperature Γ")
    learn_temperature: bool = Field(True, description="learn Γ with the model (else keep it fixed)")
    min_temperature: float = Field(0.01, gt=0, description="lower clamp of the learned Γ")
    max_temperature: float = Field(1.0, gt=0, description="upper clamp of the learned Γ")
    schedule: Schedule = Field(
        "linear",
        description="lambda(t) over epochs: constant (lambda_start), linear, cosine (lambda_start "
        "-> lambda_end over train.epochs) or warmup (-> lambda_end over warmup_epochs, then held)",
    )
    lambda_start: float = Field(1.0, ge=0, description="lambda at epoch 1")
    lambda_end: float = Field(0.1, ge=0, description="lambda at the last (or last warmup) epoch")
    warmup_epochs: int = Field(5, ge=1, description="length of the 'warmup' ramp in epochs")
    exclude_same_label_negatives: bool = Field(
        False,
        description="in the cross-view terms, drop other samples of the anchor's class from the "
        "negatives (they are not true negatives)",
    )

    @model_validator(mode="after")
    def _temperature_range(self) -> _ContrastiveConfig:
        if not self.min_temperature <= self.temperature <= self.max_temperature:
            raise ValueError(
                f"temperature {self.temperature} must lie in [min_temperature, max_temperature] = "
                f"[{self.min_temperature}, {self.max_temperature}]"
            )
        return self


class _ContrastiveLoss(Loss):
    """Pooling, projection heads, learnable temperature and the lambda(t) schedule."""

    plugin_name = "contrastive"
    Config = _ContrastiveConfig

    def __init__(self, config: _ContrastiveConfig) -> None:
        super().__init__(config)
        self.register_buffer("temperature_init", torch.tensor(math.log(config.temperature)))
        # Stored as log(Γ / Γ_init), so the optimiser's weight decay pulls Γ towards its configured
        # value rather than towards 1; a buffer (not optimised) when the temperature is fixed.
        offset = torch.zeros(())
        if config.learn_temperature:
            self.log_temperature_offset = nn.Parameter(offset)
        else:
            self.register_buffer("log_temperature_offset", offset)
        self.heads: nn.ModuleList | None = None
        self.lam = schedule_value(
            config.schedule, config.lambda_start, config.lambda_end, 1, 1, config.warmup_epochs
        )
        self.last_terms: dict[str, torch.Tensor] = {}

    def required_outputs(self) -> list[str]:
        return list(self.config.inputs)

    def temperature(self) -> torch.Tensor:
        """Γ = exp(clamp(log Γ, log min, log max))."""
        c = self.config
        log_t = self.temperature_init + self.log_temperature_offset
        return log_t.clamp(math.log(c.min_temperature), math.log(c.max_temperature)).exp()

    def bind(self, dims: dict[str, int]) -> None:
        """Make one projection head per input, sized from the graph output dims."""
        c = self.config
        missing = [name for name in c.inputs if name not in dims]
        if missing:
            raise KeyError(
                f"{self.plugin_name}: inputs {', '.join(map(repr, missing))} are not graph outputs: "
                f"{', '.join(sorted(dims))}"
            )
        sizes = [int(dims[name]) for name in c.inputs]
        if c.projection == "none":
            if len(set(sizes)) > 1:
                raise ValueError(
                    f"{self.plugin_name}: projection 'none' compares the inputs directly, so they must have "
                    f"equal sizes, got {dict(zip(c.inputs, sizes, strict=True))}; use projection mlp"
                )
            heads: list[nn.Module] = [nn.Identity() for _ in sizes]
        elif c.projection == "linear":
            heads = [nn.Linear(d, c.proj_dim) for d in sizes]
        else:
            heads = [
                nn.Sequential(nn.Linear(d, c.proj_dim), nn.ReLU(), nn.Linear(c.proj_dim, c.proj_dim))
                for d in sizes
            ]
        self.heads = nn.ModuleList(heads)
        device = self.temperature_init.device
        self.heads.to(device)

    def start_epoch(self, epoch: int, total: int) -> None:
        c = self.config
        self.lam = schedule_value(c.schedule, c.lambda_start, c.lambda_end, epoch, total, c.warmup_epochs)

    def embed(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[list, torch.Tensor]:
        """Unit-length projections [N, P] of every input, and the labels as a flat [N] tensor."""
        if self.heads is None:
            raise RuntimeError(
                f"{self.plugin_name} loss used before bind(dims) made its projection heads "
                "(ptmkit.objective.build_losses calls it)"
            )
        mask = outputs.get("mask")
        zs = []
        for name, head in zip(self.config.inputs, self.heads, strict=True):
            if name not in outputs:
                raise KeyError(
                    f"{self.plugin_name} loss input {name!r} is not among the model outputs: "
                    f"{', '.join(sorted(outputs))}"
                )
            x = pool(outputs[name], mask, self.config.pool, name)
            zs.append(F.normalize(head(x), dim=-1))
        labels = labels.reshape(-1)
        for name, z in zip(self.config.inputs, zs, strict=True):
            if z.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"{self.plugin_name} loss input {name!r} has {z.shape[0]} rows but there are "
                    f"{labels.shape[0]} labels"
                )
        return zs, labels


# ----------------------------------------------------------------------------- plugins
@register.loss("hcl")
class HierarchicalContrastiveLoss(_ContrastiveLoss):
    """UniPTMs' hierarchical contrastive loss: supervised contrast within levels, InfoNCE across.

    For K levels z^1..z^K (projected, unit length): L_cont = 1/K sum_k L_intra^k +
    beta/(K-1) sum_k L_cross^{k,k+1} (K = 3 gives the paper's 1/3 and beta/2), with L_intra the
    supervised contrastive loss within a level and L_cross InfoNCE from level k to k+1 (positive:
    the same sample; negatives: the other samples). Returns lambda(t) * L_cont. One learnable Γ
    is shared by all terms. ``last_terms`` holds the detached parts for logging.
    """

    plugin_name = "hcl"

    class Config(_ContrastiveConfig):
        inputs: list[str] = Field(
            ["macp.shallow", "macp.middle", "macp.deep"],
            min_length=1,
            description="outputs from shallow to deep ([N, W, D_k] or [N, D_k]); cross-layer terms "
            "pair consecutive entries",
        )
        beta: float = Field(0.7, ge=0, description="weight of the cross-layer terms (paper: 0.7)")
        symmetric_cross: bool = Field(
            False,
            description="average the k->k+1 and k+1->k directions of each cross-layer term "
            "(eq. 38 is one-directional)",
        )

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        c = self.config
        zs, labels = self.embed(outputs, labels)
        t = self.temperature()
        intra = [supcon(z, labels, t) for z in zs]
        negatives_labels = labels if c.exclude_same_label_negatives else None
        cross = [
            cross_nce(a, b, t, labels=negatives_labels, symmetric=c.symmetric_cross)
            for a, b in zip(zs[:-1], zs[1:], strict=True)
        ]
        cont = torch.stack(intra).mean()
        if cross:
            cont = cont + c.beta * torch.stack(cross).mean()
        terms = {f"intra_{k}": v for k, v in enumerate(intra, 1)}
        terms |= {f"cross_{k}": v for k, v in enumerate(cross, 1)}
        terms |= {"cont": cont, "lambda": torch.tensor(self.lam), "temperature": t}
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return self.lam * cont


@register.loss("infonce")
class InfoNCELoss(_ContrastiveLoss):
    """Symmetric InfoNCE between two outputs (views); returns lambda(t) * loss.

    The positive of a sample is the same sample in the other view, the negatives are the other
    samples.

    L = 1/2 (CE(a b^T / Γ, I) + CE(b a^T / Γ, I)) on projected unit vectors a, b (the CLIP form).
    Labels are not used unless ``exclude_same_label_negatives`` is set.
    """

    plugin_name = "infonce"

    class Config(_ContrastiveConfig):
        inputs: list[str] = Field(
            min_length=2,
            max_length=2,
            description="the two outputs to contrast ([N, W, D] or [N, D] each), e.g. two levels",
        )

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        c = self.config
        (a, b), labels = self.embed(outputs, labels)
        t = self.temperature()
        loss = cross_nce(a, b, t, labels=labels if c.exclude_same_label_negatives else None, symmetric=True)
        self.last_terms = {
            "infonce": loss.detach(),
            "lambda": torch.tensor(self.lam),
            "temperature": t.detach(),
        }
        return self.lam * loss
