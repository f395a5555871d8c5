from __future__ import annotations

from pathlib import Path

from telegen.symbols.kallsyms import KernelSymbols
from telegen.symbols.perfmap import PerfMap


def test_perf_map_is_reread_as_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "perf-123.map"
    path.write_text("1000 100 JS:*first\n2000 50 JS:~sec")        # last line incomplete
    pm = PerfMap(str(path))
    assert pm.lookup(0x1050) == ("JS:*first", 0x1000)
    assert pm.lookup(0x1100) is None                                # past its size
    assert pm.lookup(0x2010) is None                                # line not finished yet
    with path.open("a") as fh:
        fh.write("ond\n3000 10 py::hot:/app/x.py\n")
    assert pm.lookup(0x2010) == ("JS:~second", 0x2000)
    assert pm.lookup(0x3009) == ("py::hot:/app/x.py", 0x3000)
    with path.open("a") as fh:                                      # re-JIT: later wins
        fh.write("1000 100 JS:*first_v2\n")
    assert pm.refresh()
    assert pm.lookup(0x1001) == ("JS:*first_v2", 0x1000)


def test_perf_map_replaced_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "perf-9.map"
    path.write_text("1000 100 old\n")
    pm = PerfMap(str(path))
    assert pm.lookup(0x1000) == ("old", 0x1000)
    path.unlink()
    path.write_text("5000 10 new\n")
    assert pm.lookup(0x5001) == ("new", 0x5000)
    assert pm.lookup(0x1000, refresh=False) is None


def test_kallsyms_text_symbols_with_modules(tmp_path: Path) -> None:
    path = tmp_path / "kallsyms"
    path.write_text(
        "ffffffff81000000 T _stext\n"
        "ffffffff81000000 T startup_64\n"
        "ffffffff81001000 t do_thing\n"
        "ffffffff81002000 D some_data\n"
        "ffffffffc0001000 t nft_do_chain\t[nf_tables]\n"
        "0000000000000000 T hidden_by_kptr_restrict\n")
    ks = KernelSymbols(str(path))
    assert len(ks) == 3
    assert ks.lookup(0xFFFFFFFF81000010) == ("startup_64", "", 0xFFFFFFFF81000000)
    assert ks.lookup(0xFFFFFFFF81001FFF)[0] == "do_thing"
    assert ks.lookup(0xFFFFFFFFC0001004) == ("nft_do_chain", "nf_tables", 0xFFFFFFFFC0001000)
    assert ks.lookup(0x1000) is None
