"""`elmobatch train`, `evaluate` and `score` end to end on the reference file with the fixture model."""

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.training.head import load_head
from tests.conftest import FIXTURE, SMS, tiny_options, write_random_model

N_TEST = 1115


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    else:
        assert result.exit_code != 0, result.output
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("heads")


@pytest.fixture(scope="module")
def cache(work):
    return work / "cache"


@pytest.fixture(scope="module")
def sms_head(work, cache, fixture_dir):
    """A head trained on the reference split (few epochs: the suite stays fast)."""
    out = work / "sms_head"
    result = run("train", SMS, "--label-column", "v1", "--model", fixture_dir, "--out", out, "--split", "last:0.2",
                 "--epochs", 3, "--cache-dir", cache)
    return out, result.output


@pytest.fixture(scope="module")
def sms_test_file(work):
    """The last 1,115 records of the reference file (one record per line there), header kept."""
    lines = SMS.read_bytes().split(b"\n")
    path = work / "sms_test.csv"
    path.write_bytes(b"\n".join([lines[0]] + lines[-N_TEST:]))
    return path


def test_train_writes_head_json_with_metrics(sms_head, fixture_encoder):
    out, output = sms_head
    meta = json.loads((out / "head.json").read_text())
    assert meta["labels"] == ["ham", "spam"] and meta["positive_label"] == "spam"
    assert 0 < meta["threshold"] < 1
    assert meta["model"]["fingerprint"] == fixture_encoder.fingerprint
    data = meta["data"]
    assert data["train_rows"] == {"count": 4457, "first": 0, "last": 4456}
    assert data["test_rows"] == {"count": N_TEST, "first": 4457, "last": 5571}
    assert len(data["file_sha256"]) == 64 and len(data["train_fingerprint"]) == 64
    assert sum(meta["layer_weights"]) == pytest.approx(1.0) and len(meta["layer_weights"]) == 3
    metrics = meta["metrics"]
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert 0 <= metrics[key] <= 1, key
    assert np.sum(metrics["confusion_matrix"]["rows_true_columns_predicted"]) == N_TEST
    assert metrics["roc_auc"] > 0.6  # even a 3-epoch head on a random tiny model beats chance
    assert f"accuracy   {metrics['accuracy']:.4f}" in output


def test_score_writes_every_test_row(sms_head, sms_test_file, work, cache, tmp_path, monkeypatch):
    out, _ = sms_head
    monkeypatch.chdir(tmp_path)  # the default output goes to the current directory
    result = run("score", sms_test_file, "--head", out, "--cache-dir", cache)
    scored = pd.read_csv(tmp_path / "sms_test.scored.csv", keep_default_na=False)
    assert len(scored) == N_TEST and "rows_read 1115 = scored 1115 + rejected 0" in result.output
    assert list(scored.columns[:2]) == ["v1", "v2"] and list(scored.columns[-2:]) == ["label", "score"]
    original = pd.read_csv(sms_test_file, encoding="latin-1", keep_default_na=False)
    assert scored["v1"].tolist() == original["v1"].tolist()  # every row, in file order
    assert set(scored["label"]) <= {"ham", "spam"} and scored["score"].between(0, 1).all()
    threshold = load_head(out).threshold
    assert ((scored["score"] >= threshold) == (scored["label"] == "spam")).all()
    assert len(pd.read_csv(tmp_path / "sms_test.scored.rejects.csv")) == 0

    # Parquet by extension, and --threshold moves the decision.
    run("score", sms_test_file, "--head", out, "--cache-dir", cache, "--out", tmp_path / "s.parquet",
        "--threshold", 0.0)
    table = pq.read_table(tmp_path / "s.parquet").to_pandas()
    assert len(table) == N_TEST and (table["label"] == "spam").all()
    np.testing.assert_allclose(table["score"], scored["score"])


def test_evaluate_equals_recomputation_from_scored_file(sms_head, sms_test_file, cache, tmp_path):
    out, _ = sms_head
    run("score", sms_test_file, "--head", out, "--cache-dir", cache, "--out", tmp_path / "scored.csv")
    result = run("evaluate", sms_test_file, "--label-column", "v1", "--head", out, "--cache-dir", cache,
                 "--out", tmp_path / "report")
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    scored = pd.read_csv(tmp_path / "scored.csv", keep_default_na=False)
    truth, pred, score = scored["v1"] == "spam", scored["label"] == "spam", scored["score"].to_numpy()
    tp, fp, fn = (truth & pred).sum(), (~truth & pred).sum(), (truth & ~pred).sum()
    assert metrics["rows"] == N_TEST
    assert metrics["accuracy"] == pytest.approx((truth == pred).mean(), abs=1e-12)
    assert metrics["precision"] == pytest.approx(tp / (tp + fp), abs=1e-12)
    assert metrics["recall"] == pytest.approx(tp / (tp + fn), abs=1e-12)
    assert metrics["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    pairs = score[truth.to_numpy()][:, None] - score[~truth.to_numpy()][None, :]
    assert metrics["roc_auc"] == pytest.approx(((pairs > 0).sum() + 0.5 * (pairs == 0).sum()) / pairs.size, abs=1e-9)
    assert metrics["confusion_matrix"]["rows_true_columns_predicted"] == [[int((~truth & ~pred).sum()), int(fp)],
                                                                          [int(fn), int(tp)]]
    # The same rows picked by --split from the full file give head.json's held-out metrics.
    head_metrics = json.loads((out / "head.json").read_text())["metrics"]
    assert metrics["accuracy"] == pytest.approx(head_metrics["accuracy"]) and f"{metrics['f1']:.4f}" in result.output
    report = tmp_path / "report"
    for picture in ("roc_curve.png", "precision_recall.png", "score_histogram.png", "confusion_matrix.png",
                    "layer_weights.png"):
        assert (report / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report / "report.html").read_text().count("data:image/png;base64,") == 5


def test_evaluate_split_rows_equal_head_json(sms_head, cache, tmp_path):
    out, _ = sms_head
    run("evaluate", SMS, "--label-column", "v1", "--head", out, "--cache-dir", cache, "--split", "last:0.2",
        "--out", tmp_path / "r")
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["rows"] == N_TEST
    assert metrics["confusion_matrix"] == json.loads((out / "head.json").read_text())["metrics"]["confusion_matrix"]


def test_head_of_another_model_is_refused(sms_head, sms_test_file, cache, tmp_path):
    out, _ = sms_head
    other = write_random_model(tmp_path / "other_model", tiny_options())
    result = run("score", sms_test_file, "--head", out, "--model", other, "--cache-dir", cache,
                 "--out", tmp_path / "x.csv", ok=False)
    assert "fingerprint" in result.output and "another model" in result.output
    assert not (tmp_path / "x.csv").exists()
    result = run("evaluate", sms_test_file, "--label-column", "v1", "--head", out, "--model", other,
                 "--cache-dir", cache, ok=False)
    assert "fingerprint" in result.output


def test_single_class_training_data_is_refused(work, cache, tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"text": ["hello there", "see you", "ok"], "label": ["ham"] * 3}).to_csv(path, index=False)
    result = run("train", path, "--label-column", "label", "--model", FIXTURE, "--out", tmp_path / "h",
                 "--cache-dir", cache, ok=False)
    assert "one label value (only 'ham')" in result.output
    result = run("train", path, "--label-column", "nope", "--model", FIXTURE, "--out", tmp_path / "h",
                 "--cache-dir", cache, ok=False)
    assert "no label column 'nope'" in result.output
    result = run("train", SMS, "--label-column", "v2", "--model", FIXTURE, "--out", tmp_path / "h",  # v1, v2 swapped
                 "--cache-dir", cache, ok=False)
    assert result.exit_code == 1 and not (tmp_path / "h").exists()
    assert "sms_spam.csv: the label column 'v2' is also the text column; expected the column" in result.output


def _relabelled_sms(path, n, relabel):
    """The first n reference rows as a clean UTF-8 file with columns message, category."""
    frame = pd.read_csv(SMS, encoding="latin-1", usecols=[0, 1], nrows=n, keep_default_na=False)
    frame = frame.rename(columns={"v1": "category", "v2": "message"})
    frame["category"] = [relabel(c, m) for c, m in zip(frame["category"], frame["message"], strict=True)]
    frame.to_csv(path, index=False)
    return frame


@pytest.mark.slow  # trains two heads on 800 rows
def test_other_label_names_and_three_labels(cache, tmp_path):
    binary = tmp_path / "binary.csv"
    _relabelled_sms(binary, 800, lambda c, m: "junk" if c == "spam" else "keep")
    run("train", binary, "--label-column", "category", "--text-column", "message", "--model", FIXTURE,
        "--out", tmp_path / "hb", "--epochs", 3, "--cache-dir", cache)
    assert load_head(tmp_path / "hb").labels == ["keep", "junk"]  # the rarer label is the positive one

    three = tmp_path / "three.csv"
    frame = _relabelled_sms(three, 800, lambda c, m: c if c == "spam" else ("short" if len(m) < 40 else "long"))
    result = run("train", three, "--label-column", "category", "--model", FIXTURE, "--out", tmp_path / "h3",
                 "--epochs", 3, "--split", "random:0.25:1", "--cache-dir", cache)
    head = json.loads((tmp_path / "h3" / "head.json").read_text())
    assert head["labels"] == ["long", "short", "spam"] and head["threshold"] is None
    assert head["metrics"]["rows"] == 200
    assert len(head["metrics"]["confusion_matrix"]["rows_true_columns_predicted"]) == 3
    assert "(macro)" in result.output
    run("score", three, "--head", tmp_path / "h3", "--cache-dir", cache, "--out", tmp_path / "s3.csv")
    scored = pd.read_csv(tmp_path / "s3.csv", keep_default_na=False)
    assert len(scored) == len(frame) and set(scored["label"]) <= {"long", "short", "spam"}
    assert (scored["score"] >= 1 / 3 - 1e-6).all()  # the predicted label's probability is the largest
    run("evaluate", three, "--label-column", "category", "--head", tmp_path / "h3", "--cache-dir", cache,
        "--out", tmp_path / "r3")
    assert (tmp_path / "r3" / "report.html").is_file()
    result = run("score", three, "--head", tmp_path / "h3", "--threshold", 0.5, "--cache-dir", cache,
                 "--out", tmp_path / "t.csv", ok=False)
    assert "--threshold applies to two-label heads" in result.output


def test_rejected_rows_go_to_the_rejects_file(sms_head, cache, tmp_path):
    out, _ = sms_head
    path = tmp_path / "messy.csv"
    path.write_bytes(b"v1,v2\nham,hello there\nspam,bad \x00 byte\nham,see you\nham,a,b,c,d,e\n")
    result = run("score", path, "--head", out, "--cache-dir", cache, "--out", tmp_path / "messy_scored.csv")
    scored = pd.read_csv(tmp_path / "messy_scored.csv", keep_default_na=False)
    rejects = pd.read_csv(tmp_path / "messy_scored.rejects.csv")
    assert len(scored) + len(rejects) == 4 and "nul_byte" in set(rejects["reason"])
    assert "rows_read 4 = scored" in result.output
    assert scored["v2"].tolist()[:2] == ["hello there", "see you"]


def test_an_input_named_like_another_inputs_default_output_is_refused_naming_the_default(tmp_path, monkeypatch):
    """`score *.csv` run twice in one folder, without --out: the message names the default output, not --out;
    with --out -, the rejects files."""
    from elmobatch.scoring.score import OutputNameError, output_paths

    monkeypatch.chdir(tmp_path)
    inputs = [tmp_path / "a.csv", tmp_path / "a.scored.csv"]
    with pytest.raises(OutputNameError) as refused:
        output_paths(inputs, None)
    assert str(refused.value).startswith(f"{tmp_path / 'a.scored.csv'} (the default output name): that is one of")
    # --out -: only the rejects files are written, so an input named like another's scores is no clash,
    # one named like its rejects file is, and two stems clash over the rejects file they would share
    assert output_paths(inputs, None, rejects_only=True) == [tmp_path / "a.scored.csv",
                                                             tmp_path / "a.scored.scored.csv"]
    rejects = tmp_path / "a.scored.rejects.csv"
    with pytest.raises(OutputNameError, match=r"a.scored.rejects.csv \(the rejects file of --out -\): that is one of"):
        output_paths([tmp_path / "a.csv", rejects], None, rejects_only=True)
    with pytest.raises(OutputNameError, match=r"so both would write .*day.scored.rejects.csv: score them in separate "
                                              r"runs, each from its own directory"):
        output_paths([tmp_path / "x" / "day.csv", tmp_path / "y" / "day.csv"], None, rejects_only=True)


def test_output_settings_are_checked(sms_head, sms_test_file, cache, tmp_path):
    out, _ = sms_head
    # each a mistake in the command: a usage error (exit 2), as a bad option value is
    result = run("score", sms_test_file, "--head", out, "--out", tmp_path / "x.xlsx", ok=False)
    assert result.exit_code == 2 and "expected a .csv or .parquet" in result.output
    result = run("score", sms_test_file, SMS, "--head", out, "--out", tmp_path / "one.csv", ok=False)
    assert result.exit_code == 2 and "give a directory" in result.output
    before = sms_test_file.read_bytes()
    result = run("score", sms_test_file, "--head", out, "--out", sms_test_file, ok=False)
    assert result.exit_code == 2 and "that is one of the input files" in result.output
    assert sms_test_file.read_bytes() == before
    # `score *.csv` twice in one folder: the first run's a.scored.csv is now an input too
    own = tmp_path / "a.scored.csv"
    own.write_text("text\nmy own hand-made file\n", encoding="utf-8")
    (tmp_path / "a.csv").write_text("text\nhello\n", encoding="utf-8")
    for inputs in ([tmp_path / "a.csv", own], [tmp_path / "a.csv", tmp_path / "a.scored.rejects.csv"]):
        inputs[-1].write_text("text\nmy own hand-made file\n", encoding="utf-8")
        result = run("score", *inputs, "--head", out, "--out", tmp_path, ok=False)
        assert result.exit_code == 2 and f"--out {inputs[-1]}: that is one of the input files" in result.output
        assert inputs[-1].read_text(encoding="utf-8") == "text\nmy own hand-made file\n"
    run("score", sms_test_file, SMS, "--head", out, "--cache-dir", cache, "--out", tmp_path / "many")
    assert len(pd.read_csv(tmp_path / "many" / "sms_spam.scored.csv", encoding="utf-8")) == 5572


def test_score_without_head_uses_the_bundled_head_and_model(tmp_path, monkeypatch):
    path = tmp_path / "few.csv"
    path.write_text("v2\nWINNER!! Claim your free prize now, call 09061701461\nsee you at lunch?\n")
    run("score", path, "--out", tmp_path / "few.scored.csv", "--cache-dir", tmp_path / "cache")
    scored = pd.read_csv(tmp_path / "few.scored.csv")
    assert list(scored.columns) == ["v2", "source_file", "row_number", "label", "score"]
    assert set(scored["label"]) <= {"ham", "spam"}

    import elmobatch.scoring.score as score_module

    monkeypatch.setattr(score_module, "default_head_dir", lambda: tmp_path / "no-head-here")
    result = run("score", path, "--out", tmp_path / "again.csv", ok=False)
    assert "bundled default head is missing" in result.output


def test_parquet_output_keeps_a_column_empty_in_the_first_chunk(sms_head, cache, tmp_path):
    """Chunked Parquet writing: a column with no values in the first chunk still takes later values."""
    from elmobatch import load_encoder
    from elmobatch.caching import EmbeddingCache
    from elmobatch.scoring.score import score_file

    out, _ = sms_head
    path = tmp_path / "in.jsonl"
    rows = [{"text": f"message {i}", "note": None if i < 3 else f"n{i}"} for i in range(6)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = score_file(path, tmp_path / "out.parquet", head=load_head(out), encoder=load_encoder(str(FIXTURE)),
                         cache=EmbeddingCache(cache), chunk_rows=2)
    table = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert summary.rows_scored == 6 and table["note"].tolist()[3:] == ["n3", "n4", "n5"]


def test_rows_without_a_label_are_rejected_not_used(fixture_encoder, cache, tmp_path):
    from elmobatch.caching import EmbeddingCache
    from elmobatch.embedding.vectors import labelled_vectors

    path = tmp_path / "gaps.csv"
    path.write_text("label,text\nham,hello there\n,no label here\nspam,WIN a prize now\n  ,blank label\n")
    data = labelled_vectors(path, fixture_encoder, EmbeddingCache(cache), label_column="label")
    assert data.labels == ["ham", "spam"] and data.x.shape == (2, 3, fixture_encoder.dim)
    assert data.rows_read == 4 and data.rejects["reason"].tolist() == ["missing_label"] * 2
    assert data.rejects["row_number"].tolist() == [1, 3]
    path = tmp_path / "gaps.jsonl"  # a missing label is a missing value (None) here: it raised TypeError
    path.write_text('{"label": "ham", "text": "hello there"}\n{"text": "no label", "n": 2}\n')
    data = labelled_vectors(path, fixture_encoder, EmbeddingCache(cache), label_column="label")
    assert data.labels == ["ham"] and data.rejects[["row_number", "reason", "raw"]].values.tolist() == [
        [1, "missing_label", ",no label,2"]]


def test_head_json_names_models_portably(tmp_path):
    from elmobatch.encoding.encoder import bundled_model_dir
    from elmobatch.training.train import model_record

    assert model_record(str(FIXTURE)) == str(FIXTURE.resolve())
    assert model_record("default") == "default" and model_record("https://tfhub.dev/x") == "https://tfhub.dev/x"
    if bundled_model_dir().is_dir():
        assert model_record(str(bundled_model_dir())) == "default"


def test_extra_train_rows_train_the_head_and_are_never_held_out(sms_head, work, cache, fixture_dir, tmp_path):
    extra = tmp_path / "modern.csv"
    rows = [("ham", f"Your code is {100000 + 7919 * i}. It expires in 10 minutes.") for i in range(30)]
    rows += [("spam", f"Your parcel is held: pay a £{i}.99 fee at parcel-{i}.example now") for i in range(20)]
    sms = pd.read_csv(SMS, encoding="latin-1", keep_default_na=False)
    rows += [("ham", sms["v2"][5000]), ("spam", sms["v2"][5571])]  # held-out rows' texts: left out
    pd.DataFrame(rows, columns=["v1", "v2"]).to_csv(extra, index=False)
    out = tmp_path / "head"
    result = run("train", SMS, "--label-column", "v1", "--model", fixture_dir, "--out", out, "--split", "last:0.2",
                 "--epochs", 3, "--cache-dir", cache, "--extra-train", extra)
    meta = json.loads((out / "head.json").read_text())
    data, training = meta["data"], meta["training"]
    assert training["rows_fit"] + training["rows_validation"] == 4457 + 50
    assert data["test_rows"] == {"count": N_TEST, "first": 4457, "last": 5571}
    assert np.sum(meta["metrics"]["confusion_matrix"]["rows_true_columns_predicted"]) == N_TEST
    [record] = data["extra_train"]
    assert record["count"] == 50 and record["label_counts"] == {"ham": 30, "spam": 20}
    assert record["held_out_copies_left_out"] == 2 and record["text_column"] == "v2"
    assert record["file_sha256"] == hashlib.sha256(extra.read_bytes()).hexdigest()
    assert "fitted on 4457 rows of" in result.output and "and 50 rows of --extra-train" in result.output

    # Read with INPUT's columns: a file without the label column is refused by name.
    other = tmp_path / "other.csv"
    pd.DataFrame({"label": ["ham"], "text": ["hi"]}).to_csv(other, index=False)
    refused = run("train", SMS, "--label-column", "v1", "--model", fixture_dir, "--out", tmp_path / "h2",
                  "--cache-dir", cache, "--extra-train", other, ok=False)
    assert f"{other}: no label column 'v1'" in refused.output and not (tmp_path / "h2").exists()

    # INPUT itself as --extra-train would train on its own held-out rows: refused before any work.
    refused = run("train", SMS, "--label-column", "v1", "--model", fixture_dir, "--out", tmp_path / "h3",
                  "--cache-dir", cache, "--extra-train", SMS, ok=False)
    assert "the same bytes as INPUT" in refused.output and not (tmp_path / "h3").exists()

    # evaluate on an --extra-train file says its figures are training figures.
    evaluated = CliRunner().invoke(main, ["evaluate", str(extra), "--label-column", "v1", "--head", str(out),
                                          "--cache-dir", str(cache), "--out", str(tmp_path / "report")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "is an --extra-train file of this head" in evaluated.output
