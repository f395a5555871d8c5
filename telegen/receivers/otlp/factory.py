from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.receivers.otlp.config import OtlpReceiverConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.receivers.otlp.receiver import OtlpReceiver

    return OtlpReceiver(settings, config, next_consumer)


FACTORY = Factory(
    type="otlp",
    kind=Kind.RECEIVER,
    config_type=OtlpReceiverConfig,
    create=_create,
    schema="receivers/otlp.json",
    description="accept OTLP profiles (v1development) over gRPC (ProfilesService, :4317) "
                "and HTTP (/v1development/profiles, :4318); OTLP traces for span linking "
                "(spanstore) and forwarding (traces pipelines)",
    signals=("profiles", "traces"),
)
