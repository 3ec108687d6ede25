"""Low-rank adaptation (LoRA) of the MLFF's linear layers, irrep-preserving and mergeable.

Two wrappers add a trainable low-rank update ``(alpha / rank) * A @ B`` to a frozen weight:

- :class:`LoRALinear` wraps an equivariant :class:`e3nn.o3.Linear`. Its weight is a flat vector
  with one ``[mul_in, mul_out]`` block per instruction (a path between two copies of the *same*
  irrep). The update is added block by block, so it only mixes multiplicities and the layer stays
  exactly equivariant.
- :class:`LoRAScalarLinear` wraps a :class:`torch.nn.Linear` or a layer of
  :class:`e3nn.nn.FullyConnectedNet` (radial and head MLPs), both of which act on scalars only.

``B`` starts at zero, so injecting adapters leaves every output bit-identical.
:func:`merge_lora` folds the updates into the plain weights and puts the original modules back,
so a merged model saves and loads as an ordinary checkpoint. Tensor-product weights (the
self-connection, and the edge weights that the radial MLP produces) are not adapted.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Sequence

import torch
from e3nn import o3
from e3nn.nn._fc import _Layer as _FCLayer
from torch import nn
from torch.func import functional_call

__all__ = ["LoRALinear", "LoRAScalarLinear", "inject_lora", "lora_parameters", "merge_lora"]


def _init_factors(
    shapes: Sequence[tuple[int, int]], rank: int, ref: torch.Tensor, generator: torch.Generator | None
) -> tuple[nn.ParameterList, nn.ParameterList]:
    """A ~ N(0, 1/rank) of shape [n_in, rank] and B = 0 of shape [rank, n_out], one pair per shape."""
    a_list, b_list = [], []
    for n_in, n_out in shapes:
        # drawn in float64 on the CPU so the same seed gives the same adapters on any device/dtype
        a = torch.randn(n_in, rank, generator=generator, dtype=torch.float64) / rank**0.5
        a_list.append(nn.Parameter(a.to(device=ref.device, dtype=ref.dtype)))
        b_list.append(nn.Parameter(torch.zeros(rank, n_out, device=ref.device, dtype=ref.dtype)))
    return nn.ParameterList(a_list), nn.ParameterList(b_list)


class _LoRABase(nn.Module):
    """Shared bookkeeping: the frozen ``base`` module, rank, scale and factor lists."""

    base: nn.Module

    def __init__(self, base: nn.Module, rank: int, alpha: float | None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base = base
        self.rank = int(rank)
        self.alpha = float(rank if alpha is None else alpha)
        self.scale = self.alpha / self.rank
        for p in base.parameters():
            p.requires_grad_(False)

    def delta(self) -> torch.Tensor:
        """The update to ``base.weight``, in its layout."""
        raise NotImplementedError

    def merged_weight(self) -> torch.Tensor:
        """``base.weight + delta()``: the weight the wrapper computes with."""
        return self.base.weight + self.delta()

    @torch.no_grad()
    def merge(self) -> nn.Module:
        """Fold the update into ``base.weight`` and return ``base`` (the wrapper is then spent)."""
        self.base.weight.copy_(self.merged_weight())
        return self.base

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


class LoRALinear(_LoRABase):
    """An :class:`e3nn.o3.Linear` plus an irrep-preserving low-rank update.

    For every weight instruction (path ``i_in -> i_out`` between equal irreps, block
    ``W: [mul_in, mul_out]``) the effective block is ``W + (alpha/rank) A @ B`` with
    ``A: [mul_in, rank]`` and ``B: [rank, mul_out]``. Path normalisation and biases are the base
    module's own (biases stay frozen).
    """

    def __init__(
        self,
        base: o3.Linear,
        rank: int = 4,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(base, o3.Linear):
            raise TypeError(f"LoRALinear wraps an e3nn.o3.Linear, got {type(base).__name__}")
        if not base.internal_weights or base.weight.dim() != 1:
            raise ValueError("LoRALinear needs an o3.Linear with internal, shared weights and no f_in/f_out")
        super().__init__(base, rank, alpha)
        # bias instructions (i_in == -1) hold no weights; empty paths get no code in e3nn either
        self.path_shapes = [
            tuple(ins.path_shape) for ins in base.instructions
            if ins.i_in != -1 and 0 not in ins.path_shape
        ]
        numel = sum(m_in * m_out for m_in, m_out in self.path_shapes)
        if numel != base.weight_numel:
            raise ValueError(f"weight layout mismatch: {numel} != weight_numel {base.weight_numel}")
        self.lora_A, self.lora_B = _init_factors(self.path_shapes, self.rank, base.weight, generator)

    @property
    def irreps_in(self) -> o3.Irreps:
        return self.base.irreps_in

    @property
    def irreps_out(self) -> o3.Irreps:
        return self.base.irreps_out

    def delta(self) -> torch.Tensor:
        # row-major flatten of each [mul_in, mul_out] block, blocks in instruction order: e3nn's layout
        blocks = [(a @ b).reshape(-1) for a, b in zip(self.lora_A, self.lora_B)]
        return self.scale * torch.cat(blocks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.base(features, self.merged_weight())


class LoRAScalarLinear(_LoRABase):
    """A :class:`torch.nn.Linear` or ``FullyConnectedNet`` layer plus a low-rank update.

    With ``A: [n_in, rank]`` and ``B: [rank, n_out]`` the update is ``(alpha/rank) A @ B`` for an
    e3nn layer (weight ``[n_in, n_out]``) and its transpose for ``nn.Linear`` (weight
    ``[n_out, n_in]``). The base module's own forward (normalisation, activation, bias) is used.
    """

    def __init__(
        self,
        base: nn.Linear | _FCLayer,
        rank: int = 4,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(base, (nn.Linear, _FCLayer)):
            raise TypeError(f"LoRAScalarLinear wraps nn.Linear or a FullyConnectedNet layer, got {type(base).__name__}")
        super().__init__(base, rank, alpha)
        self.transposed = isinstance(base, nn.Linear)
        w = base.weight
        n_in, n_out = (w.shape[1], w.shape[0]) if self.transposed else (w.shape[0], w.shape[1])
        a, b = _init_factors([(n_in, n_out)], self.rank, w, generator)
        self.lora_A, self.lora_B = a[0], b[0]

    def delta(self) -> torch.Tensor:
        d = self.scale * (self.lora_A @ self.lora_B)
        return d.T if self.transposed else d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, {"weight": self.merged_weight()}, (x,))


_LORA_TYPES = (LoRALinear, LoRAScalarLinear)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    """Glob match on the module name; a pattern also selects everything below it."""
    return any(fnmatchcase(name, p) or name.startswith(p + ".") for p in patterns)


def _lora_modules(model: nn.Module) -> list[tuple[str, _LoRABase]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _LORA_TYPES)]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    if hasattr(model, "structure_changed"):  # the model caches its parameter list
        model.structure_changed()


def inject_lora(
    model: nn.Module,
    rank: int = 4,
    alpha: float | None = None,
    targets: Sequence[str] = ("*",),
    *,
    exclude: Sequence[str] = (),
    equivariant: bool = True,
    scalar: bool = True,
    seed: int = 0,
) -> list[str]:
    """Wrap matching linear layers of ``model`` in place with LoRA adapters; return their names.

    Candidates are every ``e3nn.o3.Linear`` (if ``equivariant``) and every ``nn.Linear`` or
    ``FullyConnectedNet`` layer (if ``scalar``) whose qualified name (e.g.
    ``"interactions.0.linear_up"``, ``"heads.main.mlp.layer0"``) matches a glob in ``targets``
    and none in ``exclude``; a pattern also selects everything below it (``"interactions.0"``).
    ``alpha`` defaults to ``rank`` (scale 1). Every parameter that is not a LoRA factor is frozen.
    ``A`` is drawn from a generator seeded with ``seed``; the global RNG is untouched.
    """
    if _lora_modules(model):
        raise ValueError("model already has LoRA adapters; call merge_lora first")
    kinds: tuple[type, ...] = ((o3.Linear,) if equivariant else ()) + ((nn.Linear, _FCLayer) if scalar else ())
    chosen = [
        (name, m) for name, m in model.named_modules()
        if name and isinstance(m, kinds) and _matches(name, targets) and not _matches(name, exclude)
        and not (isinstance(m, o3.Linear) and m.weight_numel == 0)
    ]
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, m in chosen:
        cls = LoRALinear if isinstance(m, o3.Linear) else LoRAScalarLinear
        _replace(model, name, cls(m, rank, alpha, generator))
    return [name for name, _ in chosen]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA factors (A and B of every adapter) of ``model``, in module order."""
    params: list[nn.Parameter] = []
    for _, m in _lora_modules(model):
        params.extend(p for n, p in m.named_parameters() if n.startswith("lora_"))
    return params


def merge_lora(model: nn.Module, unfreeze: bool = True) -> list[str]:
    """Fold every adapter into its base weight and restore the original modules; return their names.

    Afterwards the model has its original module types and state-dict keys. With ``unfreeze``
    every parameter is made trainable again; otherwise all stay frozen.
    """
    names = []
    for name, m in _lora_modules(model):
        _replace(model, name, m.merge())
        names.append(name)
    for p in model.parameters():
        p.requires_grad_(unfreeze)
    return names
