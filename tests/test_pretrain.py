"""Pretraining: a real (tiny) biLM trained for tens of steps on SMS text, loaded back, resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from elmobatch import load_encoder
from elmobatch.cli import main
from elmobatch.encoding.bilm import BiLMConfig, expected_shapes
from elmobatch.reading import ReadOptions
from elmobatch.settings import PretrainSettings
from elmobatch.training.corpus import corpus_fingerprint, read_corpus
from elmobatch.training.pretrain import pretrain
from elmobatch.training.vocabulary import Vocabulary, build_vocabulary
from tests.conftest import kill_after_placements, SMS, tiny_options

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Message text of the first 300 rows of the reference file, one per line, plus a blank line."""
    import pandas as pd

    frame = pd.read_csv(SMS, encoding="latin-1", dtype=str, keep_default_na=False, nrows=300)
    path = tmp_path_factory.mktemp("corpus") / "sms.txt"
    path.write_text("".join(m.replace("\n", " ") + "\n" for m in frame["v2"]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def options_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("options") / "options.json"
    path.write_text(json.dumps(tiny_options(max_characters_per_token=20, use_skip_connections=True)))
    return path


def pretrain_args(corpus, out, options_file, *extra) -> list[str]:
    return ["pretrain", str(corpus), "--out", str(out), "--options", str(options_file), "--batch-size", "16",
            "--learning-rate", "0.01", "--log-every", "5", "--heldout", "0.1", *map(str, extra)]


def run_pretrain(corpus, out, options_file, *extra):
    return CliRunner().invoke(main, pretrain_args(corpus, out, options_file, *extra), catch_exceptions=False)


def checkpoint_step(out: Path) -> int:
    latest = tf.train.latest_checkpoint(str(out / "checkpoint"))
    return int(tf.train.load_checkpoint(latest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def optimizer_iterations(out: Path) -> int:
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out / "checkpoint")))
    return int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.slow  # pretrains a model
def test_pretrain_writes_a_loadable_model_with_lower_heldout_perplexity(options_file, tmp_path):
    out = tmp_path / "model"
    # Straight from the reference CSV (Latin-1, spilled commas): rows 0..299 of its message column.
    result = run_pretrain(SMS, out, options_file, "--text-column", "v2", "--rows", "0:300", "--max-steps", 30)
    assert result.exit_code == 0, result.output
    assert "held-out perplexity at step 0" in result.output

    meta = json.loads((out / "model.json").read_text())
    assert meta["heldout_perplexity"] < 0.5 * meta["perplexity"]["heldout_at_step_0"]["mean"]
    assert meta["training"]["steps"] == 30
    assert meta["tokenizer"] == "punct"
    messages = read_corpus([SMS], ReadOptions(text_column="v2"), "0:300").messages
    assert meta["corpus_fingerprint"] == corpus_fingerprint(messages, "punct")
    read = meta["corpus"]["files"][0]
    assert (read["rows_read"], read["messages"], read["text_column"], read["rows"]) == (5572, 300, "v2", "0:300")
    assert meta["corpus"]["training_messages"] + meta["corpus"]["heldout_messages"] == 300
    assert meta["training_seconds"] > 0

    # Official layout: exactly the biLM datasets; the softmax stays in the checkpoint.
    config = BiLMConfig.from_options(json.loads((out / "options.json").read_text()))
    with h5py.File(out / "weights.hdf5", "r") as f:
        names = set()
        f.visititems(lambda name, obj: names.add(name) if isinstance(obj, h5py.Dataset) else None)
        assert names == set(expected_shapes(config))
        assert meta["parameters"] == sum(f[n].size for n in names)
    ckpt_vars = dict(tf.train.list_variables(tf.train.latest_checkpoint(str(out / "checkpoint"))))
    vocab = Vocabulary.load(out / "vocab.txt")
    assert ckpt_vars["model/softmax_w/.ATTRIBUTES/VARIABLE_VALUE"] == [len(vocab), 8]

    enc = load_encoder(str(out))
    assert enc.dim == 16 and enc.tokenizer == "punct"
    vectors = enc.embed_texts(["Free entry in 2 a wkly comp!", "Ok lar... Joking wif u oni...", ""])
    assert vectors.shape == (3, 16) and np.isfinite(vectors).all()
    assert np.abs(vectors[0]).sum() > 0 and not vectors[2].any()


@pytest.mark.slow  # pretrains twice
def test_a_run_stopped_by_max_steps_resumes_where_it_stopped(corpus, options_file, tmp_path):
    out = tmp_path / "model"
    first = run_pretrain(corpus, out, options_file, "--max-steps", 8)
    assert first.exit_code == 0, first.output
    assert "stopped by --max-steps 8 at step 8" in first.output
    assert checkpoint_step(out) == 8 and optimizer_iterations(out) == 8

    second = run_pretrain(corpus, out, options_file, "--max-steps", 14)
    assert second.exit_code == 0, second.output
    assert "step 8, epoch 0, batch 8" in second.output  # resumed, not restarted
    assert checkpoint_step(out) == 14
    assert optimizer_iterations(out) == 14  # Adam's state came back with the weights
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["steps"] == 14
    assert meta["corpus"]["empty_messages_skipped"] == 1  # the corpus's blank line


@pytest.mark.slow  # a pretraining subprocess
def test_a_run_killed_with_sigkill_resumes_from_its_checkpoint(corpus, options_file, tmp_path):
    out = tmp_path / "model"
    args = [sys.executable, "-m", "elmobatch.cli",
            *pretrain_args(corpus, out, options_file, "--epochs", 1000, "--checkpoint-every", 3)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while tf.train.latest_checkpoint(str(out / "checkpoint")) is None:
            assert process.poll() is None, "the pretraining process ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.5)
        time.sleep(1.0)  # let it train a little past the checkpoint
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "weights.hdf5").exists()  # it never finished
    killed_at = checkpoint_step(out)
    assert killed_at >= 3  # every 3 steps and at each epoch's end

    resumed = run_pretrain(corpus, out, options_file, "--epochs", 1000, "--max-steps", killed_at + 4)
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed from {out / 'checkpoint' / f'ckpt-{killed_at}'}: step {killed_at}," in resumed.output
    assert checkpoint_step(out) == killed_at + 4
    assert load_encoder(str(out)).dim == 16


@pytest.mark.slow  # pretrains before it resumes
def test_resuming_with_other_settings_or_bad_input_is_refused_clearly(corpus, options_file, tmp_path):
    out = tmp_path / "model"
    assert run_pretrain(corpus, out, options_file, "--max-steps", 2).exit_code == 0
    args = pretrain_args(corpus, out, options_file, "--max-steps", 4)
    other = CliRunner().invoke(main, [*args[:-2], "--batch-size", "8", *args[-2:]])
    assert other.exit_code != 0
    assert "batch_size=16" in other.output and "8" in other.output and "another --out" in other.output

    bad_rows = CliRunner().invoke(main, ["pretrain", str(corpus), "--out", str(tmp_path / "m2"), "--rows", "5:2"])
    assert bad_rows.exit_code != 0 and "--rows '5:2': expected 0 <= START < END" in bad_rows.output
    no_column = CliRunner().invoke(main, ["pretrain", str(SMS), "--out", str(tmp_path / "m3"), "--text-column", "body"])
    assert no_column.exit_code != 0 and "--text-column 'body' not found" in no_column.output


def test_vocabulary_orders_by_count_and_round_trips(tmp_path):
    vocab = build_vocabulary([["b", "a", "b"], ["c", "a", "b", "</S>"]], min_count=2)
    assert vocab.tokens == ["<S>", "</S>", "<UNK>", "b", "a"]
    assert vocab.ids(["a", "zzz"]).tolist() == [0, 4, 2, 1]
    vocab.save(tmp_path / "vocab.txt")
    assert Vocabulary.load(tmp_path / "vocab.txt").tokens == vocab.tokens
    assert build_vocabulary([["x", "y", "y"]], max_size=4).tokens == ["<S>", "</S>", "<UNK>", "y"]


# Run in a subprocess: `elmobatch pretrain ARGS...`, pausing after the K-th file renamed into the
# model directory itself (not checkpoint/), so the test can SIGKILL it between the model's files.
PAUSING_PRETRAIN = """
import os, sys, time
from elmobatch.cli import main

model_dir, pause_after = os.path.abspath(sys.argv[1]), int(sys.argv[2])
real_replace, placed = os.replace, []

def replace_then_maybe_pause(src, dst):
    real_replace(src, dst)
    if os.path.dirname(os.path.abspath(dst)) == model_dir:
        placed.append(dst)
        print("placed", os.path.basename(dst), flush=True)
        if len(placed) == pause_after:
            time.sleep(300)

os.replace = replace_then_maybe_pause
main(sys.argv[3:])
"""


@pytest.mark.slow  # pretrains, then a pretraining subprocess SIGKILLed between files
def test_model_dir_killed_between_its_files_loads_old_or_new_whole_or_refuses(corpus, options_file, tmp_path):
    from elmobatch import ModelError

    kill_after = 2  # the second of three renames: some new files in place, some old ones left
    out = tmp_path / "model"
    assert run_pretrain(corpus, out, options_file, "--max-steps", 2).exit_code == 0
    old_fingerprint = load_encoder(str(out)).fingerprint

    args = [sys.executable, "-c", PAUSING_PRETRAIN, str(out), str(kill_after),
            *pretrain_args(corpus, out, options_file, "--max-steps", 4)]
    writer = subprocess.Popen(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    kill_after_placements(writer, kill_after)

    steps = json.loads((out / "model.json").read_text())["training"]["steps"]
    try:
        fingerprint = load_encoder(str(out)).fingerprint
    except ModelError as exc:
        assert "written only in part" in str(exc) and str(out) in str(exc)
    else:  # whole: the old weights with the old model.json, or the new with the new
        assert (fingerprint == old_fingerprint) == (steps == 2), f"model.json of step {steps} over other weights"

    # The same command again finishes the model from the checkpoint.
    assert run_pretrain(corpus, out, options_file, "--max-steps", 4).exit_code == 0
    assert load_encoder(str(out)).fingerprint != old_fingerprint
    assert json.loads((out / "model.json").read_text())["training"]["steps"] == 4



@pytest.mark.slow  # pretrains 20 steps
def test_sampled_softmax_trains(corpus, options_file, tmp_path):
    out = tmp_path / "model"
    result = run_pretrain(corpus, out, options_file, "--max-steps", 20, "--softmax-samples", 16)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["softmax"].startswith("sampled (16 words per batch)")
    # Held-out perplexity is always the full softmax's, so it is comparable with step 0's.
    assert meta["heldout_perplexity"] < 0.7 * meta["perplexity"]["heldout_at_step_0"]["mean"]


@pytest.mark.slow  # pretrains (21 s on the busy machine)
def test_model_json_names_each_corpus_source_with_its_token_count(corpus, options_file, tmp_path):
    from elmobatch.encoding import tokens as tok

    lines = ["the cat sat on the mat", "a dog ran to the park at 3:30pm"] * 20
    second = tmp_path / "second.txt"
    second.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (tmp_path / "second.txt.source.json").write_text(json.dumps({"source": "made up", "license": "CC0"}))
    out = tmp_path / "model"
    result = CliRunner().invoke(main, ["pretrain", str(corpus), str(second), "--out", str(out), "--options",
                                       str(options_file), "--batch-size", "16", "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    files = meta["corpus"]["files"]
    assert "source" not in files[0]
    assert files[1]["source"] == {"source": "made up", "license": "CC0"}
    assert files[1]["tokens"] == sum(len(tok.tokenize(line, "punct")) for line in lines)
    assert files[0]["tokens"] > 3000  # 300 SMS messages


@pytest.mark.slow  # two pretraining runs
def test_init_from_starts_at_another_models_weights_and_records_it(corpus, options_file, tmp_path):
    from elmobatch.files import file_sha256

    first = tmp_path / "first"
    assert run_pretrain(corpus, first, options_file, "--max-steps", 5).exit_code == 0
    second = tmp_path / "second"
    # No --options: the starting model's architecture. No steps: the weights are the starting ones.
    result = CliRunner().invoke(main, ["pretrain", str(corpus), "--out", str(second), "--init-from", str(first),
                                       "--batch-size", "16", "--max-steps", "0"])
    assert result.exit_code == 0, result.output
    with h5py.File(first / "weights.hdf5", "r") as a, h5py.File(second / "weights.hdf5", "r") as b:
        names = []
        a.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert names and all(np.array_equal(a[n][...], b[n][...]) for n in names)
    record = json.loads((second / "model.json").read_text())["initialized_from"]
    assert record["weights_sha256"] == file_sha256(first / "weights.hdf5") and record["path"] == str(first)
    first_meta = json.loads((first / "model.json").read_text())  # what the starting weights had read
    assert [f["sha256"] for f in record["corpus_files"]] == [f["sha256"] for f in first_meta["corpus"]["files"]]
    assert record["initialized_from"] is None  # the first model started from random weights
    first_meta["corpus"]["files"] = None  # a model.json written by hand, or by another tool: no list to copy
    (first / "model.json").write_text(json.dumps(first_meta))
    result = CliRunner().invoke(main, ["pretrain", str(corpus), "--out", str(tmp_path / "fourth"), "--init-from",
                                       str(first), "--batch-size", "16", "--max-steps", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "fourth" / "model.json").read_text())["initialized_from"]["corpus_files"] == []

    other = tmp_path / "other.json"
    other.write_text(json.dumps(tiny_options(max_characters_per_token=20)))  # no skip connections
    result = CliRunner().invoke(main, ["pretrain", str(corpus), "--out", str(tmp_path / "third"), "--init-from",
                                       str(first), "--options", str(other), "--max-steps", "1"])
    assert result.exit_code != 0 and "differs from --options" in result.output


def test_pretrain_options_build_pretrain_settings_with_its_defaults():
    """The command line's pretrain options are PretrainSettings' fields (corpus, --out and --options
    aside), and their defaults are its defaults: one place for both."""
    params = main.commands["pretrain"].make_context("pretrain", ["corpus.txt", "--out", "m"]).params
    defaults = {f.name: f.default for f in fields(PretrainSettings)}
    read_names = {f.name for f in fields(ReadOptions)}  # the shared input options, given as one `read`
    assert set(params) - {"corpus", "out", "options_path"} - read_names == set(defaults) - {"options", "read"}
    assert ReadOptions(**{name: params[name] for name in read_names}) == ReadOptions()
    for name, default in defaults.items():
        if name not in ("options", "read"):
            assert params[name] == default, name


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_pretrain_takes_its_settings_as_one_object(corpus, options_file, tmp_path):
    """The library call that `elmobatch pretrain` makes, with a short run's settings."""
    lines: list[str] = []
    settings = PretrainSettings(options=json.loads(options_file.read_text()), batch_size=16, max_steps=2,
                                heldout=0.1, note="two steps")
    metadata = pretrain([corpus], tmp_path / "m", settings, log=lines.append)
    assert metadata["training"]["steps"] == 2 and metadata["training"]["stopped_by"] == "--max-steps 2"
    assert metadata["corpus"]["note"] == "two steps" and metadata["training"]["batch_size"] == 16
    written = json.loads((tmp_path / "m" / "model.json").read_text())
    assert written["heldout_perplexity"] == metadata["heldout_perplexity"]
    assert any(line.startswith("stopped by --max-steps 2 at step 2") for line in lines)


@pytest.mark.slow  # pretraining
def test_quiet_pretrain_still_prints_its_result_line(corpus, options_file, tmp_path):
    result = CliRunner().invoke(main, ["-q", *pretrain_args(corpus, tmp_path / "m", options_file, "--max-steps", "1")])
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and result.stdout.startswith(f"wrote {tmp_path / 'm'}: held-out perplexity ")
