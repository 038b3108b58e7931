"""The encoder: text in, ELMo vectors out, from official weights or a TF Hub module.

    enc = load_encoder(spec)
    enc.embed_tokens([["The", "cat"], ["Hi"]])   # per sentence: (n_layers + 1, n_tokens, dim)
    enc.embed_texts(["raw message"])             # (n, dim): token mean of the equal-weight layer mix
    enc.embed_texts(["raw message"], layers=True)  # (n, n_layers + 1, dim): per-layer token means

Layer 0 is the token representation duplicated (concat([x, x])); layer k >= 1 is
concat([forward_k, backward_k]). A message with no tokens (empty, or only spaces) embeds to
zeros with n_tokens 0: never an error, never NaN.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from elmobatch._tensorflow import tf

from elmobatch.encoding import tokens as tok
from elmobatch.encoding.bilm import BiLM, WeightFileError, load_bilm
from elmobatch.encoding.specs import PRECISIONS, ModelError, bundled_model_dir, is_remote
from elmobatch.files import file_set_problem
from elmobatch.settings import DEFAULT_BATCH_SIZE

class Encoder:
    """Shared batching and pooling; a backend supplies `_run_batch`.

    Sentences are sorted by length and cut into batches of at most `batch_size` sentences and
    `max_batch_tokens` padded tokens, so little work goes to padding.
    """

    batch_size = DEFAULT_BATCH_SIZE
    max_batch_tokens = 4096

    def __init__(self, *, path: str, fingerprint: str, dim: int, n_layers: int, tokenizer: str,
                 precision: str = "float32"):
        self.path = path
        self.fingerprint = fingerprint  # the model: options, weights, tokenizer
        self.precision = precision
        self.dim = dim
        self.n_layers = n_layers  # LSTM layers; outputs have n_layers + 1 layers
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, dim={self.dim}, fingerprint={self.fingerprint[:12]})"

    @property
    def cache_key(self) -> str:
        """Names this encoder's vectors in the embedding cache: the fingerprint, and the precision
        when it is not float32 (its vectors differ slightly, so they are cached apart)."""
        if self.precision == "float32":
            return self.fingerprint
        return hashlib.sha256(f"{self.fingerprint}:{self.precision}".encode()).hexdigest()

    def tokenize(self, text: str) -> list[str]:
        return tok.tokenize(text, self.tokenizer)

    def _run_batch(self, sentences: list[list[str]]) -> np.ndarray:
        """Non-empty sentences -> (batch, n_layers + 1, max_tokens, dim) float32, zeros past each end."""
        raise NotImplementedError

    def _batches(self, sentences: list[list[str]]):
        """Yield lists of indices into `sentences` (non-empty ones only), shortest first."""
        order = sorted((i for i, s in enumerate(sentences) if s), key=lambda i: len(sentences[i]))
        batch: list[int] = []
        for i in order:
            too_many_tokens = (len(batch) + 1) * len(sentences[i]) > self.max_batch_tokens
            if batch and (too_many_tokens or len(batch) == self.batch_size):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def _computed(self, sentences: list[list[str]]):
        """Yield `(groups, layers)`: `layers` from `_run_batch`, row r of which belongs to every
        index in `groups[r]`. A sentence repeated in `sentences` is computed once."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, sentence in enumerate(sentences):
            if sentence:
                groups.setdefault(tuple(sentence), []).append(i)
        distinct, where = [list(s) for s in groups], list(groups.values())
        for batch in self._batches(distinct):
            yield [where[i] for i in batch], self._run_batch([distinct[i] for i in batch])

    def embed_tokens(self, sentences: list[list[str]]) -> list[np.ndarray]:
        """Token lists -> one float32 array (n_layers + 1, n_tokens, dim) per sentence.

        Raises TypeError for a str where a token list belongs (it would be embedded per character).
        """
        _check_batch(sentences, "embed_tokens", "a list of token lists, e.g. [['The', 'cat']]", inner=True)
        out: list[np.ndarray | None] = [None] * len(sentences)
        for groups, layers in self._computed(sentences):
            for row, group in enumerate(groups):
                for i in group:
                    out[i] = layers[row, :, : len(sentences[i])]
        empty = np.zeros((self.n_layers + 1, 0, self.dim), np.float32)
        return [empty if o is None else o for o in out]

    def pool_tokens(self, sentences: list[list[str]], on_batch: Callable[[float], None] | None = None) -> np.ndarray:
        """Token lists -> (n, n_layers + 1, dim) float32: the mean over tokens of each layer.
        `on_batch(fraction)` after each batch: the fraction of `sentences` done so far."""
        pooled = np.zeros((len(sentences), self.n_layers + 1, self.dim), np.float32)
        done = 0
        for groups, layers in self._computed(sentences):
            counts = np.array([len(sentences[group[0]]) for group in groups], np.float32)
            means = layers.sum(axis=2) / counts[:, None, None]
            for row, group in enumerate(groups):
                pooled[group] = means[row]
            done += sum(len(group) for group in groups)
            if on_batch:
                on_batch(done / len(sentences))
        return pooled

    def embed_texts(self, texts: list[str], layers: bool = False) -> np.ndarray:
        """Raw messages -> (n, dim), or (n, n_layers + 1, dim) with `layers=True`.

        `texts` is a list (any sequence) of messages; a single str raises TypeError rather than
        being embedded one character at a time: pass [text] for one message, shape (1, dim).
        """
        _check_batch(texts, "embed_texts", "a list of messages: pass [text] for one, shape (1, dim)")
        pooled = self.pool_tokens([self.tokenize(t) for t in texts])
        return pooled if layers else pooled.mean(axis=1)


def _check_batch(batch, method: str, expected: str, inner: bool = False) -> None:
    """TypeError for a str given where a batch (or, with `inner`, a batch of token lists) belongs."""
    if isinstance(batch, str | bytes):
        raise TypeError(f"{method}: expected {expected}; got a single {type(batch).__name__}")
    if inner and any(isinstance(item, str | bytes) for item in batch):
        raise TypeError(f"{method}: expected {expected}; got a list of str (a sentence is a list of tokens)")


class NativeEncoder(Encoder):
    """The TF2 biLM of `bilm.py`, compiled once with `tf.function` for any batch and length.

    A word's token-layer vector does not depend on its sentence, so each word's is computed once
    and remembered (up to `word_memory_bytes`; then the memory starts afresh).
    """

    word_memory_bytes = 64 << 20

    def __init__(self, bilm: BiLM, *, path: str, fingerprint: str, tokenizer: str, precision: str = "float32"):
        super().__init__(path=path, fingerprint=fingerprint, dim=bilm.config.dim,
                         n_layers=bilm.config.n_layers, tokenizer=tokenizer, precision=precision)
        self.bilm = bilm
        self._weights = bilm.layout(tf.bfloat16 if precision == "bf16" else tf.float32)  # once, for inference
        c = bilm.config
        self._token_layer = tf.function(self._token_layer_of, input_signature=[
            tf.TensorSpec([None, c.max_characters_per_token], tf.int32)])
        self._layers = tf.function(self._all_layers, input_signature=[
            tf.TensorSpec([None, c.projection_dim], tf.float32), tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None], tf.int32)], reduce_retracing=True)
        self._boundary = self._token_layer(tok.boundary_char_ids(c.max_characters_per_token)).numpy()
        self._words: dict[str, np.ndarray] = {}

    def _word_vectors(self, words: list[str]) -> np.ndarray:
        """Distinct tokens -> (n, projection_dim) token-layer vectors, computing only unseen words."""
        new = [w for w in words if w not in self._words]
        if new:
            if (len(self._words) + len(new)) * self.bilm.config.projection_dim * 4 > self.word_memory_bytes:
                self._words.clear()
            max_chars = self.bilm.config.max_characters_per_token
            vectors = self._token_layer(np.stack([tok.word_char_ids(w, max_chars) for w in new])).numpy()
            self._words.update(zip(new, vectors, strict=True))
        return np.stack([self._words[w] for w in words])

    def _token_layer_of(self, char_ids):
        """(n, max_chars) ids -> (n, projection_dim) token-layer vectors."""
        return self.bilm.token_layer(self._weights, char_ids)

    def _all_layers(self, word_repr, positions, n_tokens):
        """(n_words, p) token-layer vectors, (batch, T) their rows at the tokens, (batch,) ->
        (batch, n_layers + 1, T, dim), zero past each end."""
        token_repr = tf.gather(word_repr, positions)
        stacked = [tf.concat([token_repr, token_repr], axis=-1)]
        lstm_layers = self.bilm.embed(self._weights, word_repr, positions, n_tokens)
        stacked += [tf.concat([layer[0], layer[1]], axis=-1) for layer in lstm_layers]
        out = tf.stack(stacked, axis=1)
        mask = tf.sequence_mask(n_tokens, tf.shape(out)[2], out.dtype)
        return out * mask[:, None, :, None]

    def _run_batch(self, sentences):
        longest_first = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        words, positions, lengths = tok.word_batch([sentences[i] for i in longest_first])
        word_repr = np.concatenate([self._boundary, self._word_vectors(words)])
        layers = self._layers(word_repr, *tok.tokens_only(positions, lengths)).numpy()
        return layers[np.argsort(longest_first)]


class HubEncoder(Encoder):
    """A TF1 Hub ELMo module (google/elmo/2 and /3 layout), run through its `tokens` signature."""

    def __init__(self, module, signature, *, path: str, fingerprint: str, tokenizer: str, n_layers: int, dim: int):
        super().__init__(path=path, fingerprint=fingerprint, dim=dim, n_layers=n_layers, tokenizer=tokenizer)
        self._module = module  # keeps the variables alive
        self._signature = signature

    def _run_batch(self, sentences):
        longest = max(len(s) for s in sentences)
        padded = [s + [""] * (longest - len(s)) for s in sentences]
        lengths = [len(s) for s in sentences]
        out = self._signature(tokens=tf.constant(padded), sequence_len=tf.constant(lengths, tf.int32))
        word = out["word_emb"].numpy()
        layers = [np.concatenate([word, word], axis=-1)]
        layers += [out[f"lstm_outputs{k}"].numpy() for k in range(1, self.n_layers + 1)]
        stacked = np.stack(layers, axis=1).astype(np.float32)
        mask = np.arange(longest)[None, :] < np.array(lengths)[:, None]
        return stacked * mask[:, None, :, None]


# ---- loading ------------------------------------------------------------------------------


def _hash_files(paths: list[Path], root: Path, extra: dict) -> str:
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(bilm: BiLM, extra: dict) -> str:
    """sha256 of the options, every weight's name, shape and bytes, and `extra` (e.g. the tokenizer)."""
    digest = hashlib.sha256(json.dumps([bilm.config.to_options(), extra], sort_keys=True).encode())
    for name, value in sorted(bilm.weights().items()):
        digest.update(f"{name}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value, np.float32).tobytes())
    return digest.hexdigest()


def read_model_metadata(directory: Path) -> dict:
    path = directory / "model.json"
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(metadata).__name__}")
    return metadata


def _choose_tokenizer(requested: str | None, metadata: dict) -> str:
    tokenizer = requested or metadata.get("tokenizer") or tok.DEFAULT_TOKENIZER
    if tokenizer not in tok.TOKENIZERS:
        raise ModelError(f"unknown tokenizer {tokenizer!r}: expected one of {', '.join(tok.TOKENIZERS)}")
    return tokenizer


MODEL_FILES = ("options.json", "weights.hdf5")  # what loading reads: read once, checked and loaded as read


def read_model_files(directory: Path) -> dict[str, bytes]:
    """{file name: bytes} of the MODEL_FILES present in `directory` (load_bilm names a missing one)."""
    contents = {}
    for name in MODEL_FILES:
        path = directory / name
        if path.is_file():
            try:
                contents[name] = path.read_bytes()
            except OSError as exc:
                raise ModelError(f"{path}: not readable ({exc})") from exc
    return contents


def check_model_files(directory: Path, metadata: dict, contents: dict[str, bytes]) -> None:
    """Refuse model files other than those model.json records (directories without the record,
    e.g. official ELMo downloads or models pretrained before it, are not checked); `contents`
    holds the files already read, checked as read."""
    problem = file_set_problem(directory, "model.json", metadata.get("files", {}), contents)
    if problem:
        raise ModelError(f"{problem}; run `elmobatch pretrain` again to finish the model, or copy it again")


def _load_native(directory: Path, tokenizer: str | None, precision: str) -> NativeEncoder:
    metadata = read_model_metadata(directory)
    contents = read_model_files(directory)
    check_model_files(directory, metadata, contents)
    try:
        bilm = load_bilm(directory, contents)
    except WeightFileError as exc:
        raise ModelError(str(exc)) from exc
    tokenizer = _choose_tokenizer(tokenizer, metadata)
    fingerprint = weights_fingerprint(bilm, {"tokenizer": tokenizer})
    return NativeEncoder(bilm, path=str(directory), fingerprint=fingerprint, tokenizer=tokenizer, precision=precision)


def _load_hub(handle: str, tokenizer: str | None, precision: str) -> HubEncoder:
    import tensorflow_hub as hub

    if precision != "float32":
        raise ModelError(f"{handle}: a TF Hub module runs its own graph in float32 only (asked for {precision})")

    try:
        directory = Path(hub.resolve(handle))
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")  # TF1 modules warn once per variable about reference variables
        try:
            module = hub.load(str(directory))
        finally:
            logger.setLevel(level)
    except Exception as exc:  # tensorflow_hub raises many kinds; the message is what matters
        raise ModelError(f"{handle}: could not load as a TF Hub module ({type(exc).__name__}: {exc})") from exc
    signatures = getattr(module, "signatures", {})
    if "tokens" not in signatures:
        raise ModelError(f"{handle}: not an ELMo hub module: it has no 'tokens' signature "
                         f"(found: {', '.join(signatures) or 'none'})")
    signature = signatures["tokens"]
    outputs = signature.structured_outputs
    n_layers = sum(1 for k in outputs if k.startswith("lstm_outputs"))
    if "word_emb" not in outputs or n_layers == 0:
        raise ModelError(f"{handle}: signature 'tokens' lacks the ELMo outputs word_emb and lstm_outputs1.. "
                         f"(found: {', '.join(sorted(outputs))})")
    # The module's own `default` signature splits on spaces; keep that unless asked otherwise.
    tokenizer = _choose_tokenizer(tokenizer, {"tokenizer": "whitespace"})
    files = [p for p in directory.rglob("*") if p.is_file()]
    fingerprint = _hash_files(files, directory, {"hub": True, "tokenizer": tokenizer})
    return HubEncoder(module, signature, path=handle, fingerprint=fingerprint, tokenizer=tokenizer,
                      n_layers=n_layers, dim=int(outputs["lstm_outputs1"].shape[-1]))


def load_encoder(spec: str = "default", *, tokenizer: str | None = None, precision: str = "float32") -> Encoder:
    """Load an encoder from "default", a directory with options.json + weights.hdf5, or a TF Hub handle.

    `tokenizer` overrides the one recorded in the model's model.json ("punct" when none is recorded).
    """
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    spec = str(spec)
    if spec == "default":
        directory = bundled_model_dir()
        if not (directory / "weights.hdf5").is_file():
            raise ModelError(f"the bundled default model is missing from {directory}")
        return _load_native(directory, tokenizer, precision)
    if is_remote(spec):
        return _load_hub(spec, tokenizer, precision)
    path = Path(spec)
    if not path.exists():
        raise ModelError(f"{spec}: no such model directory (expected options.json + weights.hdf5, "
                         "a TF Hub module directory, \"default\", or a hub URL)")
    if (path / "saved_model.pb").is_file():
        return _load_hub(spec, tokenizer, precision)
    if not (path / "options.json").is_file() and not (path / "weights.hdf5").is_file():
        raise ModelError(f"{spec}: neither options.json + weights.hdf5 nor saved_model.pb found there")
    return _load_native(path, tokenizer, precision)
