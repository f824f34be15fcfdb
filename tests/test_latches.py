"""The latch store (latches.py) against a real file in tmp_path: what a damaged file reads
as, and what a latch file that cannot be written does to set() and clear().

The tests run as root in CI, where a read-only directory (chmod) is writable all the same,
so a write fails here in one of two ways: durable.replace is replaced by one that raises
the errno a read-only or full /var/lib gives, or the temporary file's name is taken by a
directory, which fails the real open(2) with EISDIR as root too.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drbdha import durable
from drbdha.errors import DrbdhaError, LatchError
from drbdha.latches import KINDS, LatchStore

GOOD = {"nfs": {"disk": {"reason": "disk Failed while Primary", "since": 1700000000.5}}}


def stored(path: Path, raw: Any) -> LatchStore:
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    store = LatchStore(path)
    store.load()
    return store


def unwritable(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Every write of the latch file fails as a read-only (EROFS) or full (ENOSPC) /var/lib
    makes it fail."""

    def fail(_path: Path, _data: bytes, _mode: int = 0o600) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(durable, "replace", fail)


# ---- load(): whatever the file holds, an error or valid latches; never an exception -----


WRONG_SHAPE = {
    "a-list": [GOOD],
    "a-string": '"just text"',
    "a-number": 3,
    "null": None,
    "instance-not-an-object": {"nfs": ["disk"]},
    "latch-not-an-object": {"nfs": {"disk": "disk Failed"}},
    "unknown-kind": {"nfs": {"disks": {"reason": "x", "since": 1.0}}},
    "reason-missing": {"nfs": {"disk": {"since": 1.0}}},
    "since-missing": {"nfs": {"disk": {"reason": "x"}}},
    "reason-not-text": {"nfs": {"disk": {"reason": 5, "since": 1.0}}},
    "since-text": {"nfs": {"disk": {"reason": "x", "since": "yesterday"}}},
    "since-a-list": {"nfs": {"disk": {"reason": "x", "since": [1]}}},
    "since-a-bool": {"nfs": {"disk": {"reason": "x", "since": True}}},
    "since-too-big-for-a-float": '{"nfs": {"disk": {"reason": "x", "since": 1%s}}}' % ("0" * 400),
    "since-infinite": '{"nfs": {"disk": {"reason": "x", "since": Infinity}}}',
    "since-nan": '{"nfs": {"disk": {"reason": "x", "since": NaN}}}',
    "one-bad-beside-a-good": {**GOOD, "web": {"split-brain": {"reason": "x"}}},
    "nested-too-deep": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("raw", WRONG_SHAPE.values(), ids=WRONG_SHAPE)
def test_a_file_of_the_wrong_shape_is_a_load_error_not_no_latches(tmp_path: Path, raw: Any) -> None:
    path = tmp_path / "latches.json"
    store = stored(path, raw)  # must not raise
    assert store.load_error is not None
    assert store.load_error.startswith(f"{path}: ")
    assert store.of("nfs") == {}  # Chains.build latches every instance on load_error


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
# Near the right shape (and often right), so that most examples get past the first check.
SINCE = st.floats() | st.integers(min_value=-(10**400), max_value=10**400)
VALID = st.fixed_dictionaries(
    {"reason": st.text(max_size=8), "since": st.floats(allow_nan=False, allow_infinity=False)}
)
ENTRY = VALID | st.dictionaries(
    st.sampled_from(["reason", "since", "other"]), JSON | st.text(max_size=8) | SINCE, max_size=3
)
KINDS_OF = st.dictionaries(
    st.sampled_from([*KINDS, "disks", ""]), VALID | ENTRY | JSON, max_size=2
) | st.dictionaries(st.sampled_from(KINDS), VALID, max_size=2)
NEAR = st.dictionaries(st.text(max_size=6), KINDS_OF | JSON, max_size=3)


@settings(max_examples=400, deadline=None)
@given(raw=NEAR | JSON)
@example(raw={**GOOD, "web": {"split-brain": {"reason": "", "since": 0}}, "idle": {}})
def test_any_json_loads_as_valid_latches_or_as_a_load_error(
    tmp_path_factory: pytest.TempPathFactory, raw: Any
) -> None:
    path = tmp_path_factory.mktemp("latches") / "latches.json"
    store = stored(path, json.dumps(raw))  # json.dumps writes NaN and Infinity as Python reads them
    if store.load_error is not None:
        return
    # Read as valid: then nothing in it was dropped, and each latch is one the store can
    # write back.
    assert isinstance(raw, dict)
    for inst, kinds in raw.items():
        latches = store.of(inst)
        assert set(latches) == set(kinds)
        for kind, latch in latches.items():
            assert kind in KINDS
            assert (latch.kind, latch.reason) == (kind, kinds[kind]["reason"])
            assert isinstance(latch.since, float)
            assert math.isfinite(latch.since)
            assert latch.since == kinds[kind]["since"]


# ---- set(): held whatever happens to the file ----------------------------------------


def test_a_latch_set_while_the_file_is_unreadable_leaves_the_file_as_it_was(
    tmp_path: Path,
) -> None:
    # Rewriting it would keep only the new latch: after a restart, the instances the
    # unreadable file latched would no longer be.
    path = tmp_path / "latches.json"
    store = stored(path, "{not json")
    latch = store.set("web", "split-brain", "split brain")
    assert store.of("web") == {"split-brain": latch}
    assert store.save_error is not None
    assert "unreadable" in store.save_error
    assert path.read_text() == "{not json"
    again = LatchStore(path)
    again.load()
    assert again.load_error is not None


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_a_latch_that_cannot_be_saved_is_held_and_not_cleared_unsaved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    store = LatchStore(tmp_path / "latches.json")
    store.load()
    unwritable(monkeypatch, code)
    latch = store.set("nfs", "disk", "detached")
    assert store.of("nfs") == {"disk": latch}
    assert store.save_error is not None
    with pytest.raises(LatchError):
        store.clear("nfs", "disk")
    assert store.of("nfs") == {"disk": latch}


# ---- clear(): all or nothing, and a LatchError with the reason -------------------------


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.EROFS, "[Errno 30] Read-only file system"),
        (errno.ENOSPC, "[Errno 28] No space left on device"),
    ],
)
def test_a_clear_that_cannot_be_written_changes_nothing_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, says: str
) -> None:
    path = tmp_path / "latches.json"
    store = stored(path, GOOD)
    before = path.read_bytes()
    unwritable(monkeypatch, code)
    with pytest.raises(LatchError) as raised:
        store.clear("nfs", "disk")
    assert isinstance(raised.value, DrbdhaError)
    assert raised.value.reason == f"cannot write {path}: {says}"
    assert str(raised.value) == raised.value.reason
    assert raised.value.path == str(path)
    assert set(store.of("nfs")) == {"disk"}
    assert path.read_bytes() == before
    monkeypatch.undo()
    assert store.clear("nfs", "disk")  # once the disk has room again
    assert store.of("nfs") == {}


def test_a_clear_that_fails_on_the_real_filesystem_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "latches.json"
    store = stored(path, GOOD)
    before = path.read_bytes()
    (tmp_path / ".latches.json.tmp").mkdir()  # open(2) of the temporary file: EISDIR
    with pytest.raises(
        LatchError, match=r"cannot write .*latches.json: \[Errno 21\] Is a directory"
    ):
        store.clear("nfs", "disk")
    assert set(store.of("nfs")) == {"disk"}
    assert path.read_bytes() == before
    again = LatchStore(path)
    again.load()
    assert set(again.of("nfs")) == {"disk"}


def test_a_clear_of_an_unreadable_file_that_cannot_be_written_keeps_the_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "latches.json"
    store = stored(path, [GOOD])
    error = store.load_error
    assert error is not None
    unwritable(monkeypatch, errno.EROFS)
    with pytest.raises(LatchError, match="Read-only file system"):
        store.clear("nfs", "disk")
    assert store.load_error == error  # still latched, with the error in status
    assert json.loads(path.read_text()) == [GOOD]
