"""scripts/fortunes_corpus.py: fortune files -> one cookie per line, with its .source.json."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "fortunes_corpus.py"

PEOPLE = """A friend is a present you give yourself.
\t\t-- Robert Louis Stevenson
%
A bore is someone who persists in holding his own views after we have
enlightened him with ours.
%
%
""" + " ".join(["word"] * 61) + """
%
"I think there is a world market for about five computers."
\t\t-- Thomas J. Watson, 1943, cited in Cerf/Navasky,
\t\t   "The Experts Speak"
%
A critic creates nothing, so he is unbiased
-- he hates all creative people equally.
\t\t-- Robert Heinlein
%
Sam: What's up, Norm?
\t-- Cheers, episode 1
Norm: My nipples. It's freezing out there.
\t-- Cheers, episode 2
%\x20
-- Gifts for Children --
A pony.
%
Go ahead... make my day. -- Clint Eastwood
%
Caf\u00e9 au lait -- c'est la vie, at \u00a35 a cup.
%
Here\u00e2\u0080\u0099s the thing.
%
This is ____\b\b\b\bBOLD and this a bell\x07.
%
  /\\_/\\
 ( o.o )
  > ^ <
%
Last cookie, no percent line after it.
"""
EXPECTED = [
    "A friend is a present you give yourself.",
    "A bore is someone who persists in holding his own views after we have enlightened him with ours.",
    '"I think there is a world market for about five computers."',
    "A critic creates nothing, so he is unbiased -- he hates all creative people equally.",
    "Sam: What's up, Norm? Norm: My nipples. It's freezing out there.",
    "-- Gifts for Children -- A pony.",
    "Go ahead... make my day.",
    "Caf\u00e9 au lait -- c'est la vie, at \u00a35 a cup.",
    "Here\u2019s the thing.",
    "This is BOLD and this a bell.",
    "Last cookie, no percent line after it.",
]


def load_script():
    spec = importlib.util.spec_from_file_location("fortunes_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fortunes_dir(tmp_path: Path, leave_out: str | None = None) -> Path:
    """A folder holding every kept file (empty but `people`), a skipped one, and index files."""
    directory = tmp_path / "fortunes"
    directory.mkdir()
    for name in load_script().KEPT:
        if name != leave_out:
            (directory / name).write_text("", encoding="utf-8")
    (directory / "people").write_text(PEOPLE, encoding="utf-8")
    (directory / "people.dat").write_bytes(b"\x00\x00\x00\x02 index, not text")
    (directory / "pratchett").write_text("A quote from a novel.\n%\n", encoding="utf-8")
    return directory


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_cookies_become_clean_lines_and_only_kept_files_are_read(tmp_path):
    out = tmp_path / "fortunes.txt"

    result = run(str(fortunes_dir(tmp_path)), str(out))

    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8").splitlines() == EXPECTED
    source = json.loads((tmp_path / "fortunes.txt.source.json").read_text(encoding="utf-8"))
    assert source["source"].startswith("fortune cookies of Debian's fortunes and fortunes-min packages (37 files")
    assert "BSD" in source["license"] and "not redistributed" in source["license"]
    assert f"{len(EXPECTED)} cookies (files read: 37)" in result.stdout


def test_max_words_keeps_longer_cookies(tmp_path):
    out = tmp_path / "fortunes.txt"

    assert run(str(fortunes_dir(tmp_path)), str(out), "--max-words", "61").returncode == 0

    assert " ".join(["word"] * 61) in out.read_text(encoding="utf-8").splitlines()


def test_a_folder_missing_a_kept_file_is_refused_by_name(tmp_path):
    out = tmp_path / "out.txt"

    result = run(str(fortunes_dir(tmp_path, leave_out="riddles")), str(out))

    assert result.returncode != 0
    assert "missing fortune files riddles;" in result.stderr
    assert not out.exists()
