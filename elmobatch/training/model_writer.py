"""What pretraining leaves in its output directory: the model files and `model.json`.

    options.json, weights.hdf5   the biLM, official layout (load_encoder, other ELMo tools)
    vocab.txt                    the softmax vocabulary (<S>, </S>, <UNK>, then by count; written when
                                 training starts)
    model.json                   tokenizer, corpus fingerprint, held-out perplexity, time, parameters,
                                 and the sha256 of the three files above (checked by load_encoder)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from elmobatch.encoding.bilm import BiLM, BiLMConfig
from elmobatch.files import file_sha256, write_atomically, write_file_set
from elmobatch.settings import PretrainSettings
from elmobatch.training.corpus import TrainingText


@dataclass(frozen=True)
class TrainingOutcome:
    """How a pretraining run ended."""

    steps: int  # in all, earlier runs of a resumed one included
    epochs_completed: int
    stopped_by: str | None  # "--max-steps N" or "--max-minutes M"; None: every epoch ran
    training_seconds: float  # in all
    heldout_perplexity: dict  # forward, backward, mean, tokens (`pretrain.heldout_perplexity`)
    initial_heldout_perplexity: dict  # the same, before the first step


@dataclass(frozen=True)
class TrainedModel:
    """The numbers model.json records of the model itself."""

    corpus_fingerprint: str
    vocab_size: int
    parameters: int  # of the biLM
    softmax_parameters: int
    softmax_samples: int  # as used: 0 when the vocabulary is no larger than the samples asked for
    initialized_from: dict | None  # `StartingModel.record()`, or None


def model_json(settings: PretrainSettings, config: BiLMConfig, text: TrainingText, model: TrainedModel,
               outcome: TrainingOutcome) -> dict:
    """The content of model.json, less the sha256 of the files (`write_model` adds them)."""
    heldout = settings.heldout
    messages = text.read.messages
    return {
        "tokenizer": settings.tokenizer,
        "dim": config.dim,
        "corpus_fingerprint": model.corpus_fingerprint,
        "heldout_perplexity": outcome.heldout_perplexity["mean"],
        "training_seconds": round(outcome.training_seconds, 1),
        "parameters": model.parameters,
        "corpus": {
            "files": text.read.files,
            "messages": len(messages),
            "empty_messages_skipped": len(messages) - len(text.sentences),
            "training_messages": len(text.train),
            "heldout_messages": len(text.held_out),
            "heldout_selection": f"every message i with floor((i+1)*{heldout}) > floor(i*{heldout}), "
                                 "i counting non-empty messages",
            "training_tokens": sum(len(s) for s in text.train),
            "note": settings.note,
        },
        "vocabulary": {"file": "vocab.txt", "size": model.vocab_size, "min_count": settings.min_count},
        "perplexity": {"heldout": outcome.heldout_perplexity, "heldout_at_step_0": outcome.initial_heldout_perplexity},
        "training": {
            "steps": outcome.steps,
            "epochs_completed": outcome.epochs_completed,
            "complete": outcome.stopped_by is None,
            "stopped_by": outcome.stopped_by,
            "batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate,
            "dropout": settings.dropout,
            "optimizer": "Adam, gradients clipped to global norm 10",
            "softmax": ("full" if not model.softmax_samples else f"sampled ({model.softmax_samples} words per batch)")
                       + ", shared by the forward and backward LMs (weights in checkpoint/ only)",
            "seed": settings.seed,
        },
        "initialized_from": model.initialized_from,
        "softmax_parameters": model.softmax_parameters,
    }


def write_model(out: Path, bilm: BiLM, metadata: dict) -> None:
    """options.json, weights.hdf5 and model.json as one unit: model.json records the sha256 of
    each model file (vocab.txt too) and is committed before them, so `load_encoder` refuses a
    directory that a killed writer left half old, half new."""

    def write_model_json(files: dict[str, str]) -> None:
        metadata["files"] = {**files, "vocab.txt": file_sha256(out / "vocab.txt")}
        write_atomically(out / "model.json", lambda tmp: tmp.write_text(json.dumps(metadata, indent=2)))

    write_file_set(out, bilm.file_writers(), write_model_json)
