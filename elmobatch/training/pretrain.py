"""Pretraining a biLM on raw text, as ELMo was trained: a forward and a backward language model.

    corpus (`corpus.py`: files -> messages -> tokens; training and held-out messages; batches)
      -> BiLM (shared char CNN, highway, projection; separate forward and backward LSTMs)
      -> top layer, forward direction at position t    -> softmax -> the token at t + 1
         top layer, backward direction at position t   -> softmax -> the token at t - 1
    loss: mean cross entropy over both directions; one softmax shared by the two, as in bilm-tf.
      -> the model directory (`model_writer.py`)

The model is `elmobatch.encoding.bilm.BiLM` itself, so what is trained is what `load_encoder`
runs. The softmax weights live only in the checkpoint: `weights.hdf5` keeps the official layout.

Output directory:
    options.json, weights.hdf5, vocab.txt, model.json   the model (see model_writer.py)
    pretrain.json                the settings a resumed run must share with the first one
    checkpoint/                  tf.train.Checkpoint: biLM + softmax + optimizer + progress

A run that stops (--max-minutes, --max-steps, or killed) resumes from the checkpoint when
started again with the same corpus and settings; the epoch order is a function of (seed,
epoch), so a resumed run sees the batches the uninterrupted one would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from elmobatch._tensorflow import tf

from elmobatch.encoding import tokens as tok
from elmobatch.encoding.bilm import BiLM, BiLMConfig, WeightFileError, read_options, read_weights
from elmobatch.encoding.encoder import read_model_metadata
from elmobatch.encoding.specs import ModelError
from elmobatch.files import file_sha256, write_atomically
from elmobatch.settings import PretrainSettings
from elmobatch.training.corpus import (Batch, PretrainError, TrainingText, corpus_fingerprint, epoch_batches,
                                       make_batch, read_training_text)
from elmobatch.training.model_writer import TrainedModel, TrainingOutcome, model_json, write_model
from elmobatch.training.vocabulary import Vocabulary, build_vocabulary

logger = logging.getLogger(__name__)

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


@dataclass
class StartingModel:
    """The model a run starts from (`--init-from`): its architecture and weights."""

    directory: Path
    config: BiLMConfig
    weights: dict[str, np.ndarray]
    sha256: str  # of its weights.hdf5
    meta: dict  # its model.json ({} without one)

    def record(self) -> dict:
        """What model.json says of it: where, which weights, and what it was trained on: each corpus
        file (sha256, tokens, source and license) and, in turn, what it started from, so a model's
        model.json names every text its weights have seen."""
        given = self.meta.get("corpus")
        corpus: dict = given if isinstance(given, dict) else {}
        files = [{key: f.get(key) for key in ("file", "sha256", "messages", "tokens", "source")}
                 for f in corpus.get("files") or [] if isinstance(f, dict)]
        return {"path": str(self.directory), "weights_sha256": self.sha256,
                "corpus_note": corpus.get("note"), "corpus_files": files,
                "training_tokens": corpus.get("training_tokens"),
                "heldout_perplexity": self.meta.get("heldout_perplexity"),
                "initialized_from": self.meta.get("initialized_from")}


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
    return StartingModel(directory, config, weights, file_sha256(directory / "weights.hdf5"), _model_json(directory))


def _model_json(directory: Path) -> dict:
    """A starting model's model.json ({} without one), read with its weights (before training, not hours later)."""
    try:
        return read_model_metadata(directory)
    except ModelError as exc:
        raise PretrainError(f"--init-from {directory}: {exc}") from exc


@dataclass(frozen=True)
class ResumeSettings:
    """What a resumed run must share with the run that wrote the checkpoint (kept in pretrain.json)."""

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

    @classmethod
    def of(cls, settings: PretrainSettings, config: BiLMConfig, text: TrainingText,
           start: StartingModel | None) -> ResumeSettings:
        return cls(corpus_fingerprint(text.read.messages, settings.tokenizer), config.to_options(),
                   settings.tokenizer, settings.min_count, settings.max_vocab, settings.heldout, settings.batch_size,
                   settings.seed, settings.softmax_samples, start.sha256 if start else None)


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

    def nll(self, word_chars: tf.Tensor, positions: tf.Tensor, word_ids: tf.Tensor, dropout: float = 0.0,
            samples: int = 0):
        """Summed negative log likelihood of both LMs.

        A batch as `corpus.Batch`: word_chars (n_rows, n_chars) the distinct words' char ids,
        positions (batch, T) rows of it, word_ids (batch, T) with <S> and </S> at each sentence's
        ends (padding: anything, masked). Returns (nll (2,) = [forward, backward], n_targets):
        every sentence of length L gives L - 1 targets per direction.
        samples > 0: a sampled softmax over that many words drawn per batch (log-uniform: the
        vocabulary is ordered by count), an estimate for training only, as bilm-tf trained; 0: the
        full softmax (exact, used for held-out perplexity).
        """
        _, layers, lengths = self.bilm.on_word_table(word_chars, positions)
        return self.nll_of_top_layer(layers[-1], lengths, word_ids, dropout, samples)

    def nll_of_top_layer(self, top: tf.Tensor, lengths: tf.Tensor, word_ids: tf.Tensor, dropout: float = 0.0,
                         samples: int = 0):
        """`nll` from the biLM's top layer (2, batch, T, p), both directions in sentence order, and
        lengths (batch,) counting <S> and </S>."""
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
        # a corpus.Batch: word_chars, positions, word_ids
        signature = [tf.TensorSpec([None, None], tf.int32, name=name) for name in Batch._fields]
        self.train_step = tf.function(self._train_step, input_signature=signature)
        self.eval_step = tf.function(self._eval_step, input_signature=signature)

    def _train_step(self, word_chars, positions, word_ids):
        variables = self.lm.trainable_variables
        with tf.GradientTape() as tape:
            nll, n = self.lm.nll(word_chars, positions, word_ids, self.dropout, self.softmax_samples)
            loss = tf.reduce_sum(nll) / tf.cast(2 * n, tf.float32)
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), self.clip_norm)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return nll, n

    def _eval_step(self, word_chars, positions, word_ids):
        return self.lm.nll(word_chars, positions, word_ids)

    def batch(self, sentences: list[list[str]], vocab: Vocabulary) -> Batch:
        """Token lists -> the Batch the steps take (char ids cut to this model's char CNN)."""
        c = self.lm.bilm.config
        return make_batch(sentences, vocab, c.max_characters_per_token, c.widest_filter)


def heldout_perplexity(trainer: Trainer, sentences: list[list[str]], vocab: Vocabulary, batch_size: int = 64) -> dict:
    """exp of the mean NLL per target token: forward, backward, and both together."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    total, count = np.zeros(2), 0
    for start in range(0, len(order), batch_size):
        batch = trainer.batch([sentences[i] for i in order[start : start + batch_size]], vocab)
        nll, n = trainer.eval_step(*map(tf.constant, batch))
        total += nll.numpy()
        count += int(n)
    return {"forward": float(np.exp(total[0] / count)), "backward": float(np.exp(total[1] / count)),
            "mean": float(np.exp(total.sum() / (2 * count))), "tokens": count}


def _load_or_check_settings(out: Path, settings: ResumeSettings, resuming: bool) -> dict:
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


class TrainingRun:
    """The language models, their optimizer and the run's progress, checkpointed to OUT/checkpoint."""

    def __init__(self, out: Path, lm: LanguageModels, trainer: Trainer, log: Callable[[str], None]):
        self.lm, self.trainer, self.log = lm, trainer, log
        self.progress = {name: tf.Variable(0, dtype=tf.int64, name=name)
                         for name in ("step", "epoch", "batch_in_epoch")}
        self.seconds = tf.Variable(0.0, dtype=tf.float64, name="train_seconds")
        self.checkpoint = tf.train.Checkpoint(model=lm, optimizer=trainer.optimizer, seconds=self.seconds,
                                              **self.progress)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(out / "checkpoint"), max_to_keep=1)
        self.last_save = time.monotonic()  # training time counts from here (reset by `train`) to each save

    def restore(self) -> None:
        self.checkpoint.restore(self.manager.latest_checkpoint).expect_partial()
        self.log(f"resumed from {self.manager.latest_checkpoint}: step {self.step}, "
                 f"epoch {int(self.progress['epoch'])}, batch {int(self.progress['batch_in_epoch'])}")

    @property
    def step(self) -> int:
        return int(self.progress["step"])

    def save(self) -> None:
        """Checkpoint, adding the training time since the last save."""
        now = time.monotonic()
        self.seconds.assign_add(now - self.last_save)
        self.last_save = now
        self.manager.save(checkpoint_number=self.step)

    def train(self, text: TrainingText, vocab: Vocabulary, settings: PretrainSettings, started: float,
              progress=None) -> str | None:
        """Train until every epoch ran (-> None) or a limit stopped it (-> which one); `progress`
        (a Progress) is updated every step."""
        self.last_save = time.monotonic()
        lengths = np.array([len(s) for s in text.train])
        steps = _StepProgress(progress, self.step, _steps_in_all(lengths, settings))
        window, window_n, stopped_by = np.zeros(2), 0, None
        while int(self.progress["epoch"]) < settings.epochs and stopped_by is None:
            epoch = int(self.progress["epoch"])
            batches = epoch_batches(lengths, settings.batch_size, settings.seed, epoch)
            for k in range(int(self.progress["batch_in_epoch"]), len(batches)):
                stopped_by = _limit_reached(settings, self.step, started)
                if stopped_by:
                    break
                batch = self.trainer.batch([text.train[i] for i in batches[k]], vocab)
                nll, n = self.trainer.train_step(*map(tf.constant, batch))
                window += nll.numpy()
                window_n += int(n)
                self.progress["step"].assign_add(1)
                self.progress["batch_in_epoch"].assign(k + 1)
                steps.update(self.step, len(batches[k]))
                if self.step % settings.log_every == 0:
                    self.log(f"step {self.step}  epoch {epoch + (k + 1) / len(batches):.2f}  "
                             f"train perplexity {math.exp(window.sum() / (2 * window_n)):.1f}  "
                             f"{(time.monotonic() - started) / 60:.1f} min")
                    window, window_n = np.zeros(2), 0
                if self.step % settings.checkpoint_every == 0:
                    self.save()
            else:
                self.progress["epoch"].assign_add(1)
                self.progress["batch_in_epoch"].assign(0)
                ppl = heldout_perplexity(self.trainer, text.held_out, vocab)
                self.log(f"epoch {epoch + 1} done at step {self.step}: held-out perplexity {ppl['mean']:.1f} "
                         f"(forward {ppl['forward']:.1f}, backward {ppl['backward']:.1f})")
                self.save()
        self.save()
        steps.close()
        return stopped_by


def _steps_in_all(lengths: np.ndarray, settings: PretrainSettings) -> int:
    """Steps a full run takes: every epoch's batches, or max_steps if fewer."""
    per_epoch = len(epoch_batches(lengths, settings.batch_size, settings.seed, 0))
    in_all = settings.epochs * per_epoch
    return min(in_all, settings.max_steps) if settings.max_steps is not None else in_all


class _StepProgress:
    """Feeds a Progress from training steps: messages trained on in this run, and the fraction of
    this run's steps done (a resumed run counts from where it resumed, so its ETA is its own)."""

    def __init__(self, progress, first_step: int, last_step: int):
        self.progress, self.first, self.last, self.messages = progress, first_step, last_step, 0

    def update(self, step: int, messages: int) -> None:
        self.messages += messages
        if self.progress:
            self.progress.update(self.messages, (step - self.first) / max(self.last - self.first, 1))

    def close(self) -> None:
        if self.progress:
            self.progress.close()


def _limit_reached(settings: PretrainSettings, step: int, started: float) -> str | None:
    """The limit that stops the run before its next step, as the option that set it; None: go on."""
    if settings.max_steps is not None and step >= settings.max_steps:
        return f"--max-steps {settings.max_steps}"
    if settings.max_minutes is not None and time.monotonic() - started >= 60 * settings.max_minutes:
        return f"--max-minutes {settings.max_minutes}"
    return None


def _architecture(settings: PretrainSettings, start: StartingModel | None) -> BiLMConfig:
    """--options, else the starting model's, else the default model's; refuse bad settings."""
    options = settings.options or (start.config.to_options() if start else DEFAULT_OPTIONS)
    try:
        config = BiLMConfig.from_options(options, source="--options")
    except WeightFileError as exc:
        raise PretrainError(str(exc)) from exc
    if settings.tokenizer not in tok.TOKENIZERS:
        raise PretrainError(f"unknown tokenizer {settings.tokenizer!r}: expected one of {', '.join(tok.TOKENIZERS)}")
    if settings.batch_size < 1 or settings.epochs < 1:
        raise PretrainError(f"--batch-size and --epochs must be at least 1 (got {settings.batch_size}, "
                            f"{settings.epochs})")
    return config


def _vocabulary(out: Path, text: TrainingText, settings: PretrainSettings, resuming: bool) -> Vocabulary:
    """The checkpoint's vocabulary when resuming, else one built from the training messages (and saved)."""
    if resuming:
        return Vocabulary.load(out / "vocab.txt")
    vocab = build_vocabulary(text.train, settings.min_count, settings.max_vocab)
    vocab.save(out / "vocab.txt")
    return vocab


def pretrain(corpus: list[str | Path], out: str | Path, settings: PretrainSettings | None = None,
             log: Callable[[str], None] | None = None, progress=None) -> dict:
    """Train (or resume training) the biLM on `corpus` files; write the model to `out`.

    `settings` (PretrainSettings() when None): stops after `epochs` epochs in all, or `max_steps`
    steps in all, or `max_minutes` of this run, whichever comes first; returns the model.json it
    wrote. `init_from`: a model directory whose biLM weights the training starts from (its
    architecture, unless `options` is given and equal), as ELMo's biLM is fine-tuned on a new
    domain; the softmax starts afresh. Messages go to `log` (default: this module's logger, INFO);
    `progress` (a Progress) is updated every step with the messages trained on in this run.
    """
    log = log or logger.info
    started = time.monotonic()
    out, settings = Path(out), settings or PretrainSettings()
    start = _starting_model(settings.init_from, settings.options)
    config = _architecture(settings, start)
    text = read_training_text(corpus, settings, log)
    resume = ResumeSettings.of(settings, config, text, start)

    resuming = tf.train.latest_checkpoint(str(out / "checkpoint")) is not None
    state = _load_or_check_settings(out, resume, resuming)
    out.mkdir(parents=True, exist_ok=True)
    vocab = _vocabulary(out, text, settings, resuming)

    tf.random.set_seed(settings.seed)
    lm = LanguageModels(BiLM(config, start.weights if start else None, seed=settings.seed), len(vocab), settings.seed)
    trainer = Trainer(lm, settings.learning_rate, settings.dropout, softmax_samples=settings.softmax_samples)
    run = TrainingRun(out, lm, trainer, log)
    if resuming:
        run.restore()
    else:
        state["initial_heldout_perplexity"] = heldout_perplexity(trainer, text.held_out, vocab)
        write_atomically(out / "pretrain.json", lambda tmp: tmp.write_text(json.dumps(state, indent=2)))
    log(f"corpus: {len(text.train)} training and {len(text.held_out)} held-out messages, vocabulary {len(vocab)}, "
        f"biLM parameters {parameter_count(lm.bilm):,}; held-out perplexity at step 0: "
        f"{state['initial_heldout_perplexity']['mean']:.1f}")

    stopped_by = run.train(text, vocab, settings, started, progress)
    if stopped_by:
        log(f"stopped by {stopped_by} at step {run.step}; run the same command again to resume")

    ppl = heldout_perplexity(trainer, text.held_out, vocab)
    model = TrainedModel(corpus_fingerprint=resume.corpus_fingerprint, vocab_size=len(vocab),
                         parameters=parameter_count(lm.bilm),
                         softmax_parameters=int(lm.softmax_w.shape[0] * (lm.softmax_w.shape[1] + 1)),
                         softmax_samples=trainer.softmax_samples,
                         initialized_from=start.record() if start else None)
    outcome = TrainingOutcome(steps=run.step, epochs_completed=int(run.progress["epoch"]), stopped_by=stopped_by,
                              training_seconds=float(run.seconds.numpy()), heldout_perplexity=ppl,
                              initial_heldout_perplexity=state["initial_heldout_perplexity"])
    metadata = model_json(settings, config, text, model, outcome)
    write_model(out, lm.bilm, metadata)
    return metadata


def summary_line(out, metadata: dict) -> str:
    """The one line a finished pretraining run reports (the command line prints it on stdout)."""
    ppl = metadata["perplexity"]["heldout"]
    return (f"wrote {out}: held-out perplexity {ppl['mean']:.1f} (forward {ppl['forward']:.1f}, backward "
            f"{ppl['backward']:.1f}), {metadata['training_seconds'] / 60:.1f} min of training, "
            f"{metadata['parameters']:,} parameters")
