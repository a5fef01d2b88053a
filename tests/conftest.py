"""Shared fixtures: one local loopback-only Ray instance per test session, tiny models made on the fly."""
from __future__ import annotations

from common import cluster

cluster.local_env()  # before anything imports ray (common/cluster.py)
# ruff: noqa: E402

import pytest
import ray


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance bound to 127.0.0.1 with 8 logical CPUs (scheduling units, not cores), shut down at the end
    of the session."""
    cluster.init_ray(num_cpus=8)  # logical CPUs: actors, reward workers and learner ranks at once
    yield ray
    ray.shutdown()


TINY_TEST_MODEL = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_positions=256, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A freshly initialised tiny dLLM (the native model, LLaDA layout) + char tokenizer, saved to disk."""
    from common.config import TinyModelConfig
    from common.tiny import make_tiny_model

    return str(make_tiny_model(TinyModelConfig(**TINY_TEST_MODEL), tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="session")
def denoiser(tiny_model_dir):
    from common.config import ModelConfig
    from common.denoiser import load_denoiser

    return load_denoiser(ModelConfig(), tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def with_shift(denoiser):
    """The session denoiser's weights seen as LLaDA-style (shift=False) or Dream-style (shift=True)."""
    from common.denoiser import Denoiser

    def view(shift: bool) -> Denoiser:
        return Denoiser.wrap(denoiser.model, denoiser.tokenizer, mask_id=denoiser.mask_id, eos_id=denoiser.eos_id,
                             shift=shift)

    return view
