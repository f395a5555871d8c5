from __future__ import annotations

import pytest

from telegen.component import PermanentError
from telegen.fanout import Fanout, FanoutError
from telegen.pdata import CPU, Profile, Profiles


class Rec:
    def __init__(self, mutates: bool, fail: Exception | None = None) -> None:
        self.mutates_data = mutates
        self.got: list[Profiles] = []
        self.fail = fail

    def consume(self, profiles: Profiles) -> None:
        self.got.append(profiles)
        if self.fail:
            raise self.fail


def _data() -> Profiles:
    return Profiles([Profile(name="cpu", sample_types=CPU)])


def test_readers_share_original_writers_get_copies() -> None:
    r1, r2, w1 = Rec(False), Rec(False), Rec(True)
    data = _data()
    Fanout([w1, r1, r2]).consume(data)
    assert r1.got[0] is data and r2.got[0] is data
    assert w1.got[0] is not data


def test_all_writers_last_gets_original() -> None:
    w1, w2 = Rec(True), Rec(True)
    data = _data()
    Fanout([w1, w2]).consume(data)
    assert w1.got[0] is not data and w2.got[0] is data


def test_every_consumer_called_despite_failures() -> None:
    a, b, c = Rec(False, OSError("x")), Rec(False), Rec(False, PermanentError("y"))
    with pytest.raises(FanoutError) as err:
        Fanout([a, b, c]).consume(_data())
    assert len(b.got) == 1 and len(err.value.errors) == 2
    d = Rec(False, PermanentError("z"))
    with pytest.raises(PermanentError):
        Fanout([d, Rec(False, PermanentError("w"))]).consume(_data())
