"""The compiler child's narrowed kallsyms keeps the kernel's own lines of the
probe-read helpers BCC asks about, whole, and nothing else."""

from __future__ import annotations

from telegen.bpf.kallsyms import helper_lines

KALLSYMS = (b"ffffffff81000000 T _stext\n"
            b"ffffffff814cd8c0 T bpf_probe_read_kernel\n"
            b"ffffffff814cd930 T bpf_probe_read_kernel_str\n"
            b"ffffffff814d0600 T bpf_probe_read_compat_str\n"
            b"ffffffff814d06f0 t bpf_probe_read_user\n"
            b"ffffffff814d0890 T bpf_probe_read_user_str_dynptr\n"
            b"ffffffffc0001000 t bpf_probe_read_user_str\t[some_module]\n")


def test_only_whole_lines_of_the_named_helpers() -> None:
    assert helper_lines(KALLSYMS) == [b"ffffffff814cd8c0 T bpf_probe_read_kernel\n",
                                      b"ffffffff814cd930 T bpf_probe_read_kernel_str\n",
                                      b"ffffffff814d06f0 t bpf_probe_read_user\n"]
    assert helper_lines(b"") == []
    assert helper_lines(b"0 T bpf_probe_read_kernel\n") == [b"0 T bpf_probe_read_kernel\n"]
