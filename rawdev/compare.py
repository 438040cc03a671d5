"""rawdev compare: score a developed RAW file (or an image) against a reference."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the compare command to the CLI (filled in by the compare work)."""
