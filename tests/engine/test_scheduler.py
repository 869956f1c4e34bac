"""The scheduler alone (no model): token budget, chunked prefill, decodes first, preemption."""

from fullchain.engine.kv_manager import KVBlockManager
from fullchain.engine.params import SamplingParams
from fullchain.engine.scheduler import Scheduler, Sequence, Status


def seq(name: str, n: int) -> Sequence:
    return Sequence(name, name, 0, n, list(range(1, n + 1)), SamplingParams())


def run(sched: Scheduler) -> list[tuple[str, int, int]]:
    """One step with a fake model: every scheduled chunk is computed, samplers append a token."""
    out = sched.schedule()
    for c in out.chunks:
        sched.advance(c)
        if c.sample:
            c.seq.token_ids.append(7)
    return [(c.seq.seq_id, c.start, c.num_tokens) for c in out.chunks]


def test_long_prompt_is_chunked_and_decodes_keep_running():
    sched = Scheduler(KVBlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=10)
    short = seq("short", 3)
    sched.add(short)
    assert run(sched) == [("short", 0, 3)]
    sched.add(seq("long", 25))
    steps = [run(sched) for _ in range(3)]
    # the decode goes first every step; the long prompt takes the rest of the budget
    assert steps == [[("short", 3, 1), ("long", 0, 9)], [("short", 4, 1), ("long", 9, 9)],
                     [("short", 5, 1), ("long", 18, 7)]]
    assert all(sum(n for *_, n in s) <= 10 for s in steps)


def test_preemption_frees_the_latest_and_requeues_it_first():
    kv = KVBlockManager(4, 4)
    sched = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64)
    a, b = seq("a", 8), seq("b", 8)
    sched.add(a)
    sched.add(b)
    run(sched)  # both prefilled: 2 blocks each, pool full
    assert kv.num_free == 0
    out = sched.schedule()  # a needs a third block: b (admitted later) is preempted
    assert out.preempted == [b] and [c.seq for c in out.chunks] == [a]
    assert b.status is Status.WAITING and b.num_computed == 0 and not b.block_table
    assert sched.waiting[0] is b and b.token_ids[-1] == 7  # its output is kept
    sched.finish(a, "stop")
    # recomputed from prompt + output, its full blocks still in the prefix cache
    assert run(sched) == [("b", 8, 1)]
    sched.finish(b, "stop")
    kv.check_all_free()
