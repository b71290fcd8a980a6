"""`neobert prepare`'s own faults (issue 20, items 5 and 6): an unreadable input, impossible numbers, a full
disk, a killed or interrupted run, and a one-line file far longer than a document. Each is one line naming the
file or option with the exit code of every command (usage 2, full disk 4), before any work where it can be,
and leaves nothing half-written; over-long text is read in bounded parts."""

import contextlib
import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import one_line_error
from helpers.data import WORDS, sample_texts, write_jsonl
from neobert.cli import main
from neobert.data import plain_text, source_base, sources
from neobert.data.plain_text import DocumentCutter
from neobert.data.sources import ReaderOptions, TextFileSource, resolve_sources

SRC = Path(__file__).resolve().parents[2] / "src"
QUIET = ["--workers", "1", "--no-progress"]


def test_an_unreadable_input_file_is_named_before_any_work(tmp_path, capsys, monkeypatch):
    # Before: a PermissionError traceback, after the output folder was made. Root reads any file whatever
    # its mode, so the refusal of the operating system is simulated where the file is opened.
    good, locked = tmp_path / "good.txt", tmp_path / "locked.txt"
    good.write_text("some text\n")
    locked.write_text("more text\n")
    locked.chmod(0)
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(source_base, "open", refusing_open, raising=False)
    out = tmp_path / "corpus"
    assert main(["prepare", str(good), str(locked), "--out", str(out), *QUIET]) == 2
    assert f"{locked}: cannot be read (Permission denied)" in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--heldout-fraction", "1.5", "--heldout-fraction must lie in [0, 1), got 1.5"),
        ("--heldout-fraction", "nan", "--heldout-fraction must lie in [0, 1), got nan"),
        ("--max-length", "2", "--max-length must leave room for [CLS], a token and [SEP] (3), got 2"),
        ("--shard-tokens", "0", "--shard-tokens must be at least 1, got 0"),
        ("--workers", "-1", "--workers must be 0 (one per core) or more, got -1"),
    ],
)
def test_impossible_numbers_are_usage_errors_before_any_input_is_read(tmp_path, capsys, option, value, message):
    # Before: a ValueError traceback and exit 1, after the inputs were resolved and the tokenizer loaded.
    out = tmp_path / "corpus"
    missing = tmp_path / "not-read-yet.txt"  # a missing input would be named if it were looked at first
    assert main(["prepare", str(missing), "--out", str(out), "--no-progress", option, value]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_a_bad_input_exits_2_as_in_every_other_command(tmp_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    assert main(["prepare", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o"), *QUIET]) == 2  # was 1
    assert f"neobert prepare: {tmp_path / 'empty.txt'}: the file is empty" in one_line_error(capsys)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])  # EFBIG: a file-size limit (`ulimit -f`)
def test_a_full_disk_names_the_file_exits_4_and_leaves_no_temporary(tmp_path, capsys, monkeypatch, code):
    # Before: "No space left on device" without a path, and the temporary shard left filling the disk.
    source = write_jsonl(tmp_path / "in.jsonl", sample_texts(40))
    real_write = np.lib.format.write_array

    def write_then_fail(handle, array, *args, **kwargs):
        if handle.name.startswith(str(tmp_path / "corpus" / "train")):
            handle.write(b"\0" * 4096)  # part of the shard is on disk when the disk fills up
            raise OSError(code, os.strerror(code))
        return real_write(handle, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    out = tmp_path / "corpus"
    assert main(["prepare", str(source), "--out", str(out), *QUIET]) == 4
    error = one_line_error(capsys)
    assert f"neobert prepare: {out / 'train' / 'shard_00000.tokens.npy'}: {os.strerror(code)}" in error
    assert [p.name for p in out.rglob("*.tmp")] == []


WORKER_SCRIPT = """
import os, signal, sys, time
# Ctrl-C as at a terminal: a suite started in the background by a non-interactive shell runs with SIGINT
# ignored, which its subprocesses inherit (and Python then keeps ignoring it).
signal.signal(signal.SIGINT, signal.default_int_handler)
import neobert.data.prepare as prepare
real_encode = prepare.encode_in_worker

def encode_when_released(texts):
    open(os.path.join(sys.argv[2], f"worker-{os.getpid()}"), "w").close()
    # Still working when its parent is stopped: the test releases it only after the signal was sent, and a
    # worker that outlived its parent would then send its result into the closed pipe.
    deadline = time.monotonic() + 120  # a hang guard only
    while not os.path.exists(os.path.join(sys.argv[2], "release")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return real_encode(texts)

prepare.encode_in_worker = encode_when_released
from neobert.cli import main
sys.exit(main(["prepare", sys.argv[1], "--out", os.path.join(sys.argv[2], "corpus"), "--workers", "2",
               "--no-progress"]))
"""


@pytest.mark.parametrize("stop", ["SIGTERM to prepare", "Ctrl-C to its process group"])
def test_a_stopped_prepare_leaves_no_worker_to_print_a_traceback(tmp_path, stop):
    # Before: each worker outlived its killed parent and printed a BrokenPipeError traceback when it sent its
    # result; on Ctrl-C every worker printed a KeyboardInterrupt traceback.
    source = write_jsonl(tmp_path / "in.jsonl", sample_texts(1500, long_every=3))  # 3 batches of 1 MB
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER_SCRIPT), str(source), str(markers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300  # a hang guard only
    while len(list(markers.glob("worker-*"))) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    if stop == "SIGTERM to prepare":
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)
    (markers / "release").touch()  # after the signal, whatever the machine's load: the run cannot end first
    # The pipes close once every process holding them, the workers included, has ended: an orphaned worker
    # would keep them open (and print its traceback into them).
    out, err = process.communicate(timeout=300)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    if stop == "SIGTERM to prepare":
        assert process.returncode == -signal.SIGTERM and err == ""
    else:
        assert process.returncode == 130
        assert err.strip() == "neobert prepare: interrupted; run the same command again to resume"


def _reference_documents(path: Path, unit: str) -> list[str]:
    """The plain-text reader before it read in parts: whole lines, whole documents."""
    lines = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle):
            with contextlib.suppress(UnicodeDecodeError):
                lines.append(raw.decode("utf-8-sig" if number == 0 else "utf-8"))
    if unit == "line":
        return [line.rstrip("\r\n") for line in lines if line.strip()]
    if unit == "file":
        text = "".join(lines)
        return [text] if text.strip() else []
    documents, paragraph = [], []
    for line in lines:
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            documents.append("".join(paragraph).rstrip("\r\n"))
            paragraph = []
    return documents + (["".join(paragraph).rstrip("\r\n")] if paragraph else [])


def _reference_cut(text: str, limit: int) -> list[str]:
    """How `prepare` cut an over-long document before: the whole text at once."""
    pieces = []
    while len(text) > limit:
        cut = text.rfind(" ", limit // 2, limit)
        cut = limit if cut <= 0 else cut
        pieces.append(text[:cut])
        text = text[cut:]
    return [*pieces, text]


def _awkward_text(rng: random.Random) -> bytes:
    parts = [b"\xef\xbb\xbf"] if rng.random() < 0.3 else []
    for _ in range(rng.randint(1, 30)):
        kind = rng.random()
        if kind < 0.2:
            parts.append(rng.choice([b"\n", b"\r\n", b"   \n", b" \t \r\n"]))
        elif kind < 0.3:
            parts.append(b"   " * rng.randint(1, 20) + b"\n")  # a long blank line
        else:
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 60))]
            sep = rng.choice([" ", "", "  "])
            parts.append((sep.join(words) + rng.choice(["\n", "\r\n", " \n", ""])).encode())
    return b"".join(parts)


@pytest.mark.parametrize("unit", ["blank_line", "line", "file"])
def test_reading_in_parts_gives_the_documents_and_cuts_of_reading_whole(tmp_path, monkeypatch, unit):
    # Parts of 7 bytes split lines, words and multi-byte characters (café, naïve) everywhere.
    monkeypatch.setattr(plain_text, "LINE_PART_BYTES", 7)
    rng = random.Random(unit)
    for trial in range(60):
        path = tmp_path / f"text-{trial}.txt"
        path.write_bytes(_awkward_text(rng))
        source = TextFileSource(path, ReaderOptions(text_unit=unit))
        expected = _reference_documents(path, unit)
        if not expected:
            with pytest.raises(sources.DataError, match="no text found"):
                list(source.documents())
            continue
        assert list(source.documents()) == expected, path.read_bytes()
        limit = rng.randint(4, 40)
        cut = [(piece, number) for document in expected for number, piece in enumerate(_reference_cut(document, limit))]
        assert list(source.pieces(limit)) == cut, (path.read_bytes(), limit)


def test_undecodable_lines_are_skipped_and_counted_when_read_in_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(plain_text, "LINE_PART_BYTES", 8)
    path = tmp_path / "bad.txt"
    path.write_bytes(b"short ok\nbad \xff\n\nbegins well then \xff goes bad\nlast one\n")
    source = TextFileSource(path, ReaderOptions(text_unit="line"))
    # A short line is skipped whole; of a long one, the parts before the bad byte were read already.
    assert list(source.documents()) == ["short ok", "begins well then", "last one"]
    assert source.counts.undecodable_lines == 2


def test_a_one_line_file_is_cut_into_documents_reading_bounded_parts(tmp_path, monkeypatch):
    text = " ".join(random.Random(0).choice(WORDS) for _ in range(10_000)) * 45  # about 2.3 MB on one line
    path = tmp_path / "one-line.txt"
    path.write_text(text + "\n")
    largest = []
    real_open_binary = TextFileSource.open_binary

    def recording_open_binary(self):
        handle = real_open_binary(self)
        real_readline = handle.readline

        def readline(size=-1):
            assert 0 < size <= plain_text.LINE_PART_BYTES  # never a whole line at once
            line = real_readline(size)
            largest.append(len(line))
            return line

        handle.readline = readline
        return handle

    monkeypatch.setattr(TextFileSource, "open_binary", recording_open_binary)
    (source,) = resolve_sources([str(path)], ReaderOptions())
    pieces = list(source.pieces(1_000_000))
    assert [piece for piece, _ in pieces] == _reference_cut(text, 1_000_000)
    assert [number for _, number in pieces] == list(range(len(pieces))) and len(pieces) >= 3
    assert max(largest) == plain_text.LINE_PART_BYTES


RSS_SCRIPT = """
import resource, sys
from neobert.data.sources import ReaderOptions, resolve_sources
(source,) = resolve_sources([sys.argv[1]], ReaderOptions())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pieces = sum(1 for _ in source.pieces(1_000_000))
print(pieces, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_the_memory_of_reading_a_20_mb_line_stays_below_the_lines_size(tmp_path):
    # Before: the line was read whole, decoded, joined and cut by copies: 76 MB more at the peak for 20 MB
    # (a 200 MB line took 3.2 GB). Now about 9 MB: a few parts and pieces of a million characters.
    segment = " ".join(random.Random(1).choice(WORDS) for _ in range(10_000)) + " "
    path = tmp_path / "one-line.txt"
    path.write_text(segment * (20_000_000 // len(segment) + 1) + "\n")
    size_kb = path.stat().st_size // 1024
    assert size_kb > 19_000
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    printed = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path)], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    pieces, growth_kb = int(printed[0]), int(printed[1])  # ru_maxrss is in kB on Linux
    assert pieces >= 20
    assert growth_kb < size_kb, f"peak memory grew by {growth_kb} kB reading a {size_kb} kB line"


def test_a_cutter_waits_for_text_beyond_the_limit_before_cutting():
    # Line ends the finished document loses cannot decide a cut: "abcd\n" at limit 4 is one document.
    cutter = DocumentCutter(4, "\r\n")
    assert list(cutter.add("abcd\r\n")) == []
    assert list(cutter.finish()) == [("abcd", 0)]
