#!/usr/bin/env bash
# General text first, then the messages again (README, Pretraining: "More text").
#
#   bash scripts/build_adapted_model.sh   # build/adapted_model: 15 epochs, about 41 minutes on 2 cores
#   cp -r build/adapted_model build/adapted_model_e20 && OUT=build/adapted_model_e20 EPOCHS=20 \
#       bash scripts/build_adapted_model.sh   # its checkpoint resumed for 5 epochs more (not bundled)
#
# Goes on training the biLM of the fortunes recipe's seed-1 model (build/fortunes_model_seed1, built
# first by scripts/build_fortunes_model.sh with SEED=1 if it is not there) on the SMS training rows and
# the hand-written messages of data/modern only: the bundled model's stage 3 (same corpus, vocabulary
# rule, epochs, batch and seed; a fresh full softmax), started from a biLM that has also read the
# fortune cookies. Rerunning resumes from build/adapted_model/checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
SMS="${SMS:-../shared/data/sms_spam.csv}"
INIT="${INIT:-build/fortunes_model_seed1}"
OUT="${OUT:-build/adapted_model}"
EPOCHS="${EPOCHS:-15}"
if [ ! -f "$INIT/weights.hdf5" ]; then
  SEED=1 OUT="$INIT" MAX_MINUTES=130 bash scripts/build_fortunes_model.sh
fi
"$PYTHON" scripts/sms_corpus.py "$SMS" 0 4457 build/sms_train.txt
"$PYTHON" scripts/modern_sms.py build/modern_sms.csv
nice "$PYTHON" -m elmobatch.cli pretrain build/sms_train.txt build/modern_sms.txt --out "$OUT" \
    --init-from "$INIT" --epochs "$EPOCHS" --batch-size 128 --heldout 0.05 --min-count 2 --seed 0 --checkpoint-every 50 \
    --note "SMS training rows 0..4456 and the hand-written messages of data/modern; continued from build/fortunes_model_seed1 (SMS + data/modern + Debian's fortune cookies, seed 1)"
echo "wrote $OUT; compare it with: python benchmarks/head_compare.py --model $OUT --extra-train build/modern_sms.csv --folds 5 --kinds mlp --members 1,5"
