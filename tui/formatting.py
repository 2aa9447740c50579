"""How numbers look on screen: parameter counts, losses, durations, rates."""

from __future__ import annotations

import math


def tokenizer_label(kind: str | None, vocab_size: int | None) -> str:
    kind = kind or "?"
    return f"{kind} ({vocab_size})" if vocab_size else kind


def format_params(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def format_loss(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.3f}"


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1_000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


CORPUS_PHASES = {"checking": "checking the corpus's files", "tokenizer": "training the tokenizer",
                 "encoding": "tokenizing the corpus"}


def corpus_progress_text(progress) -> str:
    """'tokenizing the corpus… 45%, 3.2 MB/s, 0:12 left (Stop cancels)' for a CorpusProgress."""
    text = CORPUS_PHASES.get(progress.phase, progress.phase) + "…"
    if progress.phase != "tokenizer" and progress.total:
        left = (progress.total - progress.done) / 1e6 / progress.mb_per_s if progress.mb_per_s > 0 else None
        text += (f" {100 * progress.done // progress.total}%, {progress.mb_per_s:.1f} MB/s, "
                 f"{format_duration(left)} left")
    return text + " (Stop cancels)"
