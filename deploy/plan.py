"""The memory and traffic plan of a config on a cluster (docs/plan.md): what one rollout actor and one learner rank
hold on their device at their peak, rank 0's export peak in host memory, and the bytes that cross the object store per
step and per weight push. Every line carries the formula it evaluates, written from what the code allocates (traced
op by op: tests/deploy/test_plan.py measures each line on a real tiny model).

  python -m deploy.plan --config C [key=value ...] [--gpus-per-node 8 --gpu-mem-gib 140 --nodes 1]
                        [--model-config DIR_OR_config.json]

The start-up checks run the same plan (deploy/preflight.py::check_memory): a config whose actor or rank does not fit
its device fails before any actor exists, naming the line and the keys that shrink it.

Symbols: V vocab, H hidden, Lyr layers, qd = heads x head dim, kv = kv heads x head dim, F FFN, D head dim, c bytes of
model.dtype, r LoRA rank, P prompt tokens (cluster.plan_prompt_tokens), L gen length, T = P + L, G group size,
J mu, M num_mc, W learner ranks. Sizes in GiB (2^30 bytes).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.algorithms import get_algorithm
from common.config import ConfigError, RunConfig, load_config
from common.models.args import ModelArgs
from deploy.plan_sizes import (  # noqa: F401  (re-exported: the formulas are part of the plan's interface)
    base_params, batch_row_bytes, block_params, draw_bytes, draw_peak, grad_layer_bytes, head_chunk_bytes,
    lora_params, model_args, nograd_token_bytes, projections, root_params)

GIB = 2**30
HEAD_CHUNK = 2048  # DiffusionLM.forward's default `chunk`: positions per head + log_softmax pass
# what a device holds besides the plan: the CUDA context, cuBLAS / NCCL workspaces, the caching allocator's slack
DEVICE_RESERVE_GIB = 2.0
FRAGMENTATION = 0.05  # of the device, kept free for allocator fragmentation
# known memory of Ray's accelerator_type resource (GiB as torch reports it); types with several memory sizes
# (A100 40/80 GB, H100 80/94 GB) are not listed: give cluster.gpu_mem_gib for them
ACCELERATOR_GIB = {"H200": 140.0, "L40S": 44.4}


@dataclass(frozen=True)
class Line:
    name: str
    bytes: float
    formula: str
    keys: tuple[str, ...] = ()  # config keys that make it smaller
    phase: str | None = None  # None: held throughout; else held only during that phase (phases do not overlap)


@dataclass
class Section:
    title: str
    lines: list[Line] = field(default_factory=list)

    def peak(self) -> tuple[float, str | None]:
        """(bytes at the peak, the phase it is in): resident lines + the largest phase."""
        resident = sum(x.bytes for x in self.lines if x.phase is None)
        phases: dict[str, float] = {}
        for x in self.lines:
            if x.phase is not None:
                phases[x.phase] = phases.get(x.phase, 0.0) + x.bytes
        if not phases:
            return resident, None
        top = max(phases, key=phases.get)
        return resident + phases[top], top

    def worst_line(self) -> Line:
        """The largest line of the peak (resident or in the peak phase): what to shrink first."""
        _, phase = self.peak()
        return max((x for x in self.lines if x.phase in (None, phase)), key=lambda x: x.bytes)


@dataclass
class Plan:
    args: ModelArgs
    actor: Section
    learner: Section
    export: Section
    traffic: Section
    gpus_needed: int
    gpus_per_node: int
    nodes: int
    gpu_mem_gib: float | None
    actors_per_gpu: int
    ranks_per_gpu: int

    @property
    def usable_bytes(self) -> float | None:
        if self.gpu_mem_gib is None:
            return None
        return self.gpu_mem_gib * GIB * (1 - FRAGMENTATION) - DEVICE_RESERVE_GIB * GIB


# ---- the plan ------------------------------------------------------------------------------------------------------
def _gib(x: float) -> str:
    return f"{x / GIB:.3g}"


def build_plan(cfg: RunConfig, a: ModelArgs, *, gpus_per_node: int = 8, nodes: int = 1,
               gpu_mem_gib: float | None = None) -> Plan:
    m, s, r_cfg, lcfg, alg = cfg.model, cfg.sampler, cfg.rollout, cfg.learner, cfg.algorithm
    c = 2 if m.dtype == "bfloat16" else 4
    lora = m.lora.enabled
    targets = tuple(m.lora.target_modules) if lora else ()
    r = m.lora.r if lora else 0
    p_drop = m.lora.dropout if lora else 0.0
    V, H, Lyr = a.vocab_size, a.dim, a.n_layers
    P, L = cfg.cluster.plan_prompt_tokens, s.gen_length
    T = P + L
    G, J, M, W = r_cfg.group_size, alg.mu, alg.num_mc, lcfg.num_ranks
    n_base, n_lora = base_params(a), lora_params(a, r, targets)
    spec = get_algorithm(alg.name)
    push = (n_lora if lora else n_base) * c

    # ---- rollout actor ------------------------------------------------------------------------------------------
    actor = Section("rollout actor (one device)")
    actor.lines.append(Line("weights", (n_base + n_lora) * c, f"(N_base {n_base:.3g} + N_lora {n_lora:.3g}) x c {c}",
                            ("model.dtype",)))
    needs_ref = spec.reference_on(alg.beta) == "actor"
    if needs_ref and not lora:
        actor.lines.append(Line("reference copy", n_base * c, "N_base x c (full fine-tuning, beta > 0; LoRA: adapters "
                                "off, no copy)", ("model.lora.enabled", "algorithm.beta")))
    if cfg.pipeline.weight_sync == "broadcast":
        actor.lines.append(Line("staged push", push, "push bytes (received on the device, loaded before the next "
                                "rollout)", ("pipeline.weight_sync",)))
    rows_actor = math.ceil(r_cfg.prompts_per_step / r_cfg.num_actors) * G
    from actors.sampling import rows_per_call  # the sampler's own rule: what it will do
    import torch

    dtype = torch.bfloat16 if c == 2 else torch.float32
    _sampling_lines(actor, "sampling", a, s, c, rows=min(rows_per_call(s, vocab_size=V, dtype=dtype), rows_actor),
                    P=P, targets=targets, r=r)
    old_here = spec.old_on(alg.teacher_source) == "actor"  # the rules of actors/episode.py::teacher_targets
    if old_here or needs_ref:
        b = min(lcfg.micro_batch_rows, rows_actor)
        rows = 2 * b  # x_t and its complement
        drop = p_drop if old_here else 0.0  # the policy's forward runs LoRA dropout, the reference's none
        per_tok = nograd_token_bytes(a, c, targets=targets, r=r, dropout=drop, rows=rows, T=T)
        actor.lines.append(Line("teacher forward", rows * T * per_tok,
                                f"2 x {b} rows x T {T} x {per_tok:.0f} B/token (no-grad forward peak; LoRA dropout "
                                "hash included)", ("learner.micro_batch_rows", "cluster.plan_prompt_tokens"),
                                "teacher: body"))
        n = min(HEAD_CHUNK, b * L)
        actor.lines.append(Line("teacher head chunk", rows * T * H * c + head_chunk_bytes(n, V, H, c, grad=False),
                                f"final hidden 2 x {b} rows x T x c H + min({HEAD_CHUNK}, {b} x L {L}) x V x 8 "
                                "(float32 logits + logsumexp's float32 exp of them; the c-byte logits are freed by "
                                "then)",
                                ("learner.micro_batch_rows",), "teacher: head"))
    if cfg.eval.num_prompts:
        from deploy.evaluate import eval_sampler

        es = eval_sampler(cfg)
        rows_eval = math.ceil(cfg.eval.num_prompts / r_cfg.num_actors)
        _sampling_lines(actor, "evaluation", a, es, c, rows=min(rows_per_call(es, vocab_size=V, dtype=dtype),
                                                                 rows_eval), P=P, targets=targets, r=r)

    # ---- learner rank -------------------------------------------------------------------------------------------
    learner = Section("learner rank (one device)")
    if lora:
        learner.lines.append(Line("base shard", n_base * c / W, f"N_base x c / W {W} (frozen, compute dtype)",
                                  ("learner.num_ranks",)))
        learner.lines.append(Line("LoRA params + grads + AdamW", n_lora * 16 / W,
                                  "N_lora x (4 param + 4 grad + 8 exp_avg, exp_avg_sq) / W", ("learner.num_ranks",)))
        n_train = n_lora
    else:
        learner.lines.append(Line("master weights", n_base * 4 / W, "N_base x 4 / W (float32)", ("learner.num_ranks",)))
        learner.lines.append(Line("grads + AdamW", n_base * 12 / W, "N_base x (4 grad + 8 AdamW state) / W",
                                  ("learner.num_ranks",)))
        n_train = n_base
    if spec.reference_on(alg.beta) == "learner" and not lora:  # learner/worker.py: d1's per-token S_ref
        learner.lines.append(Line("reference shard", n_base * c / W, f"N_base x c / W {W} (frozen copy, full "
                                  "fine-tuning, beta > 0; LoRA: adapters off, no copy)",
                                  ("model.lora.enabled", "algorithm.beta", "learner.num_ranks")))
    blk = block_params(a) + lora_params(a, r, targets) / Lyr
    root = root_params(a)
    if W > 1:
        # every rank loads the whole checkpoint, then fully_shard replaces the blocks' tensors by shards one block at a
        # time and the root last: the peak is the loaded model, or the block shards + the root and its new shard
        cl = c if lora else 4
        peak = cl * max(n_base, Lyr * block_params(a) / W + root * (1 + 1 / W))
        learner.lines.append(Line("load (before sharding)", peak - n_base * cl / W,
                                  f"max(N_base, Lyr x block / W + root x (1 + 1/W)) x {cl} - the rank's own shard "
                                  "(every rank loads the whole checkpoint, then shards it)", (), "load"))
    nb = min(3, Lyr + 1)  # a block, the prefetched next one and the output of its gather
    gather = (root + nb * blk) * c
    formula = ("(root {:.3g} + {} blocks x {:.3g}) x c: the root stays gathered through the step, then a block, the "
               "prefetched next one and the all-gather output being copied into it").format(root, nb, blk)
    if not lora:
        gather += (root + blk) * 4
        formula += "; + (root + block) x 4 unsharded float32 grads before reduce-scatter"
    learner.lines.append(Line("all-gather buffers", gather, formula, ("learner.num_ranks",)))
    if root > (nb - 2) * blk:
        # the root's own all-gather, at the start of the forward (no activation exists yet): FSDP2 copies the gather's
        # output into the unsharded parameters while the first block's gather (output + copy) is in flight, so the
        # moment holds 2 x root + 2 blocks (measured at 8B widths: benchmarks/plan_check.py, the tensors at the peak)
        learner.lines.append(Line("root all-gather", (root - (nb - 2) * blk) * c,
                                  f"(root - {nb - 2} block) x c: the root's all-gather output while it is copied into "
                                  "the unsharded parameters, the first block's gather in flight (2 x root + 2 blocks "
                                  "at that moment, before any activation)", ("learner.num_ranks",), "gather"))
    token_path = not spec.sequence_level  # d1 / wd1: one forward of b rows (learner/token_update.py)
    b = lcfg.micro_batch_rows
    rows = b if token_path else 2 * b
    per_layer = grad_layer_bytes(a, c, full=not lora, targets=targets, r=r, dropout=p_drop)
    final = 4 * H + (2 * c * H if not lora else 0)
    if lcfg.activation_checkpointing:
        saved = rows * T * (Lyr * c * H + per_layer + final)
        f = (f"{rows} rows x T {T} x (Lyr {Lyr} x c H block inputs + one recomputed block {per_layer:.0f} B + "
             f"final norm {final} B)")
    else:
        saved = rows * T * (Lyr * per_layer + final)
        f = f"{rows} rows x T {T} x (Lyr {Lyr} x {per_layer:.0f} B/token/block + final norm {final} B)"
    f = ("d1 one-step forward: " if token_path else "x_t + complement: ") + f
    learner.lines.append(Line("activations (micro-batch)", saved, f,
                              ("learner.micro_batch_rows", "learner.activation_checkpointing"), "step"))
    n = min(HEAD_CHUNK, b * L)
    learner.lines.append(Line("head chunk", head_chunk_bytes(n, V, H, c, grad=True),
                              f"min({HEAD_CHUNK}, {b} x L) x (c H + 16 V): recomputed float32 logits + logsumexp's "
                              "backward (x - lse, its exp, the product), the input's grad",
                              ("learner.micro_batch_rows",), "step"))
    if spec.old_on(alg.teacher_source) == "learner":
        per_tok = nograd_token_bytes(a, c, targets=targets, r=r, rows=rows, T=T)
        learner.lines.append(Line("teacher forward (no grad)", rows * T * per_tok,
                                  f"{rows} rows x T {T} x {per_tok:.0f} B/token",
                                  ("learner.micro_batch_rows",), "teacher"))
    learner.lines.append(Line("AdamW step temporaries", n_train * 4 / W, "N_train x 4 / W (foreach AdamW: one float32 "
                              "shard-sized temporary)", ("learner.num_ranks",), "optimizer"))

    # ---- rank 0 export (host memory) ----------------------------------------------------------------------------
    export = Section("learner rank 0, host memory")
    if lora:
        export.lines.append(Line("push (adapters)", n_lora * (4 + c), "N_lora x (4 gathered float32 + c wire copy)",
                                 phase="push"))
        adapted = Lyr * sum(projections(a)[t][0] * projections(a)[t][1] for t in targets)
        largest = max(projections(a)[t][0] * projections(a)[t][1] for t in targets)
        export.lines.append(Line("HF export", n_base * c + n_lora * 4 + adapted * c + 12 * largest,
                                 "full state N_base x c + adapters x 4 + merged projections x c + the merge of the "
                                 "largest one in float32 (W, B A, the sum: 12 x in x out)", phase="export"))
    else:
        export.lines.append(Line("push (full state)", n_base * (4 + c), "N_base x (4 gathered float32 + c wire copy)",
                                 phase="push"))
        export.lines.append(Line("HF export", n_base * 4, "N_base x 4 (gathered float32 state)", phase="export"))

    # ---- object store ----------------------------------------------------------------------------------------------
    traffic = Section("object store")
    B = r_cfg.prompts_per_step * G
    per_row = batch_row_bytes(P, L, J, M)
    traffic.lines.append(Line("rollout batches per step", B * per_row,
                              f"B {B} rows x {per_row:.0f} B (ids 8 (P + L), reveal step 4 L, mask bits L / 8, "
                              "seeds 8 J M, S_old + S_ref 8 J M, row scalars, text ~4 L)"))
    traffic.lines.append(Line("weight push", push, ("N_lora" if lora else "N_base") + " x c (one copy per node)"))
    staleness = cfg.pipeline.max_staleness
    traffic.lines.append(Line("held at once", (staleness + 1) * B * per_row + 2 * push,
                              f"(max_staleness {staleness} + 1) steps of batches + 2 pushes (the new one while the "
                              "old is still read)"))

    gpus = r_cfg.num_actors * r_cfg.gpus_per_actor + W * lcfg.gpus_per_rank
    per_gpu = lambda g: max(1, math.floor(1 / g + 1e-9)) if 0 < g < 1 else 1  # noqa: E731
    return Plan(args=a, actor=actor, learner=learner, export=export, traffic=traffic, gpus_needed=math.ceil(gpus),
                gpus_per_node=gpus_per_node, nodes=nodes, gpu_mem_gib=gpu_mem_gib,
                actors_per_gpu=per_gpu(r_cfg.gpus_per_actor), ranks_per_gpu=per_gpu(lcfg.gpus_per_rank))


def _sampling_lines(section: Section, phase: str, a: ModelArgs, s, c: int, *, rows: int, P: int,
                    targets: tuple[str, ...], r: int) -> None:
    """A sampler call of `rows` rows: the forward over T = P + L tokens, then the logits at the N selected positions
    (the block, or the whole completion on Dream's schedule) and the draw's temporaries."""
    T = P + s.gen_length
    per_tok = nograd_token_bytes(a, c, targets=targets, r=r, rows=rows, T=T)
    keys = ("sampler.logits_budget_mb", "eval.num_prompts" if phase == "evaluation" else "rollout.prompts_per_step",
            "cluster.plan_prompt_tokens")
    section.lines.append(Line(f"{phase} forward", rows * T * per_tok,
                              f"{rows} rows x T {T} x {per_tok:.0f} B/token (no-grad forward peak)", keys,
                              f"{phase}: body"))
    positions = s.gen_length if s.schedule == "dream" else s.block_length
    per_elem, how = draw_bytes(s, c)
    N = rows * positions
    from actors.sampling.draw import draw_chunk  # the sampler's own rule

    chunk = min(N, draw_chunk(s, a.vocab_size))
    section.lines.append(Line(f"{phase} logits + draw", rows * T * a.dim * c + draw_peak(s, c, N, a.vocab_size),
                              f"final hidden {rows} rows x T x c H + logits {rows} rows x {positions} positions x V x "
                              f"c + a draw chunk of {chunk} positions x V x {per_elem - c} B ({how})",
                              ("sampler.logits_budget_mb",) + (("sampler.gumbel_dtype",) if "Gumbel" in how else ()),
                              f"{phase}: head"))


# ---- checks and rendering ------------------------------------------------------------------------------------------
FIX = {"rollout": "sampler.logits_budget_mb (rows per sampler call), learner.micro_batch_rows (teacher chunks), "
                  "sampler.gumbel_dtype=model, a whole GPU per actor (rollout.gpus_per_actor=1)",
       "learner": "learner.micro_batch_rows, learner.activation_checkpointing=true, more ranks (learner.num_ranks: a "
                  "smaller shard), a whole GPU per rank (learner.gpus_per_rank=1)"}


def problems(plan: Plan) -> list[str]:
    """What does not fit on a device (empty: every actor and rank fits, or no device memory is known)."""
    usable = plan.usable_bytes
    if usable is None:
        return []
    out = []
    for what, section, share, key in (("rollout", plan.actor, plan.actors_per_gpu, "rollout.gpus_per_actor"),
                                      ("learner", plan.learner, plan.ranks_per_gpu, "learner.gpus_per_rank")):
        peak, phase = section.peak()
        if peak * share > usable:
            worst = section.worst_line()
            shared = f" x {share} per GPU ({key})" if share > 1 else ""
            out.append(f"one {what} {'rank' if what == 'learner' else 'actor'} needs {_gib(peak)} GiB{shared} at its "
                       f"peak ({phase or 'resident'}), a GPU holds {_gib(usable)} GiB usable of {plan.gpu_mem_gib:g} "
                       f"GiB; the largest line is '{worst.name}' = {_gib(worst.bytes)} GiB ({worst.formula}); "
                       f"shrink it with {', '.join(worst.keys) or FIX[what]}; other levers: {FIX[what]}")
    return out


def render(plan: Plan, title: str = "") -> str:
    a = plan.args
    out = [f"### {title}" if title else "",
           f"model: {a.family}, V {a.vocab_size}, H {a.dim}, {a.n_layers} layers, {a.n_heads}/{a.n_kv_heads} heads, "
           f"F {a.ffn_dim}; {plan.gpus_needed} GPUs asked, {plan.nodes} x {plan.gpus_per_node} available; "
           f"GPU memory {plan.gpu_mem_gib if plan.gpu_mem_gib is not None else 'unknown'} GiB"
           + (f" ({_gib(plan.usable_bytes)} usable)" if plan.usable_bytes is not None else ""), ""]
    for section in (plan.actor, plan.learner, plan.export, plan.traffic):
        out += [f"| {section.title} | GiB | phase | formula |", "|---|---|---|---|"]
        out += [f"| {x.name} | {_gib(x.bytes)} | {x.phase or '-'} | {x.formula} |" for x in section.lines]
        if section is not plan.traffic:
            peak, phase = section.peak()
            out.append(f"| **peak** | **{_gib(peak)}** | {phase or '-'} | resident + largest phase |")
        out.append("")
    if plan.gpus_needed > plan.nodes * plan.gpus_per_node:
        out.append(f"**does not fit**: {plan.gpus_needed} GPUs asked, {plan.nodes * plan.gpus_per_node} available")
    for p in problems(plan):
        out.append(f"**does not fit**: {p}")
    return "\n".join(out)


SHAPES = Path(__file__).parent / "shapes"  # config.json shape fields of the released checkpoints


def paper_table(gpu_mem_gib: float = 140.0, gpus_per_node: int = 8) -> str:
    """docs/plan.md's table: every configs/paper/ file planned on one node of `gpus_per_node` GPUs, each with the
    released checkpoint's shapes (the deploy/shapes/ file whose mask token is the config's `model.mask_token_id`)."""
    shapes = {json.loads(f.read_text())["mask_token_id"]: f.stem for f in sorted(SHAPES.glob("*.json"))}
    rows = ["| config | model | GPUs asked | actor peak GiB (phase) | largest actor line | rank peak GiB (phase) | "
            "largest rank line | rank 0 host export GiB | batches / step MiB | push MiB | fits 1 x 8 H200 |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted((Path(__file__).parents[1] / "configs" / "paper").glob("*.yaml")):
        cfg = load_config(path)
        model = shapes[cfg.model.mask_token_id]
        plan = build_plan(cfg, model_args(cfg, SHAPES / f"{model}.json"), gpus_per_node=gpus_per_node,
                          gpu_mem_gib=gpu_mem_gib)
        (actor, a_phase), (rank, r_phase) = plan.actor.peak(), plan.learner.peak()
        a_line, r_line = plan.actor.worst_line(), plan.learner.worst_line()
        traffic = {x.name: x.bytes / 2**20 for x in plan.traffic.lines}
        short = problems(plan) or ([f"{plan.gpus_needed} GPUs"] if plan.gpus_needed > gpus_per_node else [])
        rows.append(f"| {path.stem} | {model} | {plan.gpus_needed} | {_gib(actor)} ({a_phase}) | {a_line.name} "
                    f"{_gib(a_line.bytes)} | {_gib(rank)} ({r_phase}) | {r_line.name} {_gib(r_line.bytes)} | "
                    f"{_gib(plan.export.peak()[0])} | {traffic['rollout batches per step']:.1f} | "
                    f"{traffic['weight push']:.0f} | {'no: ' + '; '.join(short) if short else 'yes'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="memory and traffic plan of a GDSD-RL config")
    parser.add_argument("--config", default=None)
    parser.add_argument("--model-config", default=None, help="config.json (or its directory) giving the model's "
                        "shapes when model.path is not on this machine (deploy/shapes/)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--gpu-mem-gib", type=float, default=None, help="default: cluster.gpu_mem_gib")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--paper-table", action="store_true", help="print docs/plan.md's table of every "
                        "configs/paper/ file on one node (--gpu-mem-gib, default 140; --gpus-per-node)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.paper_table:
        print(paper_table(args.gpu_mem_gib or 140.0, args.gpus_per_node))
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
        plan = build_plan(cfg, model_args(cfg, args.model_config), gpus_per_node=args.gpus_per_node,
                          nodes=args.nodes, gpu_mem_gib=args.gpu_mem_gib or cfg.cluster.gpu_mem_gib)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    print(render(plan, args.config or "defaults"))
    return 1 if problems(plan) or plan.gpus_needed > plan.nodes * plan.gpus_per_node else 0


if __name__ == "__main__":
    sys.exit(main())
