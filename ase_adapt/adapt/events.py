"""The adaptation event log: one record per check, with a machine-readable ``kind``.

Each record is a JSON-able dict: ``call``, ``fingerprint``, ``formula``, ``n_atoms``, ``kind``
(an :class:`EventKind` value, for programs), ``action`` (a readable summary, for people),
``shifted``, ``reasons``, ``report``, ``ttt``, ``seconds`` and, when the prior failed,
``prior_error``. ``EventLog`` keeps them in memory and appends each as one JSON line to an
optional file.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

__all__ = ["EventKind", "EventLog"]


class EventKind(str, enum.Enum):
    REUSED = "reused"              # a known system: its cached adaptation answered
    ADAPTED = "adapted"            # radius refinement and/or TTT were applied
    ROLLED_BACK = "rolled_back"    # TTT ran and was rolled back (held-out loss or guard)
    NOT_ADAPTED = "not_adapted"    # not shifted (or adapt_when="never"): the base model answers
    PRIOR_FAILED = "prior_failed"  # the prior failed: no TTT, the base model answers
    TTT_FAILED = "ttt_failed"      # TTT raised (OOM, interrupt, backend error): base weights restored


class EventLog:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.events: list[dict[str, Any]] = []

    def append(self, event: dict[str, Any], kind: EventKind) -> None:
        event["kind"] = EventKind(kind).value
        self.events.append(event)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(json.dumps(event, default=float) + "\n")
