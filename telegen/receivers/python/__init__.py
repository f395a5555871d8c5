"""Receiver ``python``: sample CPython processes from outside (py-spy engine)."""
