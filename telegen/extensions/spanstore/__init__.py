"""Extension ``spanstore``: recent spans for profile linking, and the samples
linked to them (served on loopback as per-span tables, flame graphs, pprof)."""
