"""batchop.observability.memory: the heap trim runs, and at most once per interval."""

from __future__ import annotations

from batchop.observability import memory


def test_release_trims_at_most_once_per_interval() -> None:
    memory._last = float("-inf")
    assert memory.release(now=1000.0) is True, "glibc's malloc_trim should be found on Linux"
    assert memory.release(now=1000.0 + memory.MIN_INTERVAL / 2) is False
    assert memory.release(now=1000.0 + memory.MIN_INTERVAL + 1) is True


async def test_small_tls_buffers_applies_to_new_tls_connections() -> None:
    import asyncio
    import asyncio.sslproto
    import ssl

    default = asyncio.sslproto.SSLProtocol.max_size  # 256 KiB unless changed
    try:
        memory.small_tls_buffers()
        loop = asyncio.get_running_loop()
        proto = asyncio.sslproto.SSLProtocol(loop, asyncio.Protocol(), ssl.create_default_context(), None)
        assert len(proto._ssl_buffer) == memory.TLS_READ_BUFFER == 64 * 1024
    finally:
        asyncio.sslproto.SSLProtocol.max_size = default


def test_tune_gc_freezes_what_is_alive_and_keeps_the_thresholds() -> None:
    import gc

    before = gc.get_threshold()
    try:
        memory.tune_gc()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_collector_clock_times_collections_by_generation() -> None:
    import gc

    from prometheus_client import CollectorRegistry

    from batchop.observability.metrics import Metrics

    clock = memory.CollectorClock()
    clock.install()
    clock.install()  # once only
    try:
        assert gc.callbacks.count(clock) == 1
        gc.collect(2)
        gc.collect(1)
        assert clock.collections[2] == 1 and clock.collections[1] == 1
        assert clock.seconds[2] > 0 and clock.seconds[1] > 0
    finally:
        gc.callbacks.remove(clock)
    # exported as batchop_gc_seconds_total{generation}
    registry = CollectorRegistry()
    Metrics(registry)
    assert registry.get_sample_value("batchop_gc_seconds_total", {"generation": "2"}) is not None


def test_settle_freezes_once_there_are_many_resources_and_again_when_they_doubled() -> None:
    import gc

    memory._frozen_at = 0
    try:
        assert memory.settle(memory.FREEZE_FROM - 1) is False and gc.get_freeze_count() == 0
        assert memory.settle(memory.FREEZE_FROM) is True
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert memory.settle(2 * memory.FREEZE_FROM - 1) is False, "not doubled yet"
        kept = [[i] for i in range(1000)]  # alive now: frozen by the next settle
        assert memory.settle(2 * memory.FREEZE_FROM) is True
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        gc.unfreeze()
        memory._frozen_at = 0


async def test_collector_paused_is_reentrant_across_coroutines() -> None:
    """Two status cycles (two accounts) interleave: the collector stays paused until the last one leaves, and
    a block that raises resumes it all the same."""
    import asyncio
    import gc

    assert gc.isenabled()
    first_in, second_in, first_out = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: list[tuple[str, bool]] = []

    async def first() -> None:
        with memory.collector_paused():
            first_in.set()
            await second_in.wait()
        seen.append(("first left", gc.isenabled()))
        first_out.set()

    async def second() -> None:
        await first_in.wait()
        with memory.collector_paused():
            second_in.set()
            await first_out.wait()
            seen.append(("second inside", gc.isenabled()))
        seen.append(("second left", gc.isenabled()))

    await asyncio.gather(first(), second())
    assert seen == [("first left", False), ("second inside", False), ("second left", True)]
    try:
        with memory.collector_paused():
            raise RuntimeError("a failed cycle")
    except RuntimeError:
        pass
    assert gc.isenabled()


def test_collector_paused_leaves_a_pause_it_did_not_make_alone() -> None:
    import gc

    gc.disable()
    try:
        with memory.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "paused by the caller: the caller resumes it"
    finally:
        gc.enable()
