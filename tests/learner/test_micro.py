"""learner/micro.py: the micro-batches of a step are the actors' row chunks, pooled across batches, dealt to ranks,
padded so every rank runs as many forwards (pure bookkeeping, no model)."""
import torch

from common.batch import RolloutBatch
from learner.micro import drop_zero_advantage_groups, forward_units, plan_micro_batches, unit_count


def batch(rows: int, *, first_group: int = 0, group: int = 6, tag: int = 0) -> RolloutBatch:
    """A RolloutBatch of `rows` rows as one actor returns it (mask_row = position in that batch)."""
    L, P, J, M = 4, 3, 2, 1
    n = torch.arange(rows)
    return RolloutBatch(
        prompt_ids=torch.zeros(rows, P, dtype=torch.long), prompt_len=torch.full((rows,), P),
        completion_ids=torch.zeros(rows, L, dtype=torch.long), completion_mask=torch.ones(rows, L, dtype=torch.bool),
        reveal_step=torch.zeros(rows, L, dtype=torch.int32), group_id=first_group + n // group,
        reward=n.float() % 3, advantage=torch.zeros(rows), mask_seeds=torch.full((rows, J, M), 7 + tag),
        mask_row=n, mask_batch_rows=torch.full((rows,), rows), old_logp=torch.zeros(rows, J, M),
        ref_logp=torch.zeros(rows, J, M), policy_version=torch.zeros(rows, dtype=torch.long),
        prompt_uid=[f"{tag}:{i}" for i in range(rows)], task=["sudoku"] * rows, text=[""] * rows, reward_parts={},
        meta={})


def rows_of(micro: RolloutBatch) -> list[str]:
    return micro.prompt_uid


def test_units_are_the_actor_chunks():
    b = batch(14)
    units = forward_units(b, 4)
    assert [u.num_rows for u in units] == [4, 4, 4, 2]  # the chunks the actor used for S_old, in order
    assert [rows_of(u)[0] for u in units] == ["0:0", "0:4", "0:8", "0:12"]
    # filtered rows keep their chunk: a unit never mixes two of the actor's chunks
    kept = b.select([0, 1, 5, 6, 7, 13])
    assert [rows_of(u) for u in forward_units(kept, 4)] == [["0:0", "0:1"], ["0:5", "0:6", "0:7"], ["0:13"]]


def test_pooled_across_actor_batches_and_dealt_evenly():
    batches = [batch(12, tag=0), batch(18, first_group=2, tag=1)]  # two actors: 3 and 5 units of 4 rows
    assert unit_count([12, 18], 4) == 8
    plans = [plan_micro_batches(batches, rows=4, rank=r, world_size=3) for r in range(3)]
    assert [len(p) for p in plans] == [3, 3, 3]  # 8 units + 1 empty one: every rank runs 3 forwards
    assert [m.num_rows for m in plans[2]] == [4, 4, 0]
    seen = [u for p in plans for m in p for u in rows_of(m)]
    assert sorted(seen) == sorted(rows_of(batches[0]) + rows_of(batches[1]))  # every row exactly once
    for p in plans:  # a micro-batch holds rows of one actor batch only (its masks are that batch's)
        assert all(len({uid.split(":")[0] for uid in rows_of(m)}) <= 1 for m in p)


def test_group_normalised_units_hold_whole_groups():
    b = batch(24)  # 4 groups of 6
    units = forward_units(b, 12)
    assert [u.group_id.unique().tolist() for u in units] == [[0, 1], [2, 3]]
    kept, dropped = drop_zero_advantage_groups(batch(12, group=6))
    assert dropped == 0 and kept.num_rows == 12
    flat = batch(12)
    flat.reward = torch.tensor([1.0] * 6 + [0.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # group 0 has no variance
    kept, dropped = drop_zero_advantage_groups(flat)
    assert dropped == 6 and kept.group_id.unique().tolist() == [1]
    assert [u.num_rows for u in forward_units(kept, 12)] == [6]


def test_a_step_smaller_than_the_ranks_gives_empty_micro_batches():
    plans = [plan_micro_batches([batch(5)], rows=8, rank=r, world_size=2) for r in range(2)]
    assert [[m.num_rows for m in p] for p in plans] == [[5], [0]]
    assert plan_micro_batches([], rows=8, rank=0, world_size=2) == []
