"""Pretraining a biLM on raw text, as ELMo was trained: a forward and a backward language model.

    corpus files (elmobatch.reading: text lines, or a CSV/TSV/JSONL/Parquet column; --rows)
    messages -> tokens (the model's tokenizer) -> char ids (batch, T, max_chars), T counts <S> </S>
      -> BiLM (shared char CNN, highway, projection; separate forward and backward LSTMs)
      -> top layer, forward direction at position t    -> softmax -> the token at t + 1
         top layer, backward direction at position t   -> softmax -> the token at t - 1
    loss: mean cross entropy over both directions; one softmax shared by the two, as in bilm-tf.

The model is `elmobatch.encoding.bilm.BiLM` itself, so what is trained is what `load_encoder`
runs. The softmax weights live only in the checkpoint: `weights.hdf5` keeps the official layout.

Output directory:
    options.json, weights.hdf5   the biLM, official layout (load_encoder, other ELMo tools)
    vocab.txt                    the softmax vocabulary (<S>, </S>, <UNK>, then by count)
    model.json                   tokenizer, corpus fingerprint, held-out perplexity, time, parameters,
                                 and the sha256 of the three files above (checked by load_encoder)
    pretrain.json                the settings a resumed run must share with the first one
    checkpoint/                  tf.train.Checkpoint: biLM + softmax + optimizer + progress

A run that stops (--max-minutes, --max-steps, or killed) resumes from the checkpoint when
started again with the same corpus and settings; the epoch order is a function of (seed,
epoch), so a resumed run sees the batches the uninterrupted one would have seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
from elmobatch._tensorflow import tf

from elmobatch.encoding import tokens as tok
from elmobatch.encoding.bilm import BiLM, BiLMConfig, WeightFileError, read_options, read_weights
from elmobatch.files import file_sha256, write_atomically, write_file_set
from elmobatch.reading.options import ReadOptions
from elmobatch.training.vocabulary import Vocabulary, build_vocabulary

# The bundled default model's architecture: output width 1024 like the official model; filters
# total 512 = projection_dim, so no CNN projection; about 9.5M parameters (38 MB of float32).
DEFAULT_OPTIONS = {
    "char_cnn": {
        "activation": "relu",
        "embedding": {"dim": 16},
        "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]],
        "max_characters_per_token": 50,
        "n_characters": 262,
        "n_highway": 2,
    },
    "lstm": {
        "cell_clip": 3,
        "dim": 512,
        "n_layers": 2,
        "proj_clip": 3,
        "projection_dim": 512,
        "use_skip_connections": True,
    },
}


class PretrainError(ValueError):
    """A corpus, option or checkpoint that pretraining cannot use, with what was expected."""


@dataclass(frozen=True)
class RunSettings:
    """What a resumed run must share with the run that wrote the checkpoint."""

    corpus_fingerprint: str
    options: dict
    tokenizer: str
    min_count: int
    max_vocab: int | None
    heldout: float
    batch_size: int
    seed: int
    softmax_samples: int
    init_from_sha256: str | None = None


# ---- the corpus ----------------------------------------------------------------------------


@dataclass
class CorpusRead:
    """The messages of the corpus files, in order, and what reading them decided and rejected."""

    messages: list[str]
    files: list[dict]  # per file: name, format, encoding, text column, rows read/selected/rejected


@dataclass
class StartingModel:
    """The model a run starts from (`--init-from`): its architecture and weights."""

    directory: Path
    config: BiLMConfig
    weights: dict[str, np.ndarray]
    sha256: str  # of its weights.hdf5

    def record(self) -> dict:
        """What model.json says of it: where, which weights, and what it was trained on."""
        meta_path = self.directory / "model.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return {"path": str(self.directory), "weights_sha256": self.sha256,
                "corpus_note": meta.get("corpus", {}).get("note"),
                "training_tokens": meta.get("corpus", {}).get("training_tokens"),
                "heldout_perplexity": meta.get("heldout_perplexity")}


def _starting_model(init_from: str | Path | None, options: dict | None) -> StartingModel | None:
    """Read `--init-from`'s model; refuse one whose architecture differs from `options`."""
    if init_from is None:
        return None
    directory = Path(init_from)
    try:
        config = read_options(directory / "options.json")
        weights = read_weights(directory / "weights.hdf5", config)
    except WeightFileError as exc:
        raise PretrainError(f"--init-from {init_from}: {exc}") from exc
    if options is not None and BiLMConfig.from_options(options, source="--options") != config:
        raise PretrainError(f"--init-from {init_from}: its options.json differs from --options; "
                            "leave --options out to train the starting model's architecture")
    return StartingModel(directory, config, weights, file_sha256(directory / "weights.hdf5"))


def parse_rows(spec: str | None) -> tuple[int, int | None] | None:
    """'START:END' (END exclusive, either may be empty) -> (start, end); None -> None."""
    if spec is None:
        return None
    try:
        start, end = spec.split(":")
        bounds = (int(start) if start else 0, int(end) if end else None)
    except ValueError:
        raise PretrainError(f"--rows {spec!r}: expected START:END, data rows counted from 0, END excluded "
                            "(e.g. 0:4457)") from None
    if bounds[0] < 0 or (bounds[1] is not None and bounds[1] <= bounds[0]):
        raise PretrainError(f"--rows {spec!r}: expected 0 <= START < END")
    return bounds


def read_corpus(paths: list[str | Path], options: ReadOptions | None = None, rows: str | None = None,
                tokenizer: str = tok.DEFAULT_TOKENIZER) -> CorpusRead:
    """Corpus files through elmobatch.reading (plain text: one message per line; CSV, TSV, JSON
    Lines, Parquet: the text column) -> their messages, in order. `rows` keeps data rows START..END-1
    of each file; `options` say how files are read. Rows the reader rejects (e.g. more
    than max_tokens tokens) are counted by
    reason, never trained on."""
    from elmobatch.reading import ReadError, read_messages

    bounds = parse_rows(rows)
    messages: list[str] = []
    files = []
    for path in paths:
        try:
            reader = read_messages(path, options, tokenizer=tokenizer)
            selected, read, rejects = 0, 0, dict[str, int]()
            for chunk in reader:
                read += chunk.rows_read
                numbers = chunk.rows["row_number"].to_numpy()
                for number, text in zip(numbers, chunk.texts, strict=True):
                    if bounds is None or (bounds[0] <= number and (bounds[1] is None or number < bounds[1])):
                        messages.append(text)
                        selected += 1
                for number, reason in zip(chunk.rejects["row_number"], chunk.rejects["reason"], strict=True):
                    if bounds is None or (bounds[0] <= number and (bounds[1] is None or number < bounds[1])):
                        rejects[reason] = rejects.get(reason, 0) + 1
        except ReadError as exc:
            raise PretrainError(str(exc)) from exc
        d = reader.decisions
        files.append({"file": Path(path).name, "format": d.format, "encoding": d.encoding,
                      "text_column": d.text_column, "rows": rows, "rows_read": read, "messages": selected,
                      "rejected": rejects, "sha256": file_sha256(path), **_source_note(Path(path))})
    return CorpusRead(messages, files)


def _source_note(path: Path) -> dict:
    """{"source": ...} from `FILE.source.json` beside a corpus file (where the text came from, its
    license), written by the scripts that build corpora; {} when there is none."""
    note = path.with_name(path.name + ".source.json")
    if not note.is_file():
        return {}
    try:
        return {"source": json.loads(note.read_text(encoding="utf-8"))}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PretrainError(f"{note}: not readable JSON ({exc}); it should describe {path.name}'s source") from exc


def count_tokens(files: list[dict], tokenized: list[list[str]]) -> None:
    """Add each file's token count to its entry (`tokenized`: the messages of all files, in order)."""
    start = 0
    for f in files:
        f["tokens"] = sum(len(s) for s in tokenized[start : start + f["messages"]])
        start += f["messages"]


def corpus_fingerprint(messages: list[str], tokenizer: str) -> str:
    """sha256 of the messages (in order) and the tokenizer: the same text gives the same hash."""
    digest = hashlib.sha256(f"tokenizer={tokenizer}\n".encode())
    for message in messages:
        digest.update(message.encode("utf-8") + b"\n")
    return digest.hexdigest()


def heldout_mask(n: int, fraction: float) -> np.ndarray:
    """(n,) bool: an evenly spread `fraction` of positions (message i when floor((i+1)f) > floor(if))."""
    if not 0 < fraction < 1:
        raise PretrainError(f"--heldout must be between 0 and 1 (a fraction of the messages), got {fraction}")
    i = np.arange(n)
    return np.floor((i + 1) * fraction) > np.floor(i * fraction)


# ---- the language models -------------------------------------------------------------------


class LanguageModels(tf.Module):
    """The biLM plus one softmax over the vocabulary, shared by the forward and backward LMs."""

    def __init__(self, bilm: BiLM, vocab_size: int, seed: int = 0):
        super().__init__(name="language_models")
        self.bilm = bilm
        p = bilm.config.projection_dim
        rng = np.random.default_rng(seed + 1)
        self.softmax_w = tf.Variable((rng.standard_normal((vocab_size, p)) / np.sqrt(p)).astype(np.float32),
                                     name="softmax_w")
        self.softmax_b = tf.Variable(np.zeros(vocab_size, np.float32), name="softmax_b")

    def nll(self, char_ids: tf.Tensor, word_ids: tf.Tensor, dropout: float = 0.0, samples: int = 0):
        """Summed negative log likelihood of both LMs.

        char_ids (batch, T, max_chars), word_ids (batch, T) with <S> and </S> at each sentence's
        ends (padding: anything, masked). Returns (nll (2,) = [forward, backward], n_targets):
        every sentence of length L gives L - 1 targets per direction.
        samples > 0: a sampled softmax over that many words drawn per batch (log-uniform: the
        vocabulary is ordered by count), an estimate for training only, as bilm-tf trained; 0: the
        full softmax (exact, used for held-out perplexity).
        """
        _, layers, lengths = self.bilm(char_ids)
        top = layers[-1]  # (2, batch, T, p), both directions in sentence order
        mask = tf.sequence_mask(lengths, tf.shape(word_ids)[1])[:, 1:]  # target positions
        forward_h = tf.boolean_mask(top[0][:, :-1], mask)  # state at t predicts t + 1
        backward_h = tf.boolean_mask(top[1][:, 1:], mask)  # state at t + 1 predicts t
        targets = tf.concat([tf.boolean_mask(word_ids[:, 1:], mask), tf.boolean_mask(word_ids[:, :-1], mask)], 0)
        h = tf.concat([forward_h, backward_h], 0)
        if dropout > 0:
            h = tf.nn.dropout(h, dropout)
        if samples:
            losses = tf.nn.sampled_softmax_loss(self.softmax_w, self.softmax_b, tf.cast(targets[:, None], tf.int64),
                                                h, samples, self.softmax_w.shape[0], remove_accidental_hits=True)
        else:
            logits = tf.matmul(h, self.softmax_w, transpose_b=True) + self.softmax_b
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        n = tf.shape(forward_h)[0]
        return tf.stack([tf.reduce_sum(losses[:n]), tf.reduce_sum(losses[n:])]), n


def parameter_count(bilm: BiLM) -> int:
    return int(sum(np.prod(v.shape) for v in bilm.variables_by_name.values()))


def make_batch(sentences: list[list[str]], vocab: Vocabulary, max_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> char ids (batch, T, max_chars) and word ids (batch, T), T = longest + 2."""
    chars = tok.char_ids(sentences, max_chars)
    words = np.zeros(chars.shape[:2], np.int32)
    for row, sentence in enumerate(sentences):
        ids = vocab.ids(sentence)
        words[row, : len(ids)] = ids
    return chars, words


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Indices of one epoch's batches: shuffled, then sorted by length within chunks of 20 batches
    (so a batch holds similar lengths and little padding), then the batches shuffled."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    chunk = batch_size * 20
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# ---- training --------------------------------------------------------------------------------


class Trainer:
    """Compiled train and evaluation steps over one LanguageModels, with its optimizer."""

    def __init__(self, lm: LanguageModels, learning_rate: float, dropout: float, clip_norm: float = 10.0,
                 softmax_samples: int = 0):
        import tf_keras  # Keras 2 optimizers track plain tf.Variables and checkpoint with tf.train

        self.lm = lm
        self.optimizer = tf_keras.optimizers.Adam(learning_rate)
        self.dropout = dropout
        self.clip_norm = clip_norm
        self.softmax_samples = softmax_samples if 0 < softmax_samples < lm.softmax_w.shape[0] else 0
        max_chars = lm.bilm.config.max_characters_per_token
        signature = [tf.TensorSpec([None, None, max_chars], tf.int32), tf.TensorSpec([None, None], tf.int32)]
        self.train_step = tf.function(self._train_step, input_signature=signature)
        self.eval_step = tf.function(self._eval_step, input_signature=signature)

    def _train_step(self, char_ids, word_ids):
        variables = self.lm.trainable_variables
        with tf.GradientTape() as tape:
            nll, n = self.lm.nll(char_ids, word_ids, self.dropout, self.softmax_samples)
            loss = tf.reduce_sum(nll) / tf.cast(2 * n, tf.float32)
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), self.clip_norm)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return nll, n

    def _eval_step(self, char_ids, word_ids):
        return self.lm.nll(char_ids, word_ids)


def heldout_perplexity(trainer: Trainer, sentences: list[list[str]], vocab: Vocabulary, batch_size: int = 64) -> dict:
    """exp of the mean NLL per target token: forward, backward, and both together."""
    max_chars = trainer.lm.bilm.config.max_characters_per_token
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    total, count = np.zeros(2), 0
    for start in range(0, len(order), batch_size):
        batch = [sentences[i] for i in order[start : start + batch_size]]
        nll, n = trainer.eval_step(*map(tf.constant, make_batch(batch, vocab, max_chars)))
        total += nll.numpy()
        count += int(n)
    return {"forward": float(np.exp(total[0] / count)), "backward": float(np.exp(total[1] / count)),
            "mean": float(np.exp(total.sum() / (2 * count))), "tokens": count}


def _load_or_check_settings(out: Path, settings: RunSettings, resuming: bool) -> dict:
    """The state file of a run: its settings and the perplexity it started from."""
    path = out / "pretrain.json"
    if not resuming:
        return {"settings": asdict(settings)}
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PretrainError(f"{path}: the checkpoint's settings are unreadable ({exc}); "
                            f"delete {out / 'checkpoint'} to start over") from exc
    for key, value in asdict(settings).items():
        if state["settings"].get(key) != value:
            raise PretrainError(
                f"{out}: the checkpoint there was trained with {key}={state['settings'].get(key)!r}, this run "
                f"asks for {value!r}; rerun with the same corpus and settings to resume, or use another --out")
    return state


def _write_model(out: Path, bilm: BiLM, metadata: dict) -> None:
    """options.json, weights.hdf5 and model.json as one unit: model.json records the sha256 of
    each model file (vocab.txt too) and is committed before them, so `load_encoder` refuses a
    directory that a killed writer left half old, half new."""

    def write_model_json(files: dict[str, str]) -> None:
        metadata["files"] = {**files, "vocab.txt": file_sha256(out / "vocab.txt")}
        write_atomically(out / "model.json", lambda tmp: tmp.write_text(json.dumps(metadata, indent=2)))

    write_file_set(out, bilm.file_writers(), write_model_json)


def pretrain(
    corpus: list[str | Path],
    out: str | Path,
    *,
    options: dict | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    heldout: float = 0.05,
    min_count: int = 2,
    max_vocab: int | None = None,
    tokenizer: str = tok.DEFAULT_TOKENIZER,
    learning_rate: float = 1e-3,
    dropout: float = 0.1,
    softmax_samples: int = 0,
    seed: int = 0,
    log_every: int = 50,
    checkpoint_every: int = 200,
    note: str | None = None,
    read: ReadOptions | None = None,
    rows: str | None = None,
    init_from: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train (or resume training) the biLM on `corpus` files; write the model to `out`.

    Stops after `epochs` epochs in all, or `max_steps` steps in all, or `max_minutes` of this
    run, whichever comes first; returns the model.json it wrote. `init_from`: a model directory
    whose biLM weights the training starts from (its architecture, unless `options` is given and
    equal), as ELMo's biLM is fine-tuned on a new domain; the softmax starts afresh.
    """
    started = time.monotonic()
    out = Path(out)
    start = _starting_model(init_from, options)
    options = options or (start.config.to_options() if start else DEFAULT_OPTIONS)
    try:
        config = BiLMConfig.from_options(options, source="--options")
    except WeightFileError as exc:
        raise PretrainError(str(exc)) from exc
    if tokenizer not in tok.TOKENIZERS:
        raise PretrainError(f"unknown tokenizer {tokenizer!r}: expected one of {', '.join(tok.TOKENIZERS)}")
    if batch_size < 1 or epochs < 1:
        raise PretrainError(f"--batch-size and --epochs must be at least 1 (got {batch_size}, {epochs})")

    corpus_read = read_corpus(corpus, read, rows, tokenizer)
    messages = corpus_read.messages
    for f in corpus_read.files:
        log(f"{f['file']}: {f['format']}, {f['encoding']}, column {f['text_column']!r}: {f['messages']} messages"
            + (f" (rows {rows})" if rows else "")
            + (f", {sum(f['rejected'].values())} rows rejected by the reader {f['rejected']}" if f["rejected"] else ""))
    tokenized = [tok.tokenize(m, tokenizer) for m in messages]
    count_tokens(corpus_read.files, tokenized)
    sentences = [s for s in tokenized if s]
    if len(sentences) < 2:
        raise PretrainError(f"{', '.join(map(str, corpus))}: {len(sentences)} non-empty messages; "
                            "pretraining needs at least 2 (one to train on, one held out)")
    held = heldout_mask(len(sentences), heldout)
    train = [s for s, h in zip(sentences, held, strict=True) if not h]
    held_out = [s for s, h in zip(sentences, held, strict=True) if h]
    if not held_out or not train:
        raise PretrainError(f"--heldout {heldout} leaves {len(train)} training and {len(held_out)} held-out "
                            "messages; both must be at least 1")
    settings = RunSettings(corpus_fingerprint(messages, tokenizer), config.to_options(), tokenizer, min_count,
                           max_vocab, heldout, batch_size, seed, softmax_samples, start.sha256 if start else None)

    checkpoint_dir = out / "checkpoint"
    resuming = tf.train.latest_checkpoint(str(checkpoint_dir)) is not None
    state = _load_or_check_settings(out, settings, resuming)
    out.mkdir(parents=True, exist_ok=True)
    if resuming:
        vocab = Vocabulary.load(out / "vocab.txt")
    else:
        vocab = build_vocabulary(train, min_count, max_vocab)
        vocab.save(out / "vocab.txt")

    tf.random.set_seed(seed)
    lm = LanguageModels(BiLM(config, start.weights if start else None, seed=seed), len(vocab), seed)
    trainer = Trainer(lm, learning_rate, dropout, softmax_samples=softmax_samples)
    progress = {name: tf.Variable(0, dtype=tf.int64, name=name) for name in ("step", "epoch", "batch_in_epoch")}
    seconds = tf.Variable(0.0, dtype=tf.float64, name="train_seconds")
    checkpoint = tf.train.Checkpoint(model=lm, optimizer=trainer.optimizer, seconds=seconds, **progress)
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=1)
    if resuming:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        log(f"resumed from {manager.latest_checkpoint}: step {int(progress['step'])}, "
            f"epoch {int(progress['epoch'])}, batch {int(progress['batch_in_epoch'])}")
    else:
        state["initial_heldout_perplexity"] = heldout_perplexity(trainer, held_out, vocab)
        write_atomically(out / "pretrain.json", lambda tmp: tmp.write_text(json.dumps(state, indent=2)))
    log(f"corpus: {len(train)} training and {len(held_out)} held-out messages, vocabulary {len(vocab)}, "
        f"biLM parameters {parameter_count(lm.bilm):,}; held-out perplexity at step 0: "
        f"{state['initial_heldout_perplexity']['mean']:.1f}")

    last_save = time.monotonic()

    def save_checkpoint():
        nonlocal last_save
        now = time.monotonic()
        seconds.assign_add(now - last_save)
        last_save = now
        manager.save(checkpoint_number=int(progress["step"]))

    lengths = np.array([len(s) for s in train])
    max_chars = config.max_characters_per_token
    window, window_n, stopped_by = np.zeros(2), 0, None
    while int(progress["epoch"]) < epochs and stopped_by is None:
        epoch = int(progress["epoch"])
        batches = epoch_batches(lengths, batch_size, seed, epoch)
        for k in range(int(progress["batch_in_epoch"]), len(batches)):
            if max_steps is not None and int(progress["step"]) >= max_steps:
                stopped_by = f"--max-steps {max_steps}"
            elif max_minutes is not None and time.monotonic() - started >= 60 * max_minutes:
                stopped_by = f"--max-minutes {max_minutes}"
            if stopped_by:
                break
            chars, words = make_batch([train[i] for i in batches[k]], vocab, max_chars)
            nll, n = trainer.train_step(tf.constant(chars), tf.constant(words))
            window += nll.numpy()
            window_n += int(n)
            progress["step"].assign_add(1)
            progress["batch_in_epoch"].assign(k + 1)
            step = int(progress["step"])
            if step % log_every == 0:
                log(f"step {step}  epoch {epoch + (k + 1) / len(batches):.2f}  "
                    f"train perplexity {math.exp(window.sum() / (2 * window_n)):.1f}  "
                    f"{(time.monotonic() - started) / 60:.1f} min")
                window, window_n = np.zeros(2), 0
            if step % checkpoint_every == 0:
                save_checkpoint()
        else:
            progress["epoch"].assign_add(1)
            progress["batch_in_epoch"].assign(0)
            ppl = heldout_perplexity(trainer, held_out, vocab)
            log(f"epoch {epoch + 1} done at step {int(progress['step'])}: held-out perplexity {ppl['mean']:.1f} "
                f"(forward {ppl['forward']:.1f}, backward {ppl['backward']:.1f})")
            save_checkpoint()
    save_checkpoint()
    if stopped_by:
        log(f"stopped by {stopped_by} at step {int(progress['step'])}; run the same command again to resume")

    ppl = heldout_perplexity(trainer, held_out, vocab)
    metadata = {
        "tokenizer": tokenizer,
        "dim": config.dim,
        "corpus_fingerprint": settings.corpus_fingerprint,
        "heldout_perplexity": ppl["mean"],
        "training_seconds": round(float(seconds.numpy()), 1),
        "parameters": parameter_count(lm.bilm),
        "corpus": {
            "files": corpus_read.files,
            "messages": len(messages),
            "empty_messages_skipped": len(messages) - len(sentences),
            "training_messages": len(train),
            "heldout_messages": len(held_out),
            "heldout_selection": f"every message i with floor((i+1)*{heldout}) > floor(i*{heldout}), "
                                 "i counting non-empty messages",
            "training_tokens": int(lengths.sum()),
            "note": note,
        },
        "vocabulary": {"file": "vocab.txt", "size": len(vocab), "min_count": min_count},
        "perplexity": {"heldout": ppl, "heldout_at_step_0": state["initial_heldout_perplexity"]},
        "training": {
            "steps": int(progress["step"]),
            "epochs_completed": int(progress["epoch"]),
            "complete": stopped_by is None,
            "stopped_by": stopped_by,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "dropout": dropout,
            "optimizer": "Adam, gradients clipped to global norm 10",
            "softmax": ("full" if not trainer.softmax_samples
                        else f"sampled ({trainer.softmax_samples} words per batch)")
                       + ", shared by the forward and backward LMs (weights in checkpoint/ only)",
            "seed": seed,
        },
        "initialized_from": start.record() if start else None,
        "softmax_parameters": int(lm.softmax_w.shape[0] * (lm.softmax_w.shape[1] + 1)),
    }
    _write_model(out, lm.bilm, metadata)
    log(f"wrote {out}: held-out perplexity {ppl['mean']:.1f} (forward {ppl['forward']:.1f}, backward "
        f"{ppl['backward']:.1f}), {metadata['training_seconds'] / 60:.1f} min of training, "
        f"{metadata['parameters']:,} parameters")
    return metadata
