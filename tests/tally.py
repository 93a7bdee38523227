"""What the bad-input and security tests tried, and what got through: a table after the run.

A test says what it tries with `@pytest.mark.tally(kind, what)`: each run of it (each
parameter) counts once, and a failing one counts as having got through. A property-based test
marks itself `per_example=True` and calls `example(kind, what)` once per generated input.
"""

from collections import Counter

BAD_INPUT = "bad input"
ATTACK = "attack"

TRIED: Counter = Counter()
GOT_THROUGH: Counter = Counter()


def example(kind: str, what: str) -> None:
    TRIED[kind, what] += 1


def record(kind: str, what: str, *, passed: bool, per_example: bool) -> None:
    if not per_example:
        TRIED[kind, what] += 1
    if not passed:
        GOT_THROUGH[kind, what] += 1
        TRIED[kind, what] += per_example  # the failing example was never counted by the test


def table_lines(kind: str, got_through_header: str) -> list[str]:
    rows = sorted(what for (row_kind, what) in TRIED if row_kind == kind)
    if not rows:
        return []
    width = max(len(what) for what in rows)
    lines = [f"{kind + 's tried':<{width}} {'tried':>6} {got_through_header:>14}"]
    lines += [f"{what:<{width}} {TRIED[kind, what]:>6} {GOT_THROUGH[kind, what]:>14}" for what in rows]
    total_tried = sum(TRIED[kind, what] for what in rows)
    total_through = sum(GOT_THROUGH[kind, what] for what in rows)
    lines.append(f"{'total':<{width}} {total_tried:>6} {total_through:>14}")
    return lines


# Notification faults (issue 18), one row per fault test: (fault, jobs appended, messages pushed,
# lost, duplicates). A message counts as pushed once its recipient's push receiver decrypted it.
PUSH_FAULTS: list[tuple[str, int, int, int, int]] = []
