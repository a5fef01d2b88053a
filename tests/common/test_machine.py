"""common/machine.py: the CPU's name for records, and the intra-op threads of a phase (eval.torch_threads)."""
import threading

import pytest
import torch

from common.machine import cpu_name, intra_op_threads


def test_cpu_name_states_the_isa_and_cores():
    name = cpu_name()
    assert name.endswith(" cores)") and "(" in name


def test_intra_op_threads_sets_then_restores():
    before = torch.get_num_threads()
    with intra_op_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), intra_op_threads(before + 1):
        raise RuntimeError("an evaluation that fails")
    assert torch.get_num_threads() == before  # restored on error too
    with pytest.raises(ValueError, match="at least 1"), intra_op_threads(0):
        pass


def test_intra_op_threads_in_a_worker_thread():
    """Ray runs an actor's methods on its own threads, and torch's thread count is per OS thread once set: the count
    must take effect in the thread that evaluates, and be restored there."""
    seen = {}

    def evaluate():
        torch.set_num_threads(1)  # the actor's rollout.torch_threads
        with intra_op_threads(2):
            seen["inside"] = torch.get_num_threads()
            seen["matmul"] = float((torch.ones(64, 64) @ torch.ones(64, 64))[0, 0])
        seen["after"] = torch.get_num_threads()

    worker = threading.Thread(target=evaluate)
    worker.start()
    worker.join()
    assert seen == {"inside": 2, "matmul": 64.0, "after": 1}
