"""The rollout side with LoRA (in-process, no Ray): the reference is the policy's own net with adapters off, the
weight format is the adapters only, and a push that is not exactly the adapters is refused by name."""
import pytest
import torch

from actors.engine import PolicyEngine
from common.config import load_config
from common.models.lora import is_adapter

LORA = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8"]


def test_engine_holds_one_copy_and_takes_adapter_pushes(tiny_model_dir):
    # gdsd, beta 1e-3: needs a reference
    engine = PolicyEngine(load_config(None, LORA), tiny_model_dir, device=torch.device("cpu"))
    assert engine.reference is not None and engine.reference.net is engine.policy.net
    assert engine.reference.adapters is False and engine.policy.adapters is True
    like = engine.wire_like()
    assert like and all(is_adapter(k) for k in like) and all(v.device.type == "meta" for v in like.values())
    state = engine.policy.net.state_dict()
    push = {k: torch.full(like[k].shape, 0.01) for k in like}
    assert engine.load(push, 3) == 3
    assert torch.equal(engine.policy.net.state_dict()["body.blocks.0.wq.lora_B"], push["body.blocks.0.wq.lora_B"])
    assert torch.equal(engine.policy.net.state_dict()["body.blocks.0.wq.weight"], state["body.blocks.0.wq.weight"])
    with pytest.raises(ValueError, match="adapter tensors"):
        engine.load(engine.policy.net.state_dict(), 4)  # a full state dict is not an adapter push
    with pytest.raises(ValueError, match="missing"):
        engine.load({k: v for k, v in push.items() if "blocks.0." not in k}, 4)


def test_engine_without_lora_pushes_everything(tiny_model_dir):
    engine = PolicyEngine(load_config(None), tiny_model_dir, device=torch.device("cpu"))
    assert set(engine.wire_like()) == set(engine.policy.net.state_dict())
    assert engine.reference is None or engine.reference.net is not engine.policy.net
