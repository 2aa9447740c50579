"""The files a corpus is made of: paths given by the user, folders walked recursively.

Walking only stats: it decides which files are candidates (not hidden, not in `.git` or
`__pycache__`, matching the --include and --exclude globs) and never reads them, so a
prepared dataset can be checked against its sources quickly. Whether a candidate is text
(no NUL byte, valid UTF-8) is learnt by reading it (`read_text_chunks`), when the
corpus is prepared. Each file is one document.
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cllm.core.errors import CorpusError

PRUNED_FOLDERS = {".git": ".git", "__pycache__": "__pycache__"}
READ_BLOCK = 4 << 20  # bytes read at a time; a chunk of text is at most about this long


@dataclass(frozen=True)
class SourceFile:
    """A candidate document: where it is, its name relative to the root it was found
    under (the root's own name first), and what stat said when the walk saw it. The
    location is kept as the walk's string: a Path per file was half of a 100,000-file
    walk's time."""

    location: str
    name: str
    size: int
    mtime_ns: int
    given: bool = False  # named on the command line, not found in a folder
    inode: int = 0

    @property
    def path(self) -> Path:
        return Path(self.location)


@dataclass
class SourceScan:
    roots: list[Path]
    files: list[SourceFile]
    skipped: Counter = field(default_factory=Counter)  # reason -> files
    folders: list[tuple[str, int]] = field(default_factory=list)  # each folder walked, and its mtime before listing
    started_ns: int = 0  # the clock when the walk began

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def skipped_line(skipped: Counter) -> str:
    """'skipped 3 files: 2 binary, 1 hidden' (or '' when nothing was skipped)."""
    total = sum(skipped.values())
    if not total:
        return ""
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"skipped {total} file{'s' if total != 1 else ''}: {parts}"


def _matches(name: str, rel: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, g) or fnmatch.fnmatchcase(name, g) for g in globs)


def scan_sources(paths: Sequence[str | Path], include: Sequence[str] = (),
                 exclude: Sequence[str] = ()) -> SourceScan:
    """The candidate files under `paths`, in a fixed order (each root's files sorted by
    relative path). A folder is walked following symbolic links, each real folder once
    (a link loop is seen once and skipped). CorpusError names a path that does not
    exist, or a folder that holds no candidate."""
    if not paths:
        raise CorpusError("no corpus given: name a text file or a folder")
    roots = [Path(p).expanduser().resolve() for p in paths]  # once: the files' paths are absolute from here
    scan = SourceScan(roots, [], started_ns=time.time_ns())
    seen_files: set[tuple[int, int]] = set()
    for root in roots:
        try:
            st = root.stat()
        except FileNotFoundError:
            raise CorpusError(f"{root}: no such file or folder") from None
        except OSError as exc:
            raise CorpusError(f"{root}: cannot be read ({exc.strerror or exc})") from None
        if stat.S_ISDIR(st.st_mode):
            before = len(scan.files)
            _walk(root, include, exclude, scan, seen_files)
            if len(scan.files) == before:
                raise CorpusError(_no_files_message(root, scan.skipped))
        else:
            key = (st.st_dev, st.st_ino)
            if key not in seen_files:
                seen_files.add(key)
                scan.files.append(SourceFile(str(root), root.name, st.st_size, st.st_mtime_ns, given=True,
                                             inode=st.st_ino))
    return scan


def _no_files_message(root: Path, skipped: Counter) -> str:
    line = skipped_line(skipped)
    if not line:
        return f"{root}: the folder is empty (no files in it or its sub-folders)"
    return f"{root}: no text files to train on ({line})"


def _walk(root: Path, include: Sequence[str], exclude: Sequence[str], scan: SourceScan,
          seen_files: set[tuple[int, int]]) -> None:
    """Depth first, each folder's files (sorted) before its sub-folders (sorted), with
    os.scandir: one stat per entry (a walk over 30,000 files takes a fraction of a second,
    and every start walks again to see whether a prepared dataset is current)."""
    seen_dirs: set[tuple[int, int]] = set()
    stack = [(str(root), "")]
    while stack:
        folder, rel_folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen_dirs:  # a link back to a folder already walked
                scan.skipped["link loops"] += 1
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            scan.skipped["unreadable"] += 1
            continue
        scan.folders.append((folder, st.st_mtime_ns))
        subfolders = []
        for entry in entries:
            name = entry.name
            rel = f"{rel_folder}/{name}" if rel_folder else name
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                if name in PRUNED_FOLDERS:
                    scan.skipped[f"in {name}"] += _count_files(entry.path)
                elif name.startswith("."):
                    scan.skipped["hidden"] += _count_files(entry.path)
                elif exclude and _matches(name, rel, exclude):
                    scan.skipped["excluded"] += _count_files(entry.path)
                else:
                    subfolders.append((entry.path, rel))
                continue
            if name.startswith("."):
                scan.skipped["hidden"] += 1
                continue
            if (exclude and _matches(name, rel, exclude)) or (include and not _matches(name, rel, include)):
                scan.skipped["excluded"] += 1
                continue
            try:
                fst = entry.stat()  # follows links
            except OSError:
                scan.skipped["unreadable"] += 1
                continue
            if not stat.S_ISREG(fst.st_mode):
                scan.skipped["not regular files"] += 1
                continue
            if (fst.st_dev, fst.st_ino) in seen_files:
                scan.skipped["seen twice (links)"] += 1
                continue
            seen_files.add((fst.st_dev, fst.st_ino))
            if fst.st_size == 0:
                scan.skipped["empty"] += 1
                continue
            scan.files.append(SourceFile(entry.path, f"{root.name}/{rel}", fst.st_size, fst.st_mtime_ns,
                                         inode=fst.st_ino))
        stack.extend(reversed(subfolders))


def _count_files(folder: str) -> int:
    """Files under a pruned folder, for the skipped count (links not followed: a count
    needs no loop guard)."""
    count = 0
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    count += _count_files(entry.path)
                else:
                    count += 1
    except OSError:
        pass
    return count


class NotText(Exception):
    """A file that is not UTF-8 text; `reason` is the skipped count's key, `detail` the
    full explanation."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _safe_cut(text: str) -> int:
    """Where to end a chunk of `text` so that encoding chunks separately gives the ids of
    encoding the whole: before the last newline that follows a non-space character (the
    rule of core/tokenizer.py's split_pieces). 0 if there is none."""
    end = len(text)
    while True:
        i = text.rfind("\n", 0, end)
        if i <= 0:
            return 0
        if not text[i - 1].isspace():
            return i
        end = i


def read_text_chunks(source: SourceFile, digest: hashlib._Hash | None = None,
                     block: int = READ_BLOCK) -> Iterator[str]:
    """The file's text in chunks of about `block` bytes, each ending where a tokenizer
    may cut (see `_safe_cut`). Raises NotText for a NUL byte or invalid UTF-8 (possibly
    after some chunks were given), CorpusError if the file cannot be read or changed
    since the walk saw it. Feeds the raw bytes to `digest` if given."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    carry = ""
    offset = 0
    try:
        f = open(source.path, "rb")
    except FileNotFoundError:
        raise CorpusError(f"{source.path}: vanished while the corpus was being prepared") from None
    except OSError as exc:
        raise CorpusError(f"{source.path}: cannot be read ({exc.strerror or exc})") from None
    with f:
        while True:
            data = f.read(block)
            final = not data
            if data:
                nul = data.find(b"\x00")
                if nul >= 0:
                    raise NotText("binary", f"{source.path}: looks like a binary file (NUL byte at byte offset "
                                            f"{offset + nul}), not text")
                if digest is not None:
                    digest.update(data)
            try:
                text = carry + decoder.decode(data, final=final)
            except UnicodeDecodeError as exc:
                at = offset + len(data) - len(exc.object) + exc.start  # exc.object: the decoder's buffer + data
                raise NotText("not UTF-8", f"{source.path}: is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at "
                                           f"byte offset {at}: {exc.reason})") from None
            offset += len(data)
            if final:
                if text:
                    yield text
                break
            cut = _safe_cut(text)
            if cut == 0 and len(text) < 4 * block:
                carry = text  # no place to cut yet: read on (a line this long is rare)
                continue
            cut = cut or len(text)  # a single line of many megabytes: cut anywhere, memory stays bounded
            yield text[:cut]
            carry = text[cut:]
    try:
        st = source.path.stat()
    except FileNotFoundError:
        raise CorpusError(f"{source.path}: vanished while the corpus was being prepared") from None
    if offset != source.size or st.st_size != source.size or st.st_mtime_ns != source.mtime_ns:
        raise CorpusError(f"{source.path}: changed while the corpus was being prepared "
                          f"({source.size:,} bytes when listed, {offset:,} read, {st.st_size:,} now); "
                          "prepare it again once it is complete")
