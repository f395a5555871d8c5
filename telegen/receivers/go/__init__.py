"""Receiver ``go``: scrape Go runtime profiles from ``net/http/pprof`` endpoints."""
