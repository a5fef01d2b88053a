"""RolloutBatch: the one data contract between rollout actors and learner ranks (docs/design.md, "RolloutBatch").

A row is one completion. Tensors on the torch side, an arrow Table in the Ray object store (zero-copy on read: the
learner's tensors are read-only views of the shared-memory buffers). Legend: B rows, P prompt, L completion,
J inner iterations (mu), M Monte-Carlo draws (num_mc).
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

_TORCH_TO_NP = {torch.int64: np.int64, torch.int32: np.int32, torch.float32: np.float32, torch.bool: np.uint8}
_STRINGS = ("prompt_uid", "task", "text")


@dataclass
class RolloutBatch:
    # what was generated
    prompt_ids: torch.Tensor  # (B, P) int64, left-padded prompt tokens
    prompt_len: torch.Tensor  # (B,) int64, real prompt tokens (the rest of P is padding on the left)
    completion_ids: torch.Tensor  # (B, L) int64, EOS-padded completion
    completion_mask: torch.Tensor  # (B, L) bool, the reply up to and including its first EOS
    reveal_step: torch.Tensor  # (B, L) int32, denoising step at which the sampler revealed each token
    # how it scored
    group_id: torch.Tensor  # (B,) int64, rows with the same id answer the same prompt
    reward: torch.Tensor  # (B,) float32, sum of the reward functions
    advantage: torch.Tensor  # (B,) float32, leave-one-out in the group
    # teacher targets, one per (inner iteration j, mc draw m)
    mask_seeds: torch.Tensor  # (B, J, M) int64, seeds of consistent_masks, shared by the rows of one source batch
    mask_row: torch.Tensor  # (B,) int64, the row's index in its source batch (the mask is built for that batch)
    mask_batch_rows: torch.Tensor  # (B,) int64, number of rows of the source batch the masks were built for
    old_logp: torch.Tensor  # (B, J, M) float32, S_old(x0) under the sampling weights (NaN: not computed)
    ref_logp: torch.Tensor  # (B, J, M) float32, S_ref(x0) under the frozen reference (NaN: not computed)
    policy_version: torch.Tensor  # (B,) int64, version of the weights that sampled the row
    # for logs
    prompt_uid: list[str]  # (B,) id of the task instance
    task: list[str]  # (B,) task name
    text: list[str]  # (B,) decoded completion
    reward_parts: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B,) float32
    meta: dict[str, Any] = field(default_factory=dict)  # per-batch: timings, sampler settings

    @property
    def num_rows(self) -> int:
        return self.completion_ids.shape[0]

    def _tensor_fields(self) -> dict[str, torch.Tensor]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if isinstance(getattr(self, f.name), torch.Tensor)}
        out.update({f"reward_parts.{k}": v for k, v in self.reward_parts.items()})
        return out

    def to_arrow(self) -> pa.Table:
        columns, schema_meta = {}, {"batch_meta": json.dumps(self.meta)}
        for name, tensor in self._tensor_fields().items():
            array = tensor.detach().cpu().contiguous().numpy().astype(_TORCH_TO_NP[tensor.dtype], copy=False)
            width = int(np.prod(array.shape[1:], dtype=np.int64))
            flat = pa.array(array.reshape(-1))
            columns[name] = flat if array.ndim == 1 else pa.FixedSizeListArray.from_arrays(flat, width)
            schema_meta[f"shape.{name}"] = json.dumps([str(tensor.dtype), list(array.shape[1:])])
        for name in _STRINGS:
            columns[name] = pa.array(getattr(self, name), type=pa.string())
        table = pa.table(columns)
        return table.replace_schema_metadata({k: v.encode() for k, v in schema_meta.items()})

    @classmethod
    def from_arrow(cls, table: pa.Table) -> "RolloutBatch":
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        tensors: dict[str, Any] = {}  # field name -> tensor (Any: they fill the constructor's typed fields by name)
        for key, spec in meta.items():
            if not key.startswith("shape."):
                continue
            name = key.removeprefix("shape.")
            dtype_name, tail = json.loads(spec)
            column = table.column(name).combine_chunks()
            values = column if not tail else column.flatten()
            array = values.to_numpy(zero_copy_only=False).reshape(len(table), *tail)
            with warnings.catch_warnings():  # object-store buffers are read-only; the learner never writes them
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.from_numpy(array)
            tensors[name] = tensor.bool() if dtype_name == "torch.bool" else tensor
        parts = {k.removeprefix("reward_parts."): tensors.pop(k)
                 for k in list(tensors) if k.startswith("reward_parts.")}
        strings = {name: table.column(name).to_pylist() for name in _STRINGS}
        return cls(**tensors, **strings, reward_parts=parts, meta=json.loads(meta.get("batch_meta", "{}")))

    def select(self, rows: torch.Tensor | list[int] | slice) -> "RolloutBatch":
        """The given rows (mask_row / mask_batch_rows keep pointing at the source batch, so masks stay the same)."""
        index = (torch.arange(self.num_rows, device="cpu")[rows] if isinstance(rows, slice)
                 else torch.as_tensor(rows, dtype=torch.long, device="cpu"))
        kept = index.tolist()
        values: dict[str, Any] = {}  # field name -> its selected rows
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                values[f.name] = value[index]
            elif f.name in _STRINGS:
                values[f.name] = [value[i] for i in kept]
        return RolloutBatch(**values, reward_parts={k: v[index] for k, v in self.reward_parts.items()},
                            meta=dict(self.meta))

    @staticmethod
    def concat(batches: list["RolloutBatch"]) -> "RolloutBatch":
        """Rows of several batches with the same P, L, J, M; meta of each kept under 'sources'.

        Prompts are not re-padded here: batches of other widths stay separate (the padding mask would make a re-padded
        row compute the same S, but S_old was computed at the actor's width and bit-equality is what is tested)."""
        first = batches[0]
        shapes = {(b.prompt_ids.shape[1], *b.old_logp.shape[1:], b.completion_ids.shape[1]) for b in batches}
        if len(shapes) > 1:
            raise ValueError(f"cannot concat RolloutBatches of different (P, J, M, L): {sorted(shapes)}")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(first):
            value = getattr(first, f.name)
            if isinstance(value, torch.Tensor):
                values[f.name] = torch.cat([getattr(b, f.name) for b in batches])
            elif f.name in _STRINGS:
                values[f.name] = [x for b in batches for x in getattr(b, f.name)]
        parts = {k: torch.cat([b.reward_parts[k] for b in batches]) for k in first.reward_parts}
        return RolloutBatch(**values, reward_parts=parts, meta={"sources": [b.meta for b in batches]})
