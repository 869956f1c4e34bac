"""torchrun on CPU (gloo): FSDP2 and DDP with 2 processes match 1 process with the same global
batch; gradient accumulation matches a larger batch; a sharded checkpoint written by 2 processes
(killed with SIGKILL) resumes on 2 processes bit for bit with the uninterrupted 2-process run,
and on 1 process with the 1-process run's losses (float tolerance: the sums differ in order)."""

import shutil

import pytest


def assert_close(a, b, tol=2e-5):
    assert [s for s, *_ in a] == [s for s, *_ in b]
    for (_, la, va), (_, lb, vb) in zip(a, b):
        assert abs(la - lb) <= tol * max(1.0, abs(lb)), (la, lb)
        assert (va is None) == (vb is None)
        if va is not None:
            assert abs(va - vb) <= tol * max(1.0, abs(vb))


@pytest.fixture(scope="module")
def single(tmp_path_factory, tokens, runs):
    out = tmp_path_factory.mktemp("single") / "run"
    runs.finish(runs.pretrain(out, tokens))
    return runs.losses(out)


@pytest.fixture(scope="module")
def two_fsdp(tmp_path_factory, tokens, runs):
    out = tmp_path_factory.mktemp("two-fsdp") / "run"
    runs.finish(runs.pretrain(out, tokens, "--train.parallel", "fsdp", nproc=2, batch=4))
    return runs.losses(out)


@pytest.mark.slow
def test_two_processes_fsdp_match_one(two_fsdp, single):
    assert_close(two_fsdp, single)


@pytest.mark.slow
def test_two_processes_ddp_match_one(tmp_path, tokens, single, runs):
    runs.finish(runs.pretrain(tmp_path / "ddp", tokens, "--train.parallel", "ddp", nproc=2,
                              batch=4))
    assert_close(runs.losses(tmp_path / "ddp"), single)


@pytest.mark.slow
def test_grad_accumulation_matches_larger_batch(tmp_path, tokens, single, runs):
    runs.finish(runs.pretrain(tmp_path / "accum", tokens, "--train.grad_accum", "2", batch=4))
    assert_close(runs.losses(tmp_path / "accum"), single)


@pytest.mark.slow
def test_sharded_checkpoint_resumes_on_two_and_on_one_process(tmp_path, tokens, single, two_fsdp,
                                                              runs):
    two = tmp_path / "two"
    runs.kill_after_checkpoint(
        runs.pretrain(two, tokens, "--train.parallel", "fsdp", nproc=2, batch=4), two
    )
    ckpt = next((two / "checkpoints").glob("step-*")) / "trainer_state" / "dcp"
    assert len(list(ckpt.glob("*.distcp"))) == 2  # one shard file per rank
    one = tmp_path / "one"
    one.mkdir()
    shutil.copytree(two / "checkpoints", one / "checkpoints")
    runs.finish(runs.pretrain(one, tokens))  # resumes the 2-process checkpoint on 1 process
    runs.finish(runs.pretrain(two, tokens, "--train.parallel", "fsdp", nproc=2, batch=4))
    assert_close(runs.losses(one)[-1:], single[-1:])
    assert runs.losses(two) == two_fsdp  # bit for bit: same world size, same reduction order
