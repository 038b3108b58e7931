"""The labelled messages of today (data/modern) and the evaluation sets stay apart: the training file
that scripts/modern_sms.py writes holds no near copy of an evaluation message, and every file is
labelled ham or spam with made-up links only."""

import csv
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("modern_sms", REPO / "scripts" / "modern_sms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    module = load_script()
    out = tmp_path_factory.mktemp("modern") / "modern_sms.csv"
    module.main(str(out))
    return module, read(out), out


def test_training_file_holds_no_near_copy_of_an_evaluation_message(built):
    module, rows, _ = built
    evaluation = [r["text"] for p in module.EVALUATION for r in read(p)]
    assert len(evaluation) == 171 + 200
    fingerprints = [module.Fingerprint.of(t) for t in evaluation]
    for row in rows:
        assert module.too_close(module.Fingerprint.of(row["v2"]), fingerprints) is None, row["id"]
    # Checked again here without the script's code: words shared, and codes of 6+ digits shared.
    words = [set(re.findall(r"\w+", t.lower())) for t in evaluation]
    codes = set().union(*(re.findall(r"\d{6,}", t.replace(" ", "")) for t in evaluation))
    for row in rows:
        mine = set(re.findall(r"\w+", row["v2"].lower()))
        closest = max(len(mine & w) / len(mine | w) for w in words)
        assert closest < 0.6, (row["id"], closest)
        assert not codes & set(re.findall(r"\d{6,}", row["v2"].replace(" ", ""))), row["id"]


def test_a_reworded_copy_is_caught(built):
    module, _, _ = built
    everyday = module.Fingerprint.of("Reminder: dentist appointment on Thursday at 3:30pm")
    assert module.too_close(module.Fingerprint.of("reminder - dentist appt on thursday at 3.30pm"), [everyday])
    assert module.too_close(module.Fingerprint.of("Your code is 118 402"), [module.Fingerprint.of("code: 118402")])
    assert module.too_close(module.Fingerprint.of("Parcel for flat 2 left in the porch"), [everyday]) is None


def test_training_file_keeps_the_rest_with_labels_and_a_text_corpus(built):
    module, rows, out = built
    sources = [r for p in module.SOURCES for r in read(p)]
    kept_kinds = [r for r in sources if r["kind"] not in module.LEFT_OUT_KINDS]
    assert {r["v1"] for r in rows} == {"ham", "spam"}
    assert 0.9 * len(kept_kinds) < len(rows) < len(kept_kinds)  # near copies of evaluation rows are few
    assert not any(r["kind"] in module.LEFT_OUT_KINDS for r in rows)
    corpus = out.with_suffix(".txt").read_text(encoding="utf-8").splitlines()
    assert corpus == [" ".join(r["v2"].split()) for r in rows]


@pytest.mark.parametrize("path", ["data/modern/ham.csv", "data/modern/spam.csv", "benchmarks/everyday.csv",
                                  "benchmarks/everyday_blind.csv"])
def test_labelled_sets_are_clean(path):
    rows = read(REPO / path)
    assert {r["label"] for r in rows} <= {"ham", "spam"} and all(r["text"].strip() for r in rows)
    assert len({r["text"] for r in rows}) == len(rows)  # no duplicate message
    for r in rows:  # links only on reserved example domains
        for host in re.findall(r"(?:https?://)?((?:[\w-]+\.)+[a-z]{2,})(?:/|\b)", r["text"].lower()):
            assert re.search(r"(^|\.)example(\.(com|net|org))?$", host), (path, r["id"], host)
