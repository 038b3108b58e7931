"""Write the fortune cookies of Debian's `fortunes` and `fortunes-min` packages as a pretraining corpus.

    python scripts/fortunes_corpus.py FORTUNES_DIR build/fortunes.txt [--max-words 60]

FORTUNES_DIR is /usr/share/games/fortunes after `apt-get install fortunes`, or, without
installing anything, `apt-get download fortunes fortunes-min && dpkg -x PACKAGE.deb DIR` for
each, and DIR/usr/share/games/fortunes (scripts/build_fortunes_model.sh does that).

Each fortune file holds cookies separated by lines of `%`. A cookie becomes one line, its
whitespace collapsed and its attribution lines (`-- Author`) dropped. Cookies longer than
`--max-words` words (text messages are short) and the files that are not prose or not the
package's own (SKIPPED) are left out. License: the BSD license of fortune-mod (Debian's
copyright file for the package); a `.source.json` file beside the output records the source
and license, and `elmobatch pretrain` copies it into model.json.
"""

import argparse
import json
import re
from pathlib import Path

# ASCII drawings, quotes of novels and TV scripts, song lyrics, and non-English text.
SKIPPED = ("ascii-art", "pratchett", "startrek", "songs-poems", "translate-me")
ATTRIBUTION = re.compile(r"^\s+--\s")


def cookies(text: str) -> list[str]:
    """The text of one fortune file -> its cookies, one line each, attributions dropped."""
    found = []
    for cookie in re.split(r"^%\s*$", text, flags=re.MULTILINE):
        lines = [line for line in cookie.splitlines() if not ATTRIBUTION.match(line)]
        joined = " ".join(" ".join(lines).split())
        if joined:
            found.append(joined)
    return found


def fortune_files(directory: Path) -> list[Path]:
    """The cookie files of DIRECTORY (no .dat index or .u8 copy), SKIPPED left out, sorted."""
    return sorted(path for path in directory.iterdir()
                  if path.is_file() and not path.suffix and path.name not in SKIPPED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fortunes_dir", type=Path)
    parser.add_argument("out")
    parser.add_argument("--max-words", type=int, default=60)
    args = parser.parse_args()
    files = fortune_files(args.fortunes_dir) if args.fortunes_dir.is_dir() else []
    if not files:
        raise SystemExit(f"{args.fortunes_dir}: no fortune files; expected the /usr/share/games/fortunes "
                         "folder of Debian's fortunes package")
    kept = []
    for path in files:
        kept += [c for c in cookies(path.read_text(encoding="latin-1")) if len(c.split()) <= args.max_words]
    Path(args.out).write_text("".join(c + "\n" for c in kept), encoding="utf-8")
    source = {"source": f"fortune cookies of Debian's fortunes and fortunes-min packages "
                        f"({len(files)} files, cookies of at most {args.max_words} words, attributions dropped)",
              "license": "BSD (fortune-mod; Debian copyright file of the fortunes package)"}
    Path(args.out + ".source.json").write_text(json.dumps(source, indent=2) + "\n")
    print(f"{args.out}: {len(kept)} cookies from {len(files)} files of {args.fortunes_dir}")


if __name__ == "__main__":
    main()
