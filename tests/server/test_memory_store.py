"""The in-process session store: lifecycle, immutability, atomicity, idempotency, expiry, cap."""

from __future__ import annotations

import dataclasses
import pickle
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import crossgrad.engine as cg
import numpy as np
import pytest
from crossgrad.engine.check import CheckMode
from crossgrad.engine.errors import CrossgradError, InvalidArgument, LimitExceeded
from crossgrad.server.errors import LeafNotFound, RequestIdReused, SessionNotFound
from crossgrad.server.memory_store import MemoryStore
from crossgrad.server.sessions import (
    Change,
    LeafState,
    Remembered,
    Session,
    SessionStore,
    StoreConfig,
)

WAIT = 10.0  # seconds before a test that should not block gives up: a hang fails, never a slow run


class FakeClock:
    """A clock that only moves when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(StoreConfig(max_sessions=4, max_request_ids=3), clock=clock)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=40) as executor:
        yield executor


def with_leaf(store: SessionStore, value: float = 0.0) -> str:
    """A new session holding leaf "w" (requires_grad) with a zero grad; its id."""
    session_id = store.create().id

    def put(session: Session) -> tuple[Session, None]:
        leaf = LeafState(np.array(value, np.float32), requires_grad=True,
                         grad=np.zeros((), np.float32))
        return session.with_leaves({"w": leaf}), None

    store.update(session_id, put)
    return session_id


def add_grad(delta: float, calls: list[int] | None = None) -> Change[float]:
    """A change adding ``delta`` to w.grad, returning the new grad; ``calls`` counts its runs."""

    def change(session: Session) -> tuple[Session, float]:
        if calls is not None:
            calls.append(1)
        leaf = session.leaf("w").accumulate(np.float32(delta))
        assert leaf.grad is not None
        return session.with_leaves({"w": leaf}), float(leaf.grad)

    return change


def held(change: Change[float]) -> tuple[Change[float], threading.Event, threading.Event]:
    """``change``, made to wait inside the store's update: (the held change, an event set once
    it has entered, an event that lets it finish)."""
    entered, release = threading.Event(), threading.Event()

    def waiting(session: Session) -> tuple[Session, float]:
        entered.set()
        assert release.wait(WAIT)
        return change(session)

    return waiting, entered, release


def assign(target: object, name: str, value: object) -> None:
    """``target.name = value``, for asserting that it is refused."""
    setattr(target, name, value)


def w_grad(session: Session) -> float:
    g = session.leaf("w").grad
    assert g is not None
    return float(g)


def grad(store: SessionStore, session_id: str) -> float:
    return w_grad(store.get(session_id))


# --- create / get / delete ---------------------------------------------------------------------

def test_create_defaults_and_unguessable_ids(store: MemoryStore) -> None:
    a, b = store.create(), store.create()
    assert (a.dtype, a.check, a.idle_ttl, dict(a.leaves), a.owner) == (
        cg.float32, "STRICT", store.config.default_idle_ttl, {}, None)
    assert a.id != b.id and len(a.id) >= 32
    assert store.get(a.id).id == a.id


def test_create_with_settings(store: MemoryStore) -> None:
    session = store.create(cg.float64, "REPORT", 60.0)
    got = store.get(session.id)
    assert (got.dtype, got.check, got.idle_ttl) == (cg.float64, "REPORT", 60.0)


@pytest.mark.parametrize("kwargs", [
    {"dtype": cg.int64}, {"check": "LOOSE"}, {"idle_ttl": 0.0}, {"idle_ttl": -1.0},
    {"idle_ttl": float("nan")},
])
def test_create_rejects_bad_settings(store: MemoryStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as info:
        store.create(**kwargs)
    assert info.value.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize("asked", [10.0**9, float("inf")])
def test_an_idle_ttl_past_the_maximum_is_capped(store: MemoryStore, asked: float) -> None:
    assert store.create(idle_ttl=asked).idle_ttl == store.config.max_idle_ttl


def test_a_sessions_check_mode_is_the_engines() -> None:
    assert Session("s", check="OFF").check is CheckMode.OFF
    with pytest.raises(InvalidArgument, match="unknown check mode 'strictest'"):
        Session("s", check="strictest")


def test_delete_removes_the_session(store: MemoryStore) -> None:
    session_id = with_leaf(store)
    store.delete(session_id)
    with pytest.raises(SessionNotFound):
        store.get(session_id)
    with pytest.raises(SessionNotFound):
        store.update(session_id, add_grad(1.0))
    with pytest.raises(SessionNotFound):
        store.delete(session_id)


@pytest.mark.parametrize("call", ["get", "update", "delete"])
def test_unknown_id_is_not_found_without_echoing_the_token(store: MemoryStore, call: str) -> None:
    token = "x" * 40
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: store.get(token),
        "update": lambda: store.update(token, add_grad(1.0)),
        "delete": lambda: store.delete(token),
    }
    with pytest.raises(SessionNotFound) as info:
        calls[call]()
    error = info.value
    assert isinstance(error, CrossgradError) and error.status == "NOT_FOUND"
    assert "xxxxxxxx…" in str(error) and token not in str(error)
    assert error.session_id == token


def test_missing_leaf_is_leaf_not_found(store: MemoryStore) -> None:
    session = store.get(with_leaf(store))
    with pytest.raises(LeafNotFound, match="no leaf named 'b'") as info:
        session.leaf("b")
    assert info.value.status == "NOT_FOUND" and info.value.name == "b"
    with pytest.raises(LeafNotFound) as long_name:
        session.leaf("n" * 10_000)
    assert len(str(long_name.value)) < 200


def test_other_owners_sessions_are_not_found(store: MemoryStore) -> None:
    session = store.create(owner="alice")
    assert store.get(session.id, owner="alice").owner == "alice"
    for owner in ("bob", None):
        with pytest.raises(SessionNotFound):
            store.get(session.id, owner=owner)
        with pytest.raises(SessionNotFound):
            store.update(session.id, lambda s: (s, None), owner=owner)
        with pytest.raises(SessionNotFound):
            store.delete(session.id, owner=owner)
    store.delete(session.id, owner="alice")


# --- immutable snapshots -----------------------------------------------------------------------

def test_snapshots_are_immutable(store: MemoryStore) -> None:
    session = store.get(with_leaf(store, 3.0))
    leaf = session.leaf("w")
    with pytest.raises(ValueError, match="read-only"):
        leaf.value[...] = 7.0
    assert leaf.grad is not None
    with pytest.raises(ValueError, match="read-only"):
        leaf.grad[...] = 7.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        assign(leaf, "version", 9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        assign(session, "check", "OFF")
    with pytest.raises(TypeError):
        cast(dict[str, LeafState], session.leaves)["w"] = leaf


def test_a_snapshot_does_not_see_later_updates(store: MemoryStore) -> None:
    session_id = with_leaf(store)
    before = store.get(session_id)
    store.update(session_id, add_grad(2.0))
    assert w_grad(before) == 0.0
    assert grad(store, session_id) == 2.0


def test_leaf_values_are_copied_from_writable_arrays() -> None:
    source = np.ones(3, dtype=np.float32)
    leaf = LeafState(source)
    source[0] = 5.0
    assert leaf.value.tolist() == [1.0, 1.0, 1.0]
    view = np.ones(2)
    read_only_view = view[:]
    read_only_view.flags.writeable = False
    frozen = LeafState(read_only_view).value
    view[0] = 5.0  # writes through the view's writable base: the leaf must not see it
    assert frozen.tolist() == [1.0, 1.0]
    assert LeafState(frozen).value is frozen  # already immutable: shared, not copied


def test_versions_count_value_and_requires_grad_changes_only() -> None:
    leaf = LeafState(np.zeros(2), requires_grad=False)
    assert leaf.version == 0
    assert leaf.with_requires_grad(False) is leaf
    leaf = leaf.with_requires_grad(True)
    assert leaf.version == 1 and leaf.requires_grad
    leaf = leaf.with_value(np.ones(2))
    assert leaf.version == 2 and leaf.value.tolist() == [1.0, 1.0]
    leaf = leaf.accumulate(np.ones(2)).accumulate(np.ones(2)).with_grad(None).accumulate(np.ones(2))
    assert leaf.version == 2 and leaf.grad is not None and leaf.grad.tolist() == [1.0, 1.0]


def test_grad_must_match_the_value_shape() -> None:
    with pytest.raises(InvalidArgument, match=r"grad of shape \[3\] for a leaf of shape \[2\]"):
        LeafState(np.zeros(2), grad=np.zeros(3))


def test_sessions_pickle_and_stay_immutable() -> None:
    session = Session("id", cg.float64, "OFF", 5.0, "alice").with_leaves(
        {"w": LeafState(np.arange(3.0), True)})
    copy = pickle.loads(pickle.dumps(session))
    assert (copy.id, copy.dtype, copy.check, copy.idle_ttl, copy.owner) == (
        "id", cg.float64, "OFF", 5.0, "alice")
    assert copy.dtype is cg.float64
    value = copy.leaf("w").value
    assert value.tolist() == [0.0, 1.0, 2.0] and not value.flags.writeable
    with pytest.raises(TypeError):
        cast(dict[str, LeafState], copy.leaves)["v"] = copy.leaf("w")


# --- update: atomic, all or nothing -------------------------------------------------------------

def test_update_stores_the_new_snapshot_and_returns_the_result(store: MemoryStore) -> None:
    session_id = with_leaf(store)
    assert store.update(session_id, add_grad(1.5)) == 1.5
    assert store.update(session_id, add_grad(1.5)) == 3.0
    assert grad(store, session_id) == 3.0


def test_a_failed_change_changes_nothing(store: MemoryStore) -> None:
    session_id = with_leaf(store)
    failure = RuntimeError("check disagreed")

    def half_done(session: Session) -> tuple[Session, None]:
        session.with_leaves({"w": session.leaf("w").accumulate(np.float32(5.0))})
        raise failure

    with pytest.raises(RuntimeError) as info:
        store.update(session_id, half_done)
    assert info.value is failure
    assert grad(store, session_id) == 0.0


def test_a_change_may_not_swap_the_session(store: MemoryStore) -> None:
    session_id = with_leaf(store)
    with pytest.raises(ValueError, match="keep the session's id"):
        store.update(session_id, lambda s: (dataclasses.replace(s, id="other", leaves={}), None))
    assert "w" in store.get(session_id).leaves


# --- request_id idempotency ---------------------------------------------------------------------

def test_a_retried_update_returns_the_first_result_and_applies_once(store: MemoryStore) -> None:
    session_id = with_leaf(store)
    calls: list[int] = []
    assert store.update(session_id, add_grad(1.0, calls), request_id="r1") == 1.0
    store.update(session_id, add_grad(10.0))  # another call in between
    assert store.update(session_id, add_grad(1.0, calls), request_id="r1") == 1.0
    assert len(calls) == 1 and grad(store, session_id) == 11.0
    assert store.update(session_id, add_grad(1.0, calls), request_id="r2") == 12.0


def test_request_ids_belong_to_their_session(store: MemoryStore) -> None:
    a, b = with_leaf(store), with_leaf(store)
    store.update(a, add_grad(1.0), request_id="r")
    store.update(b, add_grad(2.0), request_id="r")
    assert (grad(store, a), grad(store, b)) == (1.0, 2.0)


def test_a_failed_call_is_not_remembered(store: MemoryStore) -> None:
    session_id = with_leaf(store)

    def fail(session: Session) -> tuple[Session, float]:
        raise InvalidArgument("bad graph")

    with pytest.raises(InvalidArgument):
        store.update(session_id, fail, request_id="r")
    assert store.update(session_id, add_grad(4.0), request_id="r") == 4.0
    assert grad(store, session_id) == 4.0


def test_only_the_last_n_request_ids_are_kept(store: MemoryStore) -> None:
    session_id = with_leaf(store)  # the fixture keeps 3
    for request_id in "abcd":
        store.update(session_id, add_grad(1.0), request_id=request_id)
    assert store.update(session_id, add_grad(1.0), request_id="d") == 4.0  # still remembered
    assert store.update(session_id, add_grad(1.0), request_id="a") == 5.0  # forgotten: runs again
    assert grad(store, session_id) == 5.0


def test_concurrent_duplicates_apply_once(store: MemoryStore, pool: ThreadPoolExecutor) -> None:
    session_id = with_leaf(store)
    calls: list[int] = []
    slow_first, entered, release = held(add_grad(1.0, calls))
    first = pool.submit(store.update, session_id, slow_first, "dup")
    assert entered.wait(WAIT)
    start = threading.Barrier(16)

    def duplicate() -> float:
        start.wait(WAIT)
        return store.update(session_id, add_grad(1.0, calls), request_id="dup")

    others = [pool.submit(duplicate) for _ in range(16)]
    release.set()
    results = [first.result(WAIT)] + [f.result(WAIT) for f in others]
    assert results == [1.0] * 17
    assert len(calls) == 1 and grad(store, session_id) == 1.0


def test_a_retried_create_returns_the_same_session(store: MemoryStore) -> None:
    first = store.create(cg.float64, idle_ttl=60.0, request_id="c1")
    assert store.create(cg.float64, idle_ttl=60.0, request_id="c1").id == first.id
    assert store.create(request_id="c1", owner="bob").id != first.id  # request ids are per owner
    assert store.create(request_id="c2").id != first.id


@pytest.mark.parametrize("other", [{"dtype": cg.float32}, {"check": "OFF"}, {"idle_ttl": 61.0}])
def test_a_create_request_id_sent_with_other_settings_is_refused(
        store: MemoryStore, other: dict[str, Any]) -> None:
    asked: dict[str, Any] = {"dtype": cg.float64, "check": "STRICT", "idle_ttl": 60.0}
    first = store.create(**asked, request_id="c")
    with pytest.raises(RequestIdReused):
        store.create(**{**asked, **other}, request_id="c")
    assert store.create(**asked, request_id="c").id == first.id


def test_a_retried_create_uses_no_second_slot(clock: FakeClock) -> None:
    store = MemoryStore(StoreConfig(max_sessions=1, request_id_ttl=60.0), clock=clock)
    first = store.create(request_id="c")
    assert store.create(request_id="c").id == first.id
    store.delete(first.id)
    with pytest.raises(SessionNotFound):  # the first answer names a session that is gone
        store.create(request_id="c")
    clock.advance(60.0)  # the request id is forgotten after request_id_ttl
    assert store.create(request_id="c").id != first.id


def test_a_failed_create_is_not_remembered(clock: FakeClock) -> None:
    store = MemoryStore(StoreConfig(max_sessions=1), clock=clock)
    blocker = store.create()
    with pytest.raises(LimitExceeded):
        store.create(request_id="c")
    store.delete(blocker.id)
    assert store.create(request_id="c").id != blocker.id


def test_a_delete_with_a_request_id_the_session_used_is_refused(store: MemoryStore) -> None:
    session_id = with_leaf(store)
    store.update(session_id, add_grad(1.0), request_id="r")
    with pytest.raises(RequestIdReused):
        store.delete(session_id, request_id="r")
    assert grad(store, session_id) == 1.0


def test_a_retried_delete_succeeds(store: MemoryStore) -> None:
    session_id = store.create().id
    store.delete(session_id, request_id="d")
    store.delete(session_id, request_id="d")
    with pytest.raises(SessionNotFound):
        store.delete(session_id, request_id="other")
    with pytest.raises(SessionNotFound):
        store.get(session_id)


# --- idle TTL -------------------------------------------------------------------------------------

def test_an_idle_session_expires(store: MemoryStore, clock: FakeClock) -> None:
    session_id = store.create(idle_ttl=10.0).id
    clock.advance(9.9)
    assert store.get(session_id).id == session_id
    clock.advance(10.0)
    with pytest.raises(SessionNotFound):
        store.get(session_id)


@pytest.mark.parametrize("touch", ["get", "update"])
def test_every_call_restarts_the_idle_timer(store: MemoryStore, clock: FakeClock,
                                            touch: str) -> None:
    session_id = store.create(idle_ttl=10.0).id
    for _ in range(5):  # 40 s in all, never 10 s idle
        clock.advance(8.0)
        if touch == "get":
            store.get(session_id)
        else:
            store.update(session_id, lambda s: (s, None))
    clock.advance(9.0)
    store.get(session_id)


def test_idle_time_counts_from_the_end_of_a_call(store: MemoryStore, clock: FakeClock) -> None:
    session_id = store.create(idle_ttl=10.0).id

    def slow(session: Session) -> tuple[Session, None]:
        clock.advance(9.0)
        return session, None

    store.update(session_id, slow)
    clock.advance(5.0)  # 14 s after the call began, 5 s idle
    assert store.get(session_id).id == session_id


@pytest.mark.parametrize("call", ["update", "delete"])
def test_expired_sessions_are_not_found_by_any_call(store: MemoryStore, clock: FakeClock,
                                                    call: str) -> None:
    session_id = store.create(idle_ttl=10.0).id
    clock.advance(10.0)
    with pytest.raises(SessionNotFound):
        if call == "update":
            store.update(session_id, lambda s: (s, None))
        else:
            store.delete(session_id)


def test_a_session_in_use_does_not_expire(store: MemoryStore, clock: FakeClock,
                                          pool: ThreadPoolExecutor) -> None:
    session_id = with_leaf(store)
    ttl = store.get(session_id).idle_ttl
    long_change, entered, release = held(add_grad(1.0))
    running = pool.submit(store.update, session_id, long_change)
    assert entered.wait(WAIT)
    clock.advance(2 * ttl)
    store.create()  # sweeps expired sessions
    release.set()
    assert running.result(WAIT) == 1.0
    clock.advance(ttl - 1.0)  # the timer restarted when the update ended
    assert grad(store, session_id) == 1.0


# --- the session cap ----------------------------------------------------------------------------

def test_create_past_the_cap_is_resource_exhausted(store: MemoryStore) -> None:
    ids = [store.create().id for _ in range(4)]
    with pytest.raises(LimitExceeded, match="at most 4") as info:
        store.create()
    assert info.value.status == "RESOURCE_EXHAUSTED"
    store.delete(ids[0])
    store.create()


def test_expired_sessions_free_their_slots(store: MemoryStore, clock: FakeClock) -> None:
    for ttl in (10.0, 10.0, 10.0, 100.0):
        store.create(idle_ttl=ttl)
    with pytest.raises(LimitExceeded):
        store.create()
    clock.advance(10.0)
    for _ in range(3):
        store.create()
    with pytest.raises(LimitExceeded):
        store.create()


def test_expiry_still_works_after_many_deletes(clock: FakeClock) -> None:
    store = MemoryStore(StoreConfig(max_sessions=2), clock=clock)
    keep = store.create(idle_ttl=50.0).id
    for _ in range(300):  # each leaves a stale deadline behind; the store compacts them
        store.delete(store.create(idle_ttl=1000.0).id)
    clock.advance(40.0)
    store.get(keep)
    store.create(idle_ttl=10.0)
    clock.advance(50.0)
    with pytest.raises(SessionNotFound):
        store.get(keep)
    store.create()
    store.create()


# --- threads ------------------------------------------------------------------------------------

def test_concurrent_accumulation_loses_nothing(pool: ThreadPoolExecutor) -> None:
    store = MemoryStore()
    session_id = with_leaf(store)
    calls: list[int] = []
    start = threading.Barrier(32)

    def worker() -> None:
        start.wait(WAIT)
        for _ in range(50):
            store.update(session_id, add_grad(1.0, calls))

    for future in [pool.submit(worker) for _ in range(32)]:
        future.result(WAIT * 6)
    assert grad(store, session_id) == 1600.0
    assert len(calls) == 1600


def test_sessions_do_not_block_each_other(pool: ThreadPoolExecutor) -> None:
    store = MemoryStore()
    a, b = with_leaf(store), with_leaf(store)
    blocking, entered, release = held(add_grad(1.0))
    slow = pool.submit(store.update, a, blocking)
    try:
        assert entered.wait(WAIT)
        assert pool.submit(store.update, b, add_grad(2.0)).result(WAIT) == 2.0
        assert pool.submit(store.create).result(WAIT).id not in (a, b)
        # Reads of the busy session do not wait either: they see the last stored snapshot.
        assert pool.submit(grad, store, a).result(WAIT) == 0.0
        assert not slow.done()
    finally:
        release.set()
    assert slow.result(WAIT) == 1.0 and grad(store, a) == 1.0


def test_a_memory_store_is_a_session_store() -> None:
    store: SessionStore = MemoryStore()  # mypy checks the protocol here
    session = store.create()
    store.close()
    assert isinstance(session, Session)


def test_recall_gives_a_remembered_result_before_any_work(store: MemoryStore) -> None:
    session_id = with_leaf(store)
    assert store.recall(session_id, "r") is None
    store.update(session_id, add_grad(1.0), request_id="r")
    assert store.recall(session_id, "r") == 1.0
    with pytest.raises(SessionNotFound):
        store.recall("no such session", "r")


# --- budgets -------------------------------------------------------------------------------------

def _put(name: str, elements: int) -> Change[None]:
    def change(session: Session) -> tuple[Session, None]:
        return session.with_leaves({name: LeafState(np.zeros(elements))}), None
    return change


def _limit_of(error: BaseException) -> str:
    limit = getattr(error, "limit", None)
    assert isinstance(limit, str), error
    return limit


def test_a_session_past_its_byte_budget_is_refused_whole(clock: FakeClock) -> None:
    store = MemoryStore(StoreConfig(max_session_bytes=8_000), clock=clock)
    session = store.create().id
    store.update(session, _put("a", 500))  # 4,000 bytes
    with pytest.raises(LimitExceeded) as refused:
        store.update(session, _put("b", 600))
    assert _limit_of(refused.value) == "max_session_bytes"
    assert "nothing was changed" in str(refused.value)
    assert set(store.get(session).leaves) == {"a"}
    assert store.nbytes == 4_000
    store.update(session, _put("a", 10))  # shrinking is always allowed
    assert store.nbytes == 80 == store.get(session).nbytes


def test_the_store_s_byte_budget_spans_sessions(clock: FakeClock) -> None:
    store = MemoryStore(StoreConfig(max_store_bytes=10_000), clock=clock)
    first, second = store.create().id, store.create().id
    store.update(first, _put("a", 1000))  # 8,000 bytes
    with pytest.raises(LimitExceeded) as refused:
        store.update(second, _put("a", 300))
    assert _limit_of(refused.value) == "max_store_bytes"
    store.delete(first)  # a deleted session gives its bytes back
    store.update(second, _put("a", 300))
    assert store.nbytes == 2_400


def test_remembered_answers_count_and_the_oldest_go_first(clock: FakeClock) -> None:
    store = MemoryStore(StoreConfig(max_remembered_bytes=2_500), clock=clock)
    session = store.create().id

    def answer(size: int) -> Change[Remembered]:
        return lambda s: (s, Remembered("f", b"\0" * size))

    for k in range(3):
        store.update(session, answer(999), request_id=f"r{k}")  # 1,000 bytes each
    assert store.recall(session, "r0") is None  # forgotten: 3,000 bytes is over 2,500
    assert store.recall(session, "r1") is not None and store.recall(session, "r2") is not None
    assert store.nbytes == 2_000
    store.update(session, answer(9_999), request_id="big")  # alone over the budget: kept
    assert store.recall(session, "big") is not None and store.recall(session, "r2") is None
    assert store.nbytes == 10_000


def test_a_refused_change_keeps_the_remembered_answers(clock: FakeClock) -> None:
    store = MemoryStore(StoreConfig(max_session_bytes=3_000, max_remembered_bytes=2_000),
                        clock=clock)
    session = store.create().id
    store.update(session, lambda s: (s, Remembered("f", b"\0" * 999)), request_id="r0")
    store.update(session, lambda s: (s, Remembered("f", b"\0" * 999)), request_id="r1")
    with pytest.raises(LimitExceeded):
        store.update(session, lambda s: (_put("a", 300)(s)[0], Remembered("f", b"\0" * 999)),
                     request_id="r2")
    assert store.recall(session, "r0") is not None and store.recall(session, "r1") is not None
    assert store.recall(session, "r2") is None
    assert store.nbytes == 2_000


def test_one_client_cannot_take_every_session(clock: FakeClock) -> None:
    store = MemoryStore(StoreConfig(max_sessions=10, max_sessions_per_client=2), clock=clock)
    mine = [store.create(client="a").id for _ in range(2)]
    with pytest.raises(LimitExceeded) as refused:
        store.create(client="a")
    assert _limit_of(refused.value) == "max_sessions_per_client"
    store.create(client="b")  # another client still gets one
    store.delete(mine[0])
    store.create(client="a")  # a slot freed by a delete
    clock.advance(10 * 86_400)
    store.create(client="a")  # and by expiry
    store.create(client="a")


def test_a_create_request_id_is_kept_only_as_a_digest(store: MemoryStore) -> None:
    secret = "a-request-id-that-is-long-and-random-0123456789"
    store.create(request_id=secret)
    assert secret not in repr(store._requests)


def test_a_create_request_id_belongs_to_its_client(store: MemoryStore) -> None:
    secret = "the-same-deterministic-key-0000000000000001"
    mine = store.create(request_id=secret, client="ipv4:10.0.0.1").id
    theirs = store.create(request_id=secret, client="ipv4:10.0.0.2").id
    assert theirs != mine
    assert store.create(request_id=secret, client="ipv4:10.0.0.1").id == mine


def test_nothing_is_created_or_deleted_when_the_commit_check_refuses(store: MemoryStore) -> None:
    class Gone(Exception):
        pass

    def refuse() -> None:
        raise Gone

    with pytest.raises(Gone):
        store.create(request_id="k" * 40, before_commit=refuse)
    assert len(store._slots) == 0 and store.create(request_id="k" * 40).id  # not remembered
    session = store.create().id
    with pytest.raises(Gone):
        store.delete(session, before_commit=refuse)
    store.get(session)  # still there
