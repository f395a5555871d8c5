"""Receiver ``ebpf``: CPU and off-CPU profiles of real processes through BCC."""
