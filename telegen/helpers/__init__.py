"""Shared machinery for components: tickers, batching, exporter queue + retry."""
