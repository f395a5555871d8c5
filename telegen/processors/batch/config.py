from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BatchConfig:
    # How long profiles are held and merged before being sent on (the seed's
    # ``upload_interval``).
    timeout: float = field(default=60.0, metadata={"duration": True})
    # Send early once a merged batch holds this many distinct samples (0: no cap).
    send_batch_max_size: int = 0

    def validate(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 (got {self.timeout}s)")
        if self.send_batch_max_size < 0:
            raise ValueError(f"send_batch_max_size must be >= 0 (got {self.send_batch_max_size})")
