"""Progress and summaries: a rich progress bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.markup import escape

from rawdev.batch import Job, Outcome, Reporter, Summary


class ConsoleReporter(Reporter):
    """Per-file lines (ok / skipped / failed with the reason) and a closing summary."""

    def __init__(self, console: Console):
        self.console = console
        self.started = time.perf_counter()
        self.lock = threading.Lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def line(self, outcome: Outcome) -> str:
        src = escape(str(outcome.job.source))
        if outcome.status == "ok":
            rate = outcome.megapixels / outcome.seconds if outcome.seconds else 0.0
            return (f"[green]ok[/green]      {src} -> {escape(str(outcome.job.output))} "
                    f"({outcome.seconds:.1f} s, {outcome.megapixels:.1f} MP, {rate:.2f} MP/s)")
        if outcome.status == "skipped":
            return f"[yellow]skipped[/yellow] {src}: {escape(outcome.message)}"
        return f"[red]failed[/red]  {src}: {escape(outcome.message)}"

    def file_done(self, outcome: Outcome) -> None:
        with self.lock:
            self.console.print(self.line(outcome))

    def print_summary(self, summary: Summary) -> None:
        elapsed = time.perf_counter() - self.started
        mp = sum(o.megapixels for o in summary.outcomes if o.status == "ok")
        text = (f"{summary.count('ok')} ok, {summary.count('skipped')} skipped, {summary.count('failed')} failed "
                f"in {elapsed:.1f} s ({mp / elapsed if elapsed else 0:.2f} MP/s)")
        if summary.interrupted:
            text += " — interrupted; finished files are complete, no partial file was left"
        self.console.print(text)
        failed = [o for o in summary.outcomes if o.status == "failed"]
        if failed:
            self.console.print("failed: " + ", ".join(escape(str(o.job.source)) for o in failed))


class BarReporter(ConsoleReporter):
    """A rich progress bar: files, tiles of the current file, megapixels per second."""

    def __init__(self, console: Console):
        super().__init__(console)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=True,
        )
        self.files = None
        self.tiles = None
        self.mp_done = 0.0

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, total: int) -> None:
        self.files = self.progress.add_task("files", total=total, rate="")
        self.tiles = self.progress.add_task("tiles", total=1, rate="")

    def file_started(self, job: Job) -> None:
        if self.tiles is not None:
            self.progress.update(self.tiles, completed=0, description=f"{job.source.name[:24]}")

    def tile_done(self, done: int, total: int) -> None:
        if self.tiles is not None:
            self.progress.update(self.tiles, completed=done, total=total)

    def file_done(self, outcome: Outcome) -> None:
        super().file_done(outcome)
        if outcome.status == "ok":
            self.mp_done += outcome.megapixels
        if self.files is not None and outcome.status != "skipped":
            elapsed = time.perf_counter() - self.started
            self.progress.update(self.files, advance=1, rate=f"{self.mp_done / elapsed:.2f} MP/s")


def make_reporter(console: Console) -> ConsoleReporter:
    return BarReporter(console) if console.is_terminal else ConsoleReporter(console)
