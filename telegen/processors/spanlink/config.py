from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpanLinkConfig:
    # The spanstore extension the otlp receiver feeds (list it in
    # service::extensions).
    spanstore: str = "spanstore"
    # How long samples are held before linking, so spans that end (and are
    # exported by the SDK) after the samples were taken can still claim them.
    # Should exceed the SDK's export delay (BatchSpanProcessor: 5s).
    delay: float = field(default=10.0, metadata={"duration": True})
    # Most samples held; beyond it the oldest held batches are linked with the
    # spans known so far and sent early (spanlink_early_released_samples).
    max_pending_samples: int = 200000

    def validate(self) -> None:
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0 (got {self.delay}s)")
        if self.max_pending_samples < 1:
            raise ValueError(f"max_pending_samples must be >= 1 "
                             f"(got {self.max_pending_samples})")
        if not self.spanstore:
            raise ValueError("spanstore: name the spanstore extension, e.g. spanstore")
