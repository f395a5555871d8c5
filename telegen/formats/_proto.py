"""Load the generated ``profile_pb2`` module, generating it if it is missing.

``make`` generates it at install time; a development checkout that skipped
that step still works as long as ``grpcio-tools`` is installed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent


def _generate() -> None:
    try:
        from grpc_tools import protoc  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError("telegen/formats/profile_pb2.py is missing and grpcio-tools is not "
                          "installed; run `make` (or install grpcio-tools)") from exc
    rc = protoc.main(["protoc", f"-I{_HERE}", f"--python_out={_HERE}", f"--pyi_out={_HERE}",
                      str(_HERE / "profile.proto")])
    if rc != 0:
        raise ImportError(f"generating profile_pb2 from {_HERE / 'profile.proto'} failed "
                          f"(protoc exit {rc}); run `make`")


def load_profile_pb2() -> ModuleType:
    try:
        return importlib.import_module("telegen.formats.profile_pb2")
    except ModuleNotFoundError:
        _generate()
        importlib.invalidate_caches()
        return importlib.import_module("telegen.formats.profile_pb2")
