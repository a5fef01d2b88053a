import pyarrow as pa
import pytest
import torch

from common.batch import RolloutBatch


def make_batch(B=6, P=5, L=8, J=3, M=2, seed=0, nan_ref=True) -> RolloutBatch:
    g = torch.Generator().manual_seed(seed)
    return RolloutBatch(
        prompt_ids=torch.randint(0, 100, (B, P), generator=g), prompt_len=torch.randint(1, P + 1, (B,), generator=g),
        completion_ids=torch.randint(0, 100, (B, L), generator=g), completion_mask=torch.rand(B, L, generator=g) > 0.5,
        reveal_step=torch.randint(0, 8, (B, L), generator=g, dtype=torch.int32),
        group_id=torch.arange(B) // 3, reward=torch.rand(B, generator=g), advantage=torch.randn(B, generator=g),
        mask_seeds=torch.randint(0, 2**62, (J, M), generator=g).expand(B, -1, -1).contiguous(),
        mask_row=torch.arange(B), mask_batch_rows=torch.full((B,), B), old_logp=torch.randn(B, J, M, generator=g),
        ref_logp=torch.full((B, J, M), float("nan")) if nan_ref else torch.randn(B, J, M, generator=g),
        policy_version=torch.full((B,), 3),
        prompt_uid=[f"u{i // 3}" for i in range(B)], task=["sudoku"] * B, text=[f"t{i}é" for i in range(B)],
        reward_parts={"correct": torch.rand(B, generator=g), "format": torch.rand(B, generator=g)},
        meta={"actor": 1, "seconds": {"generate": 0.5}},
    )


def assert_same(a: RolloutBatch, b: RolloutBatch):
    for name, value in vars(a).items():
        other = getattr(b, name)
        if isinstance(value, torch.Tensor):
            assert value.dtype == other.dtype and value.shape == other.shape, name
            assert torch.equal(value.nan_to_num(7.0), other.nan_to_num(7.0)), name
        elif name == "reward_parts":
            assert value.keys() == other.keys() and all(torch.equal(value[k], other[k]) for k in value)
        else:
            assert value == other, name


def test_round_trip_arrow_torch_arrow():
    batch = make_batch()
    table = batch.to_arrow()
    back = RolloutBatch.from_arrow(table)
    assert_same(batch, back)
    finite = make_batch(nan_ref=False).to_arrow()  # Table.equals treats NaN != NaN
    assert RolloutBatch.from_arrow(finite).to_arrow().equals(finite, check_metadata=True)


def test_round_trip_through_ipc_and_ray_object_store(ray_local):
    batch = make_batch()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.to_arrow().schema) as writer:
        writer.write_table(batch.to_arrow())
    assert_same(batch, RolloutBatch.from_arrow(pa.ipc.open_stream(sink.getvalue()).read_all()))
    assert_same(batch, RolloutBatch.from_arrow(ray_local.get(ray_local.put(batch.to_arrow()))))


def test_select_and_concat():
    a, b = make_batch(seed=0), make_batch(seed=1)
    both = RolloutBatch.concat([a, b])
    assert both.num_rows == 12
    assert_same(both.select(slice(6, 12)), RolloutBatch(**{**vars(b), "meta": both.meta}))
    assert both.select([1, 7]).text == [a.text[1], b.text[1]]
    with pytest.raises(ValueError, match="different"):
        RolloutBatch.concat([a, make_batch(P=7)])
