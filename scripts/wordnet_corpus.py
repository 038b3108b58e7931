"""Write WordNet 3.0's glosses and example sentences as a pretraining corpus, one per line.

    python scripts/wordnet_corpus.py WORDNET_DIR build/wordnet.txt

WORDNET_DIR holds the `data.noun`, `data.verb`, `data.adj` and `data.adv` files of Debian's
`wordnet-base` package: /usr/share/wordnet after `apt-get install wordnet-base`, or, without
installing it, `apt-get download wordnet-base && dpkg -x wordnet-base_*.deb DIR` and
DIR/usr/share/wordnet (scripts/build_default_model.sh does that).

Each synset line ends with `| gloss; "example"; "example"`: every definition and every example
becomes one line, in file order, quotes stripped. License: the WordNet 3.0 license (Princeton
University), which permits use, copying, modification and distribution, with its notice kept;
a `.source.json` file beside the output records the source, license and notice, and `elmobatch
pretrain` copies it into model.json.
"""

import json
import sys
from pathlib import Path

PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")
NOTICE = ("WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Used under the "
          "WordNet 3.0 license: permission to use, copy, modify and distribute for any purpose without "
          "fee or royalty, provided the copyright notice and statements appear on all copies.")


def gloss_sentences(line: str) -> list[str]:
    """One data-file line -> its definitions and examples ('' parts dropped); [] for comment lines."""
    if line.startswith("  ") or "|" not in line:
        return []
    gloss = line.split("|", 1)[1]
    return [part.strip().strip('"').strip() for part in gloss.split(";") if part.strip().strip('"').strip()]


def main(wordnet_dir: str, out_path: str) -> None:
    sentences = []
    for pos in PARTS_OF_SPEECH:
        path = Path(wordnet_dir) / f"data.{pos}"
        if not path.is_file():
            sys.exit(f"{path}: missing; expected the data files of Debian's wordnet-base package")
        with open(path, encoding="latin-1") as f:
            for line in f:
                sentences += gloss_sentences(line)
    Path(out_path).write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    source = {"source": "WordNet 3.0 glosses and example sentences (Debian package wordnet-base)",
              "license": "WordNet 3.0 license (Princeton University)", "notice": NOTICE}
    Path(out_path + ".source.json").write_text(json.dumps(source, indent=2) + "\n")
    print(f"{out_path}: {len(sentences)} definitions and examples from {wordnet_dir}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
