"""The agent's side of BPF without libbcc or LLVM: a small bpf(2)/perf ctypes
layer over the descriptors the compiler child (:mod:`telegen.bpfc`) hands
over. See docs/loader-and-index.md, "Loader"."""
