"""Processor ``filter``: hide frames by name (as ``pprof -hide``) and drop rare stacks."""
