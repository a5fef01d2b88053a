"""The byte formulas of the memory plan (deploy/plan.py): model and LoRA sizes, the per-token activation bytes traced
from common/models/transformer.py and lora.py, the draw's bytes per logit and the RolloutBatch's bytes per row. Each
is checked against measurement in tests/deploy/test_plan.py (docs/plan.md, "The lines")."""
from __future__ import annotations

import json
from pathlib import Path

from common.config import ConfigError, RunConfig
from common.models.args import ModelArgs, args_from_hf, family_of


# ---- model sizes ---------------------------------------------------------------------------------------------------
def projections(a: ModelArgs) -> dict[str, tuple[int, int]]:
    """(in, out) of each block projection."""
    qd, kv = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
    return {"wq": (a.dim, qd), "wk": (a.dim, kv), "wv": (a.dim, kv), "wo": (qd, a.dim),
            "w_gate": (a.dim, a.ffn_dim), "w_up": (a.dim, a.ffn_dim), "w_down": (a.ffn_dim, a.dim)}


def block_params(a: ModelArgs) -> int:
    qd, kv = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
    return sum(i * o for i, o in projections(a).values()) + 2 * a.dim + ((qd + 2 * kv) if a.qkv_bias else 0)


def root_params(a: ModelArgs) -> int:
    """Embedding, final norm, LM head (shared with the embedding when tied)."""
    return a.vocab_size * a.dim * (1 if a.tied else 2) + a.dim


def base_params(a: ModelArgs) -> int:
    return root_params(a) + a.n_layers * block_params(a)


def lora_params(a: ModelArgs, r: int, targets: tuple[str, ...]) -> int:
    shapes = projections(a)
    return a.n_layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


def model_args(cfg: RunConfig, model_config: str | Path | None = None) -> ModelArgs:
    """The shapes the plan uses: `model_config` (a config.json or its directory), else model.path's config.json,
    else the built-in tiny model's."""
    source = model_config or cfg.model.path
    if source is None:
        from common.tiny import make_tokenizer, tiny_args

        return tiny_args(cfg.model.tiny, make_tokenizer())
    path = Path(source)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"memory plan: no config.json at {str(file)!r} (model.path); give the model's shapes with "
                          "--model-config (e.g. deploy/shapes/llada-8b-instruct.json)")
    hf = json.loads(file.read_text())
    return args_from_hf(hf, family_of(hf, cfg.model.family, where=str(file)), where=str(file))


# ---- per-token activation bytes (traced from common/models/transformer.py and lora.py) ------------------------------
def _lora_extra(a: ModelArgs, name: str, c: int, *, targets: tuple[str, ...], r: int, dropout: float,
                rows: int, T: int) -> float:
    """Transient bytes per token a LoRA projection adds over its base output: max(the dropout hash, 3 int64 words
    per input element + the [T x in] int64 index shared by the rows (uniform_hash); the adapter path, A-out c r + the
    scaled B-out and the sum 2 c out)."""
    if name not in targets:
        return 0.0
    i, o = projections(a)[name]
    hashing = (24 * i + 8 * i / max(rows, 1)) if dropout > 0 else 0.0
    return max(hashing, c * r + 2 * c * o)


def nograd_token_bytes(a: ModelArgs, c: int, *, targets: tuple[str, ...] = (), r: int = 0, dropout: float = 0.0,
                       rows: int = 1, T: int = 1) -> float:
    """Peak bytes per token of a forward under no_grad (sampling, teacher targets, evaluation), the largest of the
    block's moments (Block._forward's fast path; Python locals q, k, v, y stay alive through the FFN):
      tables 4D (RoPE cos + sin, float32) + x_in c H (the block's input, held by the caller), plus
      wq..wv:  h c H + the outputs so far + LoRA transient
      RoPE k:  h c H + q, k, v c(qd + 2 kv) + new q c qd + float32 copy and output 4 kv (+4 kv if c < 4) + cast c kv
      FFN:     x c H + q, k, v, y c(2 qd + 2 kv) + h2 c H + gate c F + up c F (+ LoRA) | down: gate c F + out c H
    """
    qd, kv, H, F = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim, a.dim, a.ffn_dim
    lo = lambda n: _lora_extra(a, n, c, targets=targets, r=r, dropout=dropout, rows=rows, T=T)  # noqa: E731
    base = 4 * a.head_dim + c * H
    upcast = 1 if c < 4 else 0
    moments = [
        base + c * H + c * qd + lo("wq"),
        base + c * H + c * (qd + kv) + lo("wk"),
        base + c * H + c * (qd + 2 * kv) + lo("wv"),
        base + c * H + c * (qd + 2 * kv) + (4 * qd) * (1 + upcast) + upcast * c * qd,
        base + c * H + c * (2 * qd + 2 * kv) + (4 * kv) * (1 + upcast) + upcast * c * kv,
        base + c * H + c * (qd + 2 * kv) + 3 * c * qd + c * H + lo("wo"),
    ]
    ffn = base + c * H + c * (2 * qd + 2 * kv) + c * H
    moments += [ffn + c * F + lo("w_gate"), ffn + 2 * c * F + lo("w_up"), ffn + c * F + c * H + lo("w_down")]
    return float(max(moments))


def grad_layer_bytes(a: ModelArgs, c: int, *, full: bool, targets: tuple[str, ...] = (), r: int = 0,
                     dropout: float = 0.0) -> float:
    """Bytes per token one block saves for backward:
      norms    2 x (float32 input 4H [+ normed c H + output c H when the weights train])
      SDPA     q, k, v, out c(2 qd + 2 kv) + logsumexp 4 heads
      FFN      silu input, silu output, up output 3 c F
      weights training (full fine-tuning): the inputs of wo (c qd) and w_down (c F)
      LoRA     per target: dropout mask 1 in + dropped input c in (the input itself, once, without dropout) + A-out c r
    """
    qd, kv, H, F = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim, a.dim, a.ffn_dim
    out = 2 * 4 * H + c * (2 * qd + 2 * kv) + 4 * a.n_heads + 3 * c * F
    if full:
        out += 2 * 2 * c * H + c * qd + c * F
    inputs_seen = set()
    for t in targets:
        i, _ = projections(a)[t]
        if dropout > 0:
            out += (1 + c) * i
        elif not full and (t in ("wq", "wk", "wv", "w_gate", "w_up") and t[:2] not in inputs_seen):
            # no dropout: lora_A saves the projection's input itself (h or h2, shared by its projections)
            inputs_seen.add(t[:2])
            out += c * i
        elif not full and t in ("wo", "w_down"):
            out += c * i
        out += c * r
    return float(out)


# ---- the LM head over a chunk of positions (DiffusionLM._target_logprob) -------------------------------------------
def head_chunk_bytes(n: int, V: int, H: int, c: int, *, grad: bool) -> int:
    """Peak bytes of the head + log-softmax over n positions (V logits each), c-byte model dtype:
      no grad (teacher targets): the float32 logits + logsumexp's float32 exp of them (its kernel holds
        (x - max).exp_(), ATen ReduceOps.cpp) = 8 B per logit; the c-byte logits are freed once copied to float32
        (c + 4 <= 8)
      grad (the learner, recomputed in backward): the float32 logits + logsumexp's backward (x - lse, its exp, the
        product with the incoming grad) = 16 B per logit, + the gradient of the n x H input, c H per position
    (tests/deploy/test_plan.py::test_head_chunk_bytes measures both)."""
    return n * (H * c + 16 * V) if grad else 8 * n * V


# ---- the draw and the batch ----------------------------------------------------------------------------------------
def draw_peak(s, c: int, N: int, V: int) -> int:
    """Bytes at the draw's peak for logits [N, V] in c-byte floats: the logits, plus one chunk's temporaries
    (actors/sampling/draw.py::draw_chunk positions at a time, sized from sampler.logits_budget_mb)."""
    from actors.sampling.draw import draw_chunk

    per_elem, _ = draw_bytes(s, c)
    return N * V * c + min(N, draw_chunk(s, V)) * V * (per_elem - c)


def draw_bytes(s, c: int) -> tuple[int, str]:
    """Bytes per logit element at an unchunked draw's peak (actors/sampling/blocks.py, dream.py), logits included."""
    if s.schedule == "dream":
        # a float32 copy (none for float32 logits at T = 0), / T another, then top_p's sort / softmax / cumsum chain
        # and the probabilities held through the confidence: 16 bytes per element at the deepest point, 3 more for
        # the multinomial draw at T > 0 (measured by tests/deploy/test_plan.py::test_draw_bytes)
        copies = (1 if (c < 4 or s.temperature > 0) else 0) + (1 if s.temperature > 0 else 0)
        return c + 4 * copies + 16 + (3 if s.temperature > 0 else 0), \
            "Dream draw: float32 copies, top_p sort, softmax, confidence"
    if s.temperature == 0:
        return c + (4 if c < 4 else 0) + 4, "greedy: argmax, float32 softmax of the confidence"
    g = 8 if s.gumbel_dtype == "float64" else c
    copies = 4 + (1 if g != c else 0)
    return c + copies * g, f"Gumbel noise in {g}-byte floats: {copies} [N, V] temporaries (u, exp, -log u ^ T, ratio)"


def batch_row_bytes(P: int, L: int, J: int, M: int) -> float:
    """Arrow bytes of one RolloutBatch row (common/batch.py::to_arrow): int64 prompt / completion ids, int32 reveal
    steps, the completion mask as bits, int64 seeds, float32 S_old / S_ref, 8 row scalars of 8 bytes and 2 of 4,
    3 strings (offsets 4 each; the text ~4 bytes per completion token)."""
    return 8 * (P + L) + 4 * L + L / 8 + 8 * J * M + 8 * J * M + 8 * 8 + 2 * 4 + 3 * 4 + 4 * L + 16
