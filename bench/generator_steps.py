"""A generator's side of the line-by-line exchange with its bench (bench/measure.py, `Generators`)."""

import asyncio
import resource
import sys


async def reached(word: str) -> str:
    """Says `word` to the bench, and waits for its answer (the line that lets this generator on)."""
    print(word, flush=True)
    return (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()


def cpu_seconds_used() -> float:
    """This process's CPU so far, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def text_of(frame: str) -> str:
    """The message text in a Socket.IO frame, found by position: no JSON decoding per frame
    (the generators' texts are plain ASCII words)."""
    start = frame.index('"text":"') + 8
    return frame[start:frame.index('"', start)]
