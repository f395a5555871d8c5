"""Processor ``spanlink``: link samples to the trace span active on their thread."""
