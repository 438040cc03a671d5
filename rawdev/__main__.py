"""The ``rawdev`` command's entry point (also ``python -m rawdev``), light on purpose.

A develop run starts its decoder process here, before the CLI (typer, rich) is imported, so that
the child's imports (numpy, rawpy) run beside the parent's; and a child that re-runs the
``rawdev`` script, as multiprocessing's spawn does, imports only this module.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["develop"] and not {"--ray", "--help"} & set(args):
        from rawdev.decode import prestart_worker

        prestart_worker()
    from rawdev.cli import console_main

    console_main()


if __name__ == "__main__":
    main()
