"""The error of a file that cannot be read, in a module that imports nothing.

rawdev.decode starts the decoder process before numpy and the pipeline are imported (it warms up
while they load), so the exceptions it needs live here rather than in rawdev.raw, which re-exports
:class:`RawReadError`.
"""

from __future__ import annotations


class RawReadError(Exception):
    """A file rawdev cannot develop; the message says what is wrong and what to do.

    ``libraw`` is the part of the message that quotes LibRaw's exception, for a caller that
    knows more of what LibRaw said (the decoder worker reads its printed messages)."""

    def __init__(self, message: str, libraw: str | None = None):
        super().__init__(message)
        self.libraw = libraw

    def with_libraw_message(self, said: str) -> str:
        """The message with LibRaw's exception replaced by what LibRaw printed."""
        text = str(self)
        if not said:
            return text
        if self.libraw and self.libraw in text:
            return text.replace(self.libraw, f"LibRaw: {said}")
        return f"{text} (LibRaw: {said})"
