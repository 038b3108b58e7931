"""Write the fortune cookies of Debian's `fortunes` and `fortunes-min` packages as a pretraining corpus.

    python scripts/fortunes_corpus.py FORTUNES_DIR build/fortunes.txt [--max-words 60]

FORTUNES_DIR is /usr/share/games/fortunes after `apt-get install fortunes fortunes-min`, or,
without installing anything, `apt-get download fortunes fortunes-min && dpkg -x PACKAGE.deb DIR`
for each, and DIR/usr/share/games/fortunes (scripts/build_fortunes_model.sh does that).

Each fortune file (UTF-8) holds cookies separated by lines of `%`. A cookie becomes one line:
text encoded twice as UTF-8 repaired, overstrikes (`X<backspace>`) and control characters
removed, attributions dropped (an indented `-- Author` line with the indented lines after it, a
trailing ` -- Author` after the last sentence, a trailing `(By Author)`), whitespace collapsed.
Only the files of KEPT are read; cookies longer than `--max-words` words (text messages are
short) and drawings (fewer than half of their characters letters) are left out.

Copyright: the packages are in Debian main under fortune-mod's BSD copyright file, which names no
separate license for the quotations; a `.source.json` file beside the output records the source,
and `elmobatch pretrain` copies it into model.json. The corpus is used to measure what more text
does; it is not redistributed.
"""

import argparse
import json
import re
from pathlib import Path

# The cookie files of fortunes 1:1.99.1 and fortunes-min, less drawings (ascii-art), quotes of
# novels, TV scripts and a comic strip (pratchett, startrek, zippy), lyrics (songs-poems) and
# non-English text (translate-me).
KEPT = ("art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education",
        "ethnic", "food", "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law", "linux",
        "linuxcookie", "literature", "love", "magic", "medicine", "men-women", "miscellaneous", "news",
        "paradoxum", "people", "perl", "pets", "platitudes", "politics", "riddles", "science", "sports",
        "tao", "wisdom", "work")
SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)
ATTRIBUTION_LINE = re.compile(r"^\s+--\s*\S")  # indented: a dash inside the text starts at column 0
TRAILING_ATTRIBUTION = re.compile(r"(?<=[.!?\"')])\s+--\s*[A-Z][\w .,'&-]{0,60}$|\s*\(By [^()]*\)$")
OVERSTRIKE = re.compile(r"[^\x08]\x08")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def repair_double_encoding(text: str) -> str:
    """Undo UTF-8 read as Latin-1 (as many times as it was done): "Here\u00e2\u0080\u0099s" -> "Here\u2019s"."""
    while True:
        try:
            repaired = text.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
        if repaired == text:
            return text
        text = repaired


def without_attributions(lines: list[str]) -> list[str]:
    """Drop each indented `-- Author` line and the indented lines right after it; keep the rest."""
    kept, in_attribution = [], False
    for line in lines:
        if in_attribution and line[:1].isspace() and line.strip():
            continue  # the attribution goes on
        in_attribution = bool(ATTRIBUTION_LINE.match(line))
        if not in_attribution:
            kept.append(line)
    return kept


def clean(cookie: str) -> str:
    """One cookie's text -> one line: encoding repaired, overstrikes, control characters and
    attributions removed, whitespace collapsed."""
    cookie = repair_double_encoding(cookie)
    removed = 1
    while removed:  # "___\b\b\bWORD" takes one pass per backspace
        cookie, removed = OVERSTRIKE.subn("", cookie)
    lines = without_attributions(CONTROL.sub("", cookie.strip("\n")).splitlines())
    return TRAILING_ATTRIBUTION.sub("", " ".join(" ".join(lines).split()))


def is_prose(cookie: str) -> bool:
    characters = cookie.replace(" ", "")
    return sum(c.isalpha() for c in characters) >= len(characters) / 2


def cookies(text: str) -> list[str]:
    """The text of one fortune file -> its cookies that are prose, one line each."""
    return [c for c in map(clean, SEPARATOR.split(text)) if c and is_prose(c)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fortunes_dir", type=Path)
    parser.add_argument("out")
    parser.add_argument("--max-words", type=int, default=60)
    args = parser.parse_args()
    missing = [name for name in KEPT if not (args.fortunes_dir / name).is_file()]
    if missing:
        raise SystemExit(f"{args.fortunes_dir}: missing fortune files {', '.join(missing)}; expected the "
                         "/usr/share/games/fortunes folder of Debian's fortunes and fortunes-min packages")
    kept = []
    for name in KEPT:
        text = (args.fortunes_dir / name).read_text(encoding="utf-8")
        kept += [c for c in cookies(text) if len(c.split()) <= args.max_words]
    Path(args.out).write_text("".join(c + "\n" for c in kept), encoding="utf-8")
    source = {"source": f"fortune cookies of Debian's fortunes and fortunes-min packages ({len(KEPT)} files, "
                        f"cookies of at most {args.max_words} words, attributions dropped)",
              "license": "Debian main, fortune-mod's BSD copyright file (no separate license named for the "
                         "quotations); measured with, not redistributed"}
    Path(args.out + ".source.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(kept)} cookies (files read: {len(KEPT)})")


if __name__ == "__main__":
    main()
