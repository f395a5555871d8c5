"""Per-binary indexes on disk (docs/loader-and-index.md): the shared file
format in :mod:`telegen.index.header`."""
