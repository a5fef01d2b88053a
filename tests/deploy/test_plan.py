"""deploy/plan.py against what the code allocates, line by line, on real tiny models.

Weights, adapters, AdamW state and the push are counted exactly from real tensors. Activation lines are measured:
`LiveBytes` (benchmarks/live_bytes.py) is a TorchDispatchMode that adds the bytes of every new storage an op creates and
subtracts them when the storage is freed (weak references: a tensor saved for backward stays counted), so its peak is
what an allocator would have to hold for the ops run inside it. It runs the real forwards, samplers and arrow
conversion.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from actors.sampling.blocks import draw_blocks
from actors.sampling.dream import draw_chunked
from actors.sampling.draw import draw_chunk
from common.batch import RolloutBatch
from common.config import SamplerConfig, load_config
from common.models.args import ModelArgs
from common.models.lora import LoRASpec, apply_lora, lora_dropout
from common.models.transformer import DiffusionLM
from common.weight_bus import wire_format
from benchmarks.live_bytes import LiveBytes
from deploy import plan as P

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "sudoku_tiny.yaml")
TOLERANCE = 0.2


def llada(**kw) -> ModelArgs:
    base = dict(family="llada", vocab_size=512, dim=128, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=384,
                rope_theta=5e5, norm_eps=1e-5, qkv_bias=False, tied=False, shift=False, mask_token_id=1,
                eos_token_id=2, pad_token_id=0)
    return ModelArgs(**{**base, **kw})


def dream(**kw) -> ModelArgs:  # Dream's proportions: GQA, q/k/v bias, F ~ 5.3 H, shifted
    return llada(family="dream", dim=128, n_heads=4, n_kv_heads=2, ffn_dim=672, qkv_bias=True, shift=True, **kw)


def net_of(a: ModelArgs, dtype: torch.dtype, lora: LoRASpec | None = None) -> DiffusionLM:
    net = DiffusionLM(a).to(dtype)
    if lora is not None:
        apply_lora(net, lora, generator=torch.Generator().manual_seed(0))
    return net


def close(measured: float, planned: float, tolerance: float = TOLERANCE) -> bool:
    return abs(planned - measured) <= tolerance * measured


ALL = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
LLADA_TARGETS = ("wq", "wk", "wv", "w_up")


@pytest.mark.parametrize("args", [llada(), dream(), llada(tied=True)])
def test_parameter_counts_are_the_real_models(args):
    net = net_of(args, torch.float32, LoRASpec(r=8, targets=ALL))
    adapters = sum(p.numel() for n, p in net.named_parameters() if n.endswith(("lora_A", "lora_B")))
    base = sum(p.numel() for n, p in net.named_parameters() if not n.endswith(("lora_A", "lora_B")))
    assert P.base_params(args) == base
    assert P.lora_params(args, 8, ALL) == adapters
    assert P.lora_params(args, 8, LLADA_TARGETS) < adapters
    blocks = sum(p.numel() for p in net.body.blocks[0].parameters() if p.requires_grad or True)
    assert P.block_params(args) + P.lora_params(args, 8, ALL) / args.n_layers == blocks


def tiny_plan(*overrides, args: ModelArgs | None = None, **kw):
    cfg = load_config(CONFIG, list(overrides))
    args = args or P.model_args(cfg)
    return cfg, args, P.build_plan(cfg, args, **kw)


def line(section: P.Section, name: str) -> P.Line:
    (found,) = [x for x in section.lines if x.name == name]
    return found


def test_weights_optimizer_and_push_lines_count_real_tensors():
    """Actor weights in bf16 with bf16 adapters; learner: adapters float32, their grads and AdamW state after a real
    step (2 ranks: half each); the push is the wire format of the adapters."""
    cfg, args, plan = tiny_plan("model.dtype=bfloat16", "model.lora.enabled=true", "model.lora.r=8",
                                "learner.num_ranks=2", "learner.micro_batch_rows=6")
    spec = LoRASpec(r=8, targets=tuple(cfg.model.lora.target_modules))
    actor = net_of(args, torch.bfloat16, spec)
    weights = sum(t.numel() * t.element_size() for t in actor.state_dict().values())
    assert line(plan.actor, "weights").bytes == weights

    learner = net_of(args, torch.float32, spec)  # (FSDP casts to bf16 for the forward; the counts do not change)
    adapters = [p for n, p in learner.named_parameters() if n.endswith(("lora_A", "lora_B"))]
    optimizer = torch.optim.AdamW(adapters, lr=1e-3)
    ids = torch.randint(3, args.vocab_size, (2, 8))
    learner(ids).float().sum().backward()
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if t.dim())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in adapters)
    params = sum(p.numel() * p.element_size() for p in adapters)
    assert line(plan.learner, "LoRA params + grads + AdamW").bytes * 2 == params + grads + state
    base = sum(p.to(torch.bfloat16).untyped_storage().nbytes() for p in learner.parameters() if not p.requires_grad)
    assert line(plan.learner, "base shard").bytes * 2 == base

    push = wire_format({n: p.detach() for n, p in learner.named_parameters() if p.requires_grad}, torch.bfloat16)
    assert line(plan.traffic, "weight push").bytes == sum(t.numel() * t.element_size() for t in push.values())


def measure_forward(net: DiffusionLM, rows: int, T: int, *, grad: bool, seeds: bool = False) -> tuple[int, int]:
    """(peak bytes during the forward, bytes still held after it: what backward needs) of the body."""
    ids = torch.randint(3, net.args.vocab_size, (rows, T))
    attention = torch.ones(rows, T, dtype=torch.bool)
    with torch.set_grad_enabled(grad), lora_dropout(net, torch.arange(rows) if seeds else None), LiveBytes() as m:
        h = net.body(ids, attention)
        held = m.now - h.numel() * h.element_size()
    return m.peak, held


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("family, targets, dropout", [
    ("llada", (), 0.0), ("llada", LLADA_TARGETS, 0.0), ("llada", LLADA_TARGETS, 0.05), ("dream", ALL, 0.0),
    ("dream", ALL, 0.05), ("dream", (), 0.0)])
def test_no_grad_forward_peak(dtype, family, targets, dropout):
    """Sampling / evaluation forward (no dropout) and the actor's teacher forward (LoRA dropout on)."""
    args = llada() if family == "llada" else dream()
    net = net_of(args, dtype, LoRASpec(r=8, dropout=dropout, targets=targets) if targets else None)
    rows, T = 6, 48
    peak, _ = measure_forward(net, rows, T, grad=False, seeds=dropout > 0)
    c = dtype.itemsize
    planned = rows * T * P.nograd_token_bytes(args, c, targets=targets, r=8, dropout=dropout, rows=rows, T=T)
    assert close(peak, planned, 0.05), (peak, planned, planned / peak)  # traced op by op: within 0.3 % here


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("family, targets, dropout", [
    ("llada", None, 0.0), ("llada", LLADA_TARGETS, 0.05), ("llada", LLADA_TARGETS, 0.0), ("dream", ALL, 0.05),
    ("dream", None, 0.0)])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activations_saved_for_backward(dtype, family, targets, dropout, checkpointing):
    """The learner's micro-batch line: what the forward leaves for backward, per block and in total (full fine-tuning:
    every weight trains; LoRA: the base is frozen), with and without activation checkpointing."""
    args = llada(n_layers=3) if family == "llada" else dream(n_layers=3)
    net = net_of(args, dtype, LoRASpec(r=8, dropout=dropout, targets=targets) if targets else None)
    net.body.activation_checkpointing = checkpointing
    rows, T = 6, 48
    _, held = measure_forward(net, rows, T, grad=True, seeds=dropout > 0)
    c = dtype.itemsize
    per_layer = P.grad_layer_bytes(args, c, full=targets is None, targets=targets or (), r=8, dropout=dropout)
    final = 4 * args.dim + (2 * c * args.dim if targets is None else 0)
    if checkpointing:  # what stays after the forward: the block inputs (the recomputed block is the backward's)
        planned = rows * T * (args.n_layers * c * args.dim + final)
    else:
        planned = rows * T * (args.n_layers * per_layer + final)
    assert close(held, planned), (held, planned, planned / held)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_head_chunk_bytes(dtype):
    """The head over a chunk of positions: the actor's teacher targets (no grad) and the learner's recomputed chunk
    (forward + backward), measured with logsumexp's internal exp buffer (LiveBytes opens its kernel)."""
    args = llada(vocab_size=4096, n_layers=1)
    net = net_of(args, dtype)
    net.requires_grad_(False)  # LoRA: the head is frozen, the gradient flows to the hidden states
    n, c = 256, dtype.itemsize
    targets = torch.randint(0, args.vocab_size, (n,))
    with torch.no_grad(), LiveBytes() as m:
        net._target_logprob(torch.randn(n, args.dim, dtype=dtype), targets)
    planned = P.head_chunk_bytes(n, args.vocab_size, args.dim, c, grad=False)
    assert close(m.peak, planned, 0.02), (m.peak, planned)
    h = torch.randn(n, args.dim, dtype=dtype, requires_grad=True)
    with LiveBytes() as m:
        out = torch.utils.checkpoint.checkpoint(net._target_logprob, h, targets, use_reentrant=False)
        out.sum().backward()
    planned = P.head_chunk_bytes(n, args.vocab_size, args.dim, c, grad=True)
    assert close(m.peak, planned, 0.02), (m.peak, planned)


def test_live_bytes_sees_logsumexp_internal_buffer():
    """logsumexp's kernel holds (x - max).exp_() of its whole input: a reference count of that buffer + the result."""
    x = torch.randn(64, 1000)
    with LiveBytes() as m:
        torch.logsumexp(x, dim=-1)
    assert m.peak == 64 * 1000 * 4 + 64 * 4 and m.now == 0


@pytest.mark.parametrize("sampler", [
    dict(gumbel_dtype="float64"), dict(gumbel_dtype="model"), dict(temperature=0.0),
    dict(schedule="dream", remasking="entropy", top_p=0.95, gen_length=32, steps=16),
    dict(schedule="dream", remasking="entropy", temperature=0.0, gen_length=32, steps=16)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_draw_bytes(sampler, dtype):
    """The logits at N positions and the draw's temporaries (the samplers' own chunked draws on real logits), with a
    budget that cuts N = 64 positions into chunks of 16 and with one that draws them at once."""
    N, V = 64, 4096
    for budget_mb, chunk in ((16 * V * 8 * 8 / 2**20, 16), (1024, N)):
        s = SamplerConfig(**sampler, logits_budget_mb=budget_mb)
        assert min(N, draw_chunk(s, V)) == chunk
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad(), LiveBytes() as m:
            logits = torch.randn(N, V, dtype=dtype, generator=generator)
            logits[:, 1] = float("-inf")
            if s.schedule == "dream":
                draw_chunked(logits, s, generator, torch.float32, chunk)
            else:
                noise = torch.float64 if s.gumbel_dtype == "float64" else dtype
                draw_blocks(logits, s, generator, mask_id=1, noise=noise, conf_dtype=torch.float32, chunk=chunk)
        planned = P.draw_peak(s, dtype.itemsize, N, V)
        assert close(m.peak, planned, 0.02), (chunk, m.peak, planned, planned / m.peak)


def test_batch_row_bytes_is_the_arrow_table():
    B, prompt, L, J, M = 12, 40, 64, 8, 2
    g = torch.Generator().manual_seed(0)
    batch = RolloutBatch(
        prompt_ids=torch.randint(0, 100, (B, prompt), generator=g), prompt_len=torch.full((B,), prompt),
        completion_ids=torch.randint(0, 100, (B, L), generator=g), completion_mask=torch.ones(B, L, dtype=torch.bool),
        reveal_step=torch.zeros(B, L, dtype=torch.int32), group_id=torch.arange(B) // 6, reward=torch.rand(B),
        advantage=torch.rand(B), mask_seeds=torch.zeros(B, J, M, dtype=torch.int64), mask_row=torch.arange(B),
        mask_batch_rows=torch.full((B,), B), old_logp=torch.rand(B, J, M), ref_logp=torch.rand(B, J, M),
        policy_version=torch.zeros(B, dtype=torch.int64), prompt_uid=[f"sudoku-{i:05d}" for i in range(B)],
        task=["sudoku"] * B, text=["abcd" * L] * B)
    table = batch.to_arrow()
    assert close(table.nbytes, B * P.batch_row_bytes(prompt, L, J, M)), (table.nbytes, B * P.batch_row_bytes(
        prompt, L, J, M))


def test_checks_name_the_line_and_the_keys():
    _, _, plan = tiny_plan("learner.gpus_per_rank=1", "rollout.gpus_per_actor=1", "learner.micro_batch_rows=24",
                           "cluster.plan_prompt_tokens=4096", gpu_mem_gib=3.0)
    (problem,) = [p for p in P.problems(plan) if p.startswith("one learner rank")]
    assert "one learner rank needs" in problem and "'activations (micro-batch)'" in problem
    assert "learner.micro_batch_rows" in problem and "learner.activation_checkpointing" in problem
    _, _, fits = tiny_plan("learner.gpus_per_rank=1", "rollout.gpus_per_actor=1", gpu_mem_gib=24.0)
    assert P.problems(fits) == []
    # checkpointing shrinks the line it names
    _, _, ck = tiny_plan("learner.micro_batch_rows=24", "cluster.plan_prompt_tokens=4096",
                         "learner.activation_checkpointing=true")
    assert line(ck.learner, "activations (micro-batch)").bytes < line(plan.learner, "activations (micro-batch)").bytes


@pytest.mark.parametrize("overrides, actor_lines, learner_lines", [
    (("algorithm.name=gdsd",), {"reference copy", "teacher forward"}, set()),
    (("algorithm.name=gdsd", "algorithm.beta=0"), {"teacher forward"}, set()),
    (("algorithm.name=gdsd", "algorithm.teacher_source=learner"), {"reference copy", "teacher forward"},
     {"teacher forward (no grad)"}),
    (("algorithm.name=diffu_grpo", "algorithm.teacher_source=learner", "algorithm.beta=0.04"), set(),
     {"reference shard", "teacher forward (no grad)"}),
    (("algorithm.name=diffu_grpo", "algorithm.teacher_source=learner", "algorithm.beta=0"), set(),
     {"teacher forward (no grad)"}),
    (("algorithm.name=spg",), set(), set()),  # ratio-free, no KL: no teacher, no reference anywhere
    (("algorithm.name=gdsd", "model.lora.enabled=true"), {"teacher forward"}, set()),  # LoRA: adapters off, no copy
])
def test_teacher_and_reference_lines_follow_the_registry(overrides, actor_lines, learner_lines):
    """Full fine-tuning (sudoku_tiny): the S_old / S_ref lines sit where AlgorithmSpec.old_on / reference_on put the
    work, as docs/design.md's registry table says (actor: sequence-level; learner: teacher_source=learner, d1)."""
    _, _, plan = tiny_plan(*overrides)
    names = {"reference copy", "teacher forward", "reference shard", "teacher forward (no grad)"}
    assert {x.name for x in plan.actor.lines} & names == actor_lines
    assert {x.name for x in plan.learner.lines} & names == learner_lines


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "paper").glob("*.yaml")), ids=lambda p: p.stem)
def test_paper_configs_fit_one_h200(path):
    """Every paper config's actor and rank fit one H200 (140 GiB) at the real widths (deploy/shapes/)."""
    cfg = load_config(str(path))
    shapes = REPO / "deploy" / "shapes" / ("llada-8b-instruct.json" if cfg.model.family == "llada" or "llada" in
                                           path.stem else "dream-7b-instruct.json")
    plan = P.build_plan(cfg, P.model_args(cfg, shapes), gpu_mem_gib=140.0)
    assert P.problems(plan) == [], P.render(plan)
    assert "| **peak** |" in P.render(plan)


def test_cli_prints_the_tables(capsys):
    code = P.main(["--config", str(REPO / "configs" / "paper" / "gsm8k_llada_gdsd.yaml"), "--model-config",
                   str(REPO / "deploy" / "shapes" / "llada-8b-instruct.json"), "--gpu-mem-gib", "140", "--nodes", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    for title in ("rollout actor (one device)", "learner rank (one device)", "learner rank 0, host memory",
                  "object store"):
        assert f"| {title} | GiB |" in out
    assert P.main(["--config", str(REPO / "configs" / "paper" / "gsm8k_llada_gdsd.yaml"), "--model-config",
                   str(REPO / "deploy" / "shapes" / "llada-8b-instruct.json"), "--gpu-mem-gib", "140"]) == 1


def test_paper_table_plans_every_paper_config():
    rows = P.paper_table().splitlines()[2:]
    assert len(rows) == len(list((REPO / "configs" / "paper").glob("*.yaml")))
    assert all(row.count("|") == 12 for row in rows)
