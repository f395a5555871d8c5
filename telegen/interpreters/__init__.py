"""Interpreted runtimes whose frames the eBPF receiver reads from memory."""
