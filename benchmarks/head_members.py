"""Each net of an ensemble head alone, before calibration, beside the head's calibrated score.

    python benchmarks/head_members.py "Reminder: dentist appointment on Thursday at 3:30pm" [--head DIR]

Shows whether the nets of `train --members N` agree on a message (default: the bundled head and the
model it names)."""

from __future__ import annotations

import argparse

from elmobatch import load_encoder
from elmobatch.training.head import default_head_dir, load_head, sigmoid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--head", default=None, help="head directory (default: the bundled head)")
    args = parser.parse_args()
    head = load_head(args.head or default_head_dir())
    if not head.binary:
        raise SystemExit("expected a two-label head")
    encoder = load_encoder(head.meta["model"].get("spec") or "default")
    x = encoder.embed_texts(args.texts, layers=True)
    scores, nets_all = head.probabilities(x)[:, 1], sigmoid(head.member_logits(x)[:, :, 0])
    for i, text in enumerate(args.texts):
        nets = nets_all[:, i]
        print(f"{text!r}: head {scores[i]:.3f} ({head.positive_label} at {head.threshold:.3f}); "
              f"each net alone, before calibration: {', '.join(f'{p:.2f}' for p in nets)}")


if __name__ == "__main__":
    main()
