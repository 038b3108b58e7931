"""scripts/fortunes_corpus.py: fortune files -> one cookie per line, with its .source.json."""

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
Last cookie, no percent line after it.
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_cookies_become_lines_without_attributions_long_ones_and_skipped_files(tmp_path):
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    (fortunes / "people").write_text(PEOPLE, encoding="latin-1")
    (fortunes / "people.dat").write_bytes(b"\x00\x00\x00\x02 index, not text")
    (fortunes / "people.u8").write_text(PEOPLE, encoding="utf-8")
    (fortunes / "pratchett").write_text("A quote from a novel.\n%\n", encoding="latin-1")
    out = tmp_path / "fortunes.txt"

    result = run(str(fortunes), str(out))

    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8").splitlines() == [
        "A friend is a present you give yourself.",
        "A bore is someone who persists in holding his own views after we have enlightened him with ours.",
        "Last cookie, no percent line after it.",
    ]
    source = json.loads((tmp_path / "fortunes.txt.source.json").read_text())
    assert "fortunes" in source["source"] and source["license"].startswith("BSD")
    assert "3 cookies from 1 files" in result.stdout


def test_max_words_keeps_longer_cookies(tmp_path):
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    (fortunes / "people").write_text(PEOPLE, encoding="latin-1")
    out = tmp_path / "fortunes.txt"

    assert run(str(fortunes), str(out), "--max-words", "61").returncode == 0

    assert len(out.read_text(encoding="utf-8").splitlines()) == 4


def test_a_folder_without_fortune_files_is_refused_by_name(tmp_path):
    result = run(str(tmp_path / "missing"), str(tmp_path / "out.txt"))

    assert result.returncode != 0
    assert "missing: no fortune files" in result.stderr
    assert not (tmp_path / "out.txt").exists()
