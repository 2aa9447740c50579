"""Whether a model's tokenizer can go on training on a corpus (the TUI asks before it
offers to continue or fine-tune), in bounded memory whatever the corpus: a prepared
dataset is judged by its manifest, files and folders are streamed in chunks (only a
character tokenizer can lack something), a built-in corpus is small."""

from __future__ import annotations

from pathlib import Path

from cllm.core.corpus import BUILTIN_CORPORA, load_corpus
from cllm.core.dataset import MANIFEST, is_dataset, read_manifest
from cllm.core.prepare import SEPARATOR
from cllm.core.sources import NotText, read_text_chunks, scan_sources
from cllm.core.tokenizer import CharTokenizer, Tokenizer, coverage_problem


def fit_problem(tokenizer: Tokenizer, source: str | Path) -> str | None:
    """Why `tokenizer` cannot encode the corpus at `source` (a built-in corpus's name, a
    text file, a folder, or a prepared dataset), naming the file; None if it can.
    CorpusError if the source cannot be read at all."""
    if isinstance(source, str) and source in BUILTIN_CORPORA and not Path(source).exists():
        corpus = load_corpus(source)
        problem = coverage_problem(tokenizer, corpus.text)
        return f"{corpus.name}: {problem}" if problem else None
    path = Path(source).expanduser()
    if is_dataset(path):
        if not (path / MANIFEST).is_file():
            return None  # llm.c's shards: their ids are checked against the vocabulary when read
        made_with = read_manifest(path)["tokenizer"]
        if made_with != tokenizer.to_json():
            kind = made_with.get("type") if isinstance(made_with, dict) else None
            return (f"{path} was prepared with another tokenizer ({kind}), not the model's; prepare the corpus "
                    f"again with `cllm prepare --model`")
        return None
    scan = scan_sources([path])
    if not isinstance(tokenizer, CharTokenizer):
        return None  # byte-level BPE and words (<unk>) encode any text
    if len(scan.files) > 1 and coverage_problem(tokenizer, SEPARATOR):
        return (f"{path}: its files are separated by a blank line, and the model's vocabulary has no "
                f"{SEPARATOR[0]!r}; train on one file, or a new model")
    for f in scan.files:
        try:
            for chunk in read_text_chunks(f):
                problem = coverage_problem(tokenizer, chunk)
                if problem:
                    return f"{f.path}: {problem}"
        except NotText:
            continue  # skipped when the corpus is prepared
    return None
