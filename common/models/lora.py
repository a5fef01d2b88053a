"""LoRA on our own projections (official GDSD recipe: peft LoraConfig r=128, alpha=64, dropout 0.05, bias none).

  y = W x + b + (alpha / r) * B A dropout(x),   A [r, in] kaiming-uniform(a=sqrt(5)), B [out, r] zeros (peft init)

A small layer of our own rather than peft: `LoRALinear` *is* the nn.Linear it replaces (same `weight` / `bias`
names, so checkpoints, key maps and the FSDP2 per-block grouping are untouched) plus two parameters `lora_A`,
`lora_B`; FSDP2 shards them with the block, the optimizer sees only them (the base is frozen). peft would wrap every
projection in a `base_layer` submodule (renaming every key) and draws its dropout from the global RNG.

Dropout draws are a function of (row seed, layer, element): `lora_dropout(net, seeds)` binds one int64 seed per
input row, derived from the mask seed s[j, m] and the row's index in its rollout batch (the official trainer reseeds
the RNG with the mask seed before each S forward), and each layer hashes (row seed, layer index, element index) into
a uniform number (`uniform_hash`: integer ops only, so the draws are identical on CPU and any accelerator, need no
generator and cost one vectorised pass for all rows). So the actor's S_old and the learner's S_theta of the same
(row, j, m) see the same draws whatever the batching or device, and activation checkpointing recomputes them
identically (the seeds travel as block arguments). Without bound seeds (sampling, evaluation) there is no dropout.
The reference policy is the same model with adapters off (`adapters_disabled`): no second copy of the weights.
Legend: B rows, T sequence, r rank.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from common.families import LORA_TARGETS

if TYPE_CHECKING:  # a type only: transformer.py imports this module
    from common.models.transformer import DiffusionLM

# our block projections that take an adapter; the official (peft target) names are common/families.py's LORA_TARGETS
ALL_TARGETS = tuple(LORA_TARGETS)
_MIX = 0x9E3779B97F4A7C15  # splitmix64 constants: row / layer seeds far apart even for neighbouring inputs
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class LoRASpec:
    """What `apply_lora` needs (built from config.model.lora, or by hand where pydantic is absent)."""

    r: int = 128
    alpha: float = 64.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ALL_TARGETS

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def _splitmix(x: int) -> int:
    x = (x + _MIX) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """An integer avalanche hash of 32-bit values held in int64 (products stay below 2^59: no overflow)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    return (x >> 16) ^ x


def uniform_hash(keys: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """float32 [B, *shape] in [0, 1): a pure function of (key, element index) per row, from integer ops only (the
    same numbers on every device). `keys` int64 [B] (63-bit)."""
    count = math.prod(shape)
    index = torch.arange(count, dtype=torch.int64, device=keys.device)  # [n]
    lo, hi = (keys & _MASK32)[:, None], (keys >> 32)[:, None]  # [B, 1] each
    h = _mix32(_mix32(index[None, :] ^ lo) ^ hi)  # [B, n] in [0, 2^32)
    return (h >> 8).to(torch.float32).mul_(2.0 ** -24).view(keys.shape[0], *shape)  # 24 bits: exact in float32


def row_seeds(mask_seed: int, rows: torch.Tensor) -> torch.Tensor:
    """int64 [B]: the dropout seed of each row (index in its rollout batch) for mask seed s[j, m]."""
    return torch.tensor([_splitmix(int(mask_seed) * 1_000_003 + int(r)) for r in rows.tolist()], dtype=torch.int64,
                        device="cpu")


class LoRALinear(nn.Linear):
    """nn.Linear + a rank-r adapter. `enabled=False` gives the base layer (S_ref); `row_seeds` (set by the block
    for the duration of one forward) switches the seeded dropout on."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool, spec: LoRASpec, index: int,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.r, self.scaling, self.p, self.index = spec.r, spec.scaling, spec.dropout, index
        self.lora_A = nn.Parameter(torch.zeros(spec.r, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, spec.r, device=device, dtype=dtype))
        self.enabled = True
        self.row_seeds: torch.Tensor | None = None

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        if self.row_seeds is None or self.p == 0:
            return x
        seeds = self.row_seeds.tolist()  # B host integers (the seeds were made on the host)
        if len(seeds) != x.shape[0]:
            raise ValueError(f"lora dropout: {len(seeds)} row seeds for a batch of {x.shape[0]} rows")
        keys = torch.tensor([_splitmix(seed ^ (self.index * 0x2545F491)) for seed in seeds], dtype=torch.int64,
                            device=x.device)  # [B]: one key per (row, layer)
        keep = uniform_hash(keys, x.shape[1:]) >= self.p  # [B, T, in]
        return x * keep / (1.0 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if not self.enabled:
            return y
        return y + F.linear(F.linear(self._dropout(x), self.lora_A), self.lora_B) * self.scaling

    def delta(self) -> torch.Tensor:
        """(alpha / r) B A: what merging adds to the weight [out, in]."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling


def apply_lora(net: DiffusionLM, spec: LoRASpec, *, generator: torch.Generator) -> list[str]:
    """Replace the `spec.targets` projections of every block of a DiffusionLM by LoRALinear (in place, keeping the
    base weights), freeze everything else, init A from `generator` (the same seed on actors and learner gives the
    same A, so version 0 agrees bit for bit; B = 0 anyway). Returns the adapter parameter names."""
    unknown = sorted(set(spec.targets) - set(ALL_TARGETS))
    if unknown:
        raise ValueError(f"model.lora.target_modules: unknown {unknown}; choose from {list(ALL_TARGETS)}")
    if spec.r <= 0:
        raise ValueError(f"model.lora.r must be > 0 (got {spec.r})")
    net.requires_grad_(False)
    index = 0
    for block in net.body.blocks:
        for name in spec.targets:
            old: nn.Linear = getattr(block, name)
            new = LoRALinear(old.in_features, old.out_features, bias=old.bias is not None, spec=spec, index=index,
                             device=old.weight.device, dtype=old.weight.dtype)
            new.weight, new.bias = old.weight, old.bias  # the same tensors: no copy of the base
            new.weight.requires_grad_(False)
            if new.bias is not None:
                new.bias.requires_grad_(False)
            with torch.no_grad():
                a = torch.empty(new.lora_A.shape, dtype=torch.float32, device="cpu")
                nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)  # peft's default init of A
                new.lora_A.copy_(a)
            setattr(block, name, new)
            index += 1
    net.lora_spec = spec
    return adapter_names(net)


def lora_layers(net: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    return ((n, m) for n, m in net.named_modules() if isinstance(m, LoRALinear))


def has_lora(net: nn.Module) -> bool:
    return any(True for _ in lora_layers(net))


def is_adapter(name: str) -> bool:
    return name.endswith((".lora_A", ".lora_B"))


def adapter_names(net: nn.Module) -> list[str]:
    return [n for n, _ in net.named_parameters() if is_adapter(n)]


def bind_row_seeds(block: nn.Module, seeds: torch.Tensor | None) -> None:
    """Called by Block.forward: the rows' dropout seeds for this forward (None: no dropout)."""
    for module in block.children():
        if isinstance(module, LoRALinear):
            module.row_seeds = seeds


@contextlib.contextmanager
def lora_dropout(net: DiffusionLM, seeds: torch.Tensor | None) -> Iterator[None]:
    """Seeded LoRA dropout for the forwards inside (`seeds` int64 [B] per input row; None = no dropout). The body
    hands the seeds to each block as an argument, so a checkpointed block recomputes the same draws in backward."""
    body = net.body
    previous = getattr(body, "lora_row_seeds", None)
    body.lora_row_seeds = seeds if has_lora(net) else None
    try:
        yield
    finally:
        body.lora_row_seeds = previous


@contextlib.contextmanager
def adapters_disabled(net: nn.Module) -> Iterator[None]:
    """The base model (the official S_ref: peft's disable_adapter) for the forwards inside."""
    layers = [m for _, m in lora_layers(net)]
    for m in layers:
        m.enabled = False
    try:
        yield
    finally:
        for m in layers:
            m.enabled = True


def merged_state(state: dict[str, torch.Tensor], spec: LoRASpec) -> dict[str, torch.Tensor]:
    """A full state dict (our names, adapters included) -> the base keys with W + (alpha/r) B A merged in (float32
    merge, cast back to W's dtype); adapter keys dropped."""
    out = {k: v for k, v in state.items() if not is_adapter(k)}
    for key in state:
        if key.endswith(".lora_A"):
            stem = key.removesuffix(".lora_A")
            w = state[f"{stem}.weight"]
            delta = (state[f"{stem}.lora_B"].float() @ state[key].float()) * spec.scaling
            out[f"{stem}.weight"] = (w.float() + delta.to(w.device)).to(w.dtype)
    return out


def adapter_bytes(args, spec: LoRASpec, *, bytes_per_elem: int = 2) -> int:
    """Bytes of the adapter tensors of a model of `args` (ModelArgs): one push in the wire dtype."""
    q_dim, kv_dim = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim
    shapes = {"wq": (args.dim, q_dim), "wk": (args.dim, kv_dim), "wv": (args.dim, kv_dim), "wo": (q_dim, args.dim),
              "w_gate": (args.dim, args.ffn_dim), "w_up": (args.dim, args.ffn_dim), "w_down": (args.ffn_dim, args.dim)}
    per_block = sum(spec.r * (shapes[t][0] + shapes[t][1]) for t in spec.targets)
    return per_block * args.n_layers * bytes_per_elem
