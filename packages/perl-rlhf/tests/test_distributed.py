"""Data parallel: two gloo processes on the CPU end equal to one process on the whole batch
(reward training and one RL update of each algorithm, with whitening over the global batch)."""

import pytest
import torch
from perl_testlib import dp_case, dp_worker
from torch.multiprocessing.spawn import spawn

ALGORITHMS = ("reinforce", "rloo", "ppo")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_gloo_ranks_equal_one_process(tmp_path):
    spawn(dp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), ALGORITHMS), nprocs=2)
    for algorithm in ALGORITHMS:
        single, single_stats, single_rm = dp_case(algorithm)
        ranks = [torch.load(tmp_path / f"{algorithm}_{r}.pt") for r in range(2)]
        for params, stats, rm in ranks:
            for a, b in zip(params, single, strict=True):
                torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)
            for a, b in zip(rm, single_rm, strict=True):
                torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)
            for key in ("reward", "kl", "policy_loss", "response_length"):
                assert stats[key] == pytest.approx(single_stats[key], rel=1e-4, abs=1e-6), key
