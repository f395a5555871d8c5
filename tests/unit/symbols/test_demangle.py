from __future__ import annotations

import pytest

from telegen.symbols.demangle import Demangler, language
from telegen.testing import require


@pytest.fixture(autouse=True)
def _cxxfilt() -> None:
    require.tools("c++filt", provider="binutils, scripts/setup-host.sh")

CPP = "_ZN2ns5Klass6methodEi"
RUST_LEGACY = "_ZN5rdemo6shapes7compute17h0123456789abcdefE"
RUST_V0 = "_RNvNtCs1234_5rdemo6shapes7compute"


def test_language_of_raw_names() -> None:
    assert language(CPP) == "cpp"
    assert language(RUST_LEGACY) == "rust"
    assert language(RUST_V0) == "rust"
    assert language("nanosleep") == ""


def test_demangles_cpp_and_both_rust_schemes() -> None:
    d = Demangler()
    try:
        assert d.demangle(CPP) == "ns::Klass::method(int)"
        assert d.demangle(RUST_LEGACY) == "rdemo::shapes::compute"
        assert d.demangle(RUST_V0) == "rdemo::shapes::compute"
        assert d.demangle("main") == "main"
        assert d.demangle("_Z3fooi.constprop.0").startswith("foo(int)")
    finally:
        d.close()


def test_switches_are_independent() -> None:
    no_rust = Demangler(rust=False)
    no_cpp = Demangler(cpp=False)
    try:
        assert no_rust.demangle(RUST_V0) == RUST_V0
        assert no_rust.demangle(RUST_LEGACY) == RUST_LEGACY
        assert no_rust.demangle(CPP) == "ns::Klass::method(int)"
        assert no_cpp.demangle(CPP) == CPP
        assert no_cpp.demangle(RUST_LEGACY) == "rdemo::shapes::compute"
    finally:
        no_rust.close()
        no_cpp.close()


def test_restarts_a_dead_cxxfilt() -> None:
    d = Demangler()
    try:
        assert d.demangle(CPP) == "ns::Klass::method(int)"
        assert d._proc is not None
        d._proc.kill()
        d._proc.wait()
        assert d.demangle("_ZN2ns5Klass6methodEl") == "ns::Klass::method(long)"
    finally:
        d.close()
