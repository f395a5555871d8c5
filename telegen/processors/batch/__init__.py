"""Processor ``batch``: merge windows of the same profile type and resource."""
