"""Wire formats: pprof (``pprof``), the seed-style top table (``top``), and
their helpers. Generated protobuf modules (``*_pb2.py``) are built at install
time from the ``.proto`` files here and are never committed."""
