"""The generation history: every prompt and its output, newest at the bottom."""

from __future__ import annotations

from rich.text import Text
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static


class Sample(Vertical):
    """One prompt and what the model wrote after it."""

    def __init__(self, prompt: str, note: str = "") -> None:
        super().__init__(classes="sample")
        self.prompt = prompt
        self.note = note
        self.output = ""
        self.status = ""

    def compose(self):
        if self.note:
            yield Static(self.note, classes="sample-note", markup=False)
        yield Static(self._text(), classes="sample-text")
        yield Static("", classes="sample-status", markup=False)

    def _text(self) -> Text:
        text = Text()
        text.append(self.prompt, style="bold reverse")
        text.append(self.output)
        return text

    def set_output(self, output: str) -> None:
        self.output = output
        if self.is_mounted:
            self.query_one(".sample-text", Static).update(self._text())

    def set_status(self, status: str) -> None:
        self.status = status
        if self.is_mounted:
            self.query_one(".sample-status", Static).update(status)


class Transcript(VerticalScroll, can_focus=True):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)

    def samples(self) -> list[Sample]:
        return list(self.query(Sample))

    def last(self) -> Sample | None:
        samples = self.samples()
        return samples[-1] if samples else None

    async def add(self, prompt: str, note: str = "") -> Sample:
        sample = Sample(prompt, note)
        await self.mount(sample)
        self.scroll_end(animate=False)
        return sample

    async def clear(self) -> None:
        await self.query(Sample).remove()
