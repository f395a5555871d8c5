"""``google.rpc.Status`` with ``RetryInfo`` details, as gRPC servers send them
in the ``grpc-status-details-bin`` trailer. The googleapis protos are not a
dependency, so the two small messages are declared here from their published
field numbers (Status: 1 code, 2 message, 3 details; RetryInfo: 1 retry_delay)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory

DETAILS_KEY = "grpc-status-details-bin"
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"


def _build() -> tuple[Any, Any]:
    pool = descriptor_pool.DescriptorPool()
    for dep in (any_pb2, duration_pb2):
        fdp = descriptor_pb2.FileDescriptorProto()
        dep.DESCRIPTOR.CopyToProto(fdp)
        pool.Add(fdp)
    f = descriptor_pb2.FileDescriptorProto(
        name="telegen/google_rpc.proto", package="google.rpc", syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"])
    T = descriptor_pb2.FieldDescriptorProto
    status = f.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=T.TYPE_INT32, label=T.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    status.field.add(name="details", number=3, type=T.TYPE_MESSAGE, label=T.LABEL_REPEATED,
                     type_name=".google.protobuf.Any")
    retry = f.message_type.add(name="RetryInfo")
    retry.field.add(name="retry_delay", number=1, type=T.TYPE_MESSAGE,
                    label=T.LABEL_OPTIONAL, type_name=".google.protobuf.Duration")
    pool.Add(f)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.RetryInfo")))


Status, RetryInfo = _build()


def retry_delay(trailing_metadata: Iterable[tuple[str, Any]] | None) -> float | None:
    """Seconds of the RetryInfo in a call's trailers, if the server sent one."""
    for key, value in trailing_metadata or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = Status()
        try:
            status.ParseFromString(value)
        except Exception:  # a garbled trailer is no reason to fail the export
            return None
        for detail in status.details:
            if detail.type_url == RETRY_INFO_TYPE:
                info = RetryInfo()
                try:
                    info.ParseFromString(detail.value)
                except Exception:
                    return None
                d = info.retry_delay
                return float(d.seconds) + d.nanos / 1e9
    return None


def status_details(code: int, message: str, delay_s: float | None = None) -> bytes:
    """A serialized Status (for servers, e.g. test backends and the otlp receiver)."""
    status = Status(code=code, message=message)
    if delay_s is not None:
        info = RetryInfo()
        info.retry_delay.seconds = int(delay_s)
        info.retry_delay.nanos = int((delay_s - int(delay_s)) * 1e9)
        status.details.add(type_url=RETRY_INFO_TYPE, value=info.SerializeToString())
    return bytes(status.SerializeToString())
