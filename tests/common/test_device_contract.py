"""The device contract (common/devices.py) and the GPU path of the services, on a CPU-only machine.

The decisions (which device, which backend, which generator) are pure functions tested here; the services themselves
run on a simulated accelerator (tests/simulated_device.py) in a subprocess: a tensor, generator or collective on the
wrong device fails there exactly where it would on a GPU (issue 20: each defect of the GPU read-through has a check).
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actors.sampling import rows_per_call
from common.config import load_config
from common.devices import bus_backend, group_backend, local_index, make_generator, service_device

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ["rollout_actor_places_engine_and_noise", "sampling_noise_drawn_on_the_device",
          "rollout_at_temperature_one_both_schedules",
          "evaluation_in_bounded_row_chunks", "weight_bus_between_cpu_and_device_members",
          "learner_step_on_the_device", "sandwich_and_token_paths_on_the_device", "bf16_teacher_gap_is_zero",
          "sft_step_on_the_device"]


FACTORIES = {"zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn", "randint", "linspace", "eye",
             "randperm", "as_tensor"}


def test_service_code_names_the_device_of_every_tensor_it_creates():
    """A tensor made without `device=` lands on the CPU whatever device the service runs on (issue 20: the learner's
    metric and teacher-gap tensors, all-reduced over NCCL). Every factory call in the services names its device; the
    few whose device comes from a construction context say so in a `# device:` comment."""
    import ast

    unnamed = []
    for package in ("actors", "learner", "common"):
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in FACTORIES and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == "torch" and not any(k.arg == "device" for k in node.keywords)
                        and "# device:" not in lines[node.lineno - 1]):
                    unnamed.append(f"{path.relative_to(ROOT)}:{node.lineno} torch.{node.func.attr}")
    assert not unnamed, unnamed


def test_local_index_follows_rays_visible_devices():
    assert local_index([5], "4,5,6") == 1  # Ray restricts CUDA_VISIBLE_DEVICES: the id's position is the index
    assert local_index(["3"], None) == 3  # nothing restricted: the id itself
    assert local_index([2], "0,1") == 2
    with pytest.raises(ValueError):
        local_index([], "0")


def test_cpu_service_and_generators():
    assert service_device(0, what="rollout.gpus_per_actor") == torch.device("cpu")
    with pytest.raises(RuntimeError, match=r"rollout.gpus_per_actor=1 but this process sees no accelerator"):
        service_device(1, what="rollout.gpus_per_actor")  # a CPU build of torch: an error, never a silent CPU run
    assert make_generator("cpu", 3).initial_seed() == 3


def test_backends_per_device_type():
    assert group_backend(torch.device("cpu")) == "gloo"
    assert group_backend(torch.device("cuda", 0)) == "cpu:gloo,cuda:nccl"  # CPU tensors never reach NCCL
    assert bus_backend(["cuda", "cuda", "cuda"]) == "nccl"
    assert bus_backend(["cuda", "cpu", "cuda"]) == "gloo"  # one member on the CPU: gloo for every member
    assert bus_backend(["cpu", "cpu"]) == "gloo"


def test_dream_paper_evaluation_is_chunked_to_the_budget():
    """The Dream paper configs evaluate 256 prompts: one sampler call would hold logits for 65,536 masked positions
    x 152,064 vocab (19.9 GB in bf16). In chunks, each call's logits fit sampler.logits_budget_mb."""
    cfg = load_config(ROOT / "configs/paper/sudoku_dream_gdsd.yaml")
    rows = rows_per_call(cfg.sampler, vocab_size=152064, dtype=torch.bfloat16)
    assert 1 <= rows < cfg.eval.num_prompts
    assert rows * cfg.sampler.gen_length * 152064 * 2 <= cfg.sampler.logits_budget_mb * 2**20


@pytest.fixture(scope="module")
def simulated_run():
    """Every check of tests/simulated_device_checks.py, in one subprocess (the simulated device is process-wide)."""
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "simulated_device_checks.py")], cwd=ROOT,
                         capture_output=True, text=True, timeout=1200)
    results = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            results[record["check"]] = record
    assert results, f"the checks printed nothing (rc {out.returncode}): {out.stderr[-3000:]}"
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKS)
def test_gpu_path_on_a_simulated_accelerator(simulated_run, name):
    record = simulated_run.get(name)
    assert record is not None, f"check {name} did not run"
    assert record["ok"], f"{record['error']}\n{record.get('trace', '')}"
