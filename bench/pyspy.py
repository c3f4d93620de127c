"""Where a server process spends its time: py-spy samples, summed by function.

`record` runs `py-spy record --format raw` (collapsed stacks: one line per distinct
stack, frames joined by ";", then the sample count) on a running process, without
pausing it (`--nonblocking`) and without idle samples, so the samples are the
moments a thread was running. `summarize` turns that text into each function's
self share (the frame on top) and inclusive share (anywhere on the stack), as a
fraction of all samples; `Profile.attribute` sorts the samples into labelled parts
(the first matching rule wins).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_LINE_NO = re.compile(r":\d+\)$")


@dataclass
class Profile:
    samples: int = 0
    self_samples: Counter[str] = field(default_factory=Counter)
    total_samples: Counter[str] = field(default_factory=Counter)
    stacks: Counter[tuple[str, ...]] = field(default_factory=Counter)

    def top_self(self, n: int) -> list[tuple[str, float]]:
        return [(f, c / self.samples) for f, c in self.self_samples.most_common(n)]

    def top_total(self, n: int) -> list[tuple[str, float]]:
        return [(f, c / self.samples) for f, c in self.total_samples.most_common(n)]

    def share(self, needle: str) -> float:
        """Inclusive share of the stacks holding a frame whose name contains `needle`."""
        return self.matching(needle) / self.samples if self.samples else 0.0

    def matching(self, needle: str) -> int:
        return sum(c for f, c in self.total_samples.items() if needle in f)

    def attribute(self, rules: Sequence[tuple[str, str]]) -> dict[str, float]:
        """Share of the samples per label: each sample goes to the first rule (label,
        needle) whose needle is in one of its frames' names, else to "other". Put the
        narrow rules (a function) before the wide ones (a module) they run under."""
        counts: Counter[str] = Counter()
        for stack, n in self.stacks.items():
            label = next((lb for lb, needle in rules if any(needle in f for f in stack)), "other")
            counts[label] += n
        return {lb: c / self.samples for lb, c in counts.most_common()} if self.samples else {}


def frame_name(raw: str) -> str:
    """`func (/long/path/pkg/mod.py:123)` -> `func (pkg/mod.py)`: one name per function."""
    raw = _LINE_NO.sub(")", raw.strip())
    func, sep, where = raw.partition(" (")
    if not sep:
        return raw
    path = where.rstrip(")")
    short = "/".join(path.split("/")[-2:])
    return f"{func} ({short})"


def summarize(text: str) -> Profile:
    prof = Profile()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        prof.samples += n
        prof.stacks[tuple(frames)] += n
        prof.self_samples[frames[-1]] += n
        for f in set(frames):  # a recursive function counts once per sample
            prof.total_samples[f] += n
    return prof


def available() -> bool:
    return shutil.which("py-spy") is not None


async def record(pid: int, seconds: float, out: Path, rate: int = 200) -> Profile:
    proc = await asyncio.create_subprocess_exec(
        "py-spy",
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({proc.returncode}): {err.decode()[-500:]}")
    return summarize(out.read_text())
