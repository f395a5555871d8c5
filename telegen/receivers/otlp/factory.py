from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.receivers.otlp.config import OtlpReceiverConfig

FACTORY = Factory(
    type="otlp",
    kind=Kind.RECEIVER,
    config_type=OtlpReceiverConfig,
    create=lazy("telegen.receivers.otlp.receiver:OtlpReceiver"),
    schema="receivers/otlp.json",
    description="accept OTLP profiles (v1development) over gRPC (ProfilesService, :4317) "
                "and HTTP (/v1development/profiles, :4318); OTLP traces for span linking "
                "(spanstore) and forwarding (traces pipelines)",
    signals=("profiles", "traces"),
)
