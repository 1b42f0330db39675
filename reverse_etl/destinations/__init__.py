"""Destinations: where syncs send their operations. One module per destination type.

To add a type: subclass ``Destination`` (``destinations/base.py``) in a new module,
declare its ``modes``, batch sizes and ``settings_spec`` (and extend ``validate_settings``
if needed), then register it in ``DESTINATIONS`` below. ``syncs.yml`` validation picks
the new type up automatically.
"""

from __future__ import annotations

from reverse_etl.config import DestinationConfig
from reverse_etl.destinations.audience import AudienceDestination
from reverse_etl.destinations.base import (
    Batch,
    Destination,
    DestinationError,
    Operation,
    RowResult,
    SyncContext,
)
from reverse_etl.destinations.file import FileDestination
from reverse_etl.destinations.hubspot import HubSpotDestination
from reverse_etl.destinations.postgres import PostgresDestination
from reverse_etl.destinations.webhook import WebhookDestination

DESTINATIONS: dict[str, type[Destination]] = {
    "file": FileDestination,
    "webhook": WebhookDestination,
    "postgres": PostgresDestination,
    "hubspot": HubSpotDestination,
    "audience": AudienceDestination,
}

__all__ = [
    "DESTINATIONS",
    "AudienceDestination",
    "Batch",
    "Destination",
    "DestinationError",
    "FileDestination",
    "HubSpotDestination",
    "Operation",
    "PostgresDestination",
    "RowResult",
    "SyncContext",
    "WebhookDestination",
    "build_destination",
    "destination_class",
]


def destination_class(type_name: str) -> type[Destination]:
    try:
        return DESTINATIONS[type_name]
    except KeyError:
        raise DestinationError(
            f"unknown destination type {type_name!r}: use one of {', '.join(DESTINATIONS)}"
        ) from None


def build_destination(config: DestinationConfig, context: SyncContext) -> Destination:
    """Instantiate the destination for one run (``context`` says which sync and run)."""
    return destination_class(config.type)(config.settings, context)
