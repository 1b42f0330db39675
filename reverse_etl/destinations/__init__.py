"""Destinations: where syncs send their operations. One module per destination type.

To add a type: subclass ``Destination`` (``destinations/base.py``) in a new module,
declare its ``settings_keys`` / ``required_settings`` (and extend ``validate_settings``
if needed), then register it in ``DESTINATIONS`` below. ``syncs.yml`` validation picks
the new type up automatically.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from reverse_etl.config import DestinationConfig
from reverse_etl.destinations.base import (
    Destination,
    DestinationError,
    Operation,
    RowResult,
    SyncContext,
)
from reverse_etl.destinations.file import FileDestination

DESTINATIONS: dict[str, type[Destination]] = {
    "file": FileDestination,
}

__all__ = [
    "DESTINATIONS",
    "Destination",
    "DestinationError",
    "FileDestination",
    "Operation",
    "RowResult",
    "SyncContext",
    "build_destination",
]


def build_destination(
    config: DestinationConfig,
    *,
    sync_name: str,
    run_id: str,
    base_dir: Path,
    field_names: Sequence[str] = (),
    key_field: str | None = None,
    started_at: datetime | None = None,
) -> Destination:
    """Instantiate the destination for one run of ``sync_name``.

    ``base_dir`` is where relative paths resolve (the warehouse file's folder).
    """
    try:
        cls = DESTINATIONS[config.type]
    except KeyError:
        raise DestinationError(
            f"unknown destination type {config.type!r}: use one of {', '.join(DESTINATIONS)}"
        ) from None
    context = SyncContext(
        sync_name=sync_name,
        run_id=run_id,
        base_dir=Path(base_dir),
        field_names=tuple(field_names),
        key_field=key_field,
        **({"started_at": started_at} if started_at is not None else {}),
    )
    return cls(config.settings, context)
