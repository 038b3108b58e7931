#!/usr/bin/env bash
# The SMS + WordNet experiment (not bundled: it did not beat the SMS-only model; README, Pretraining).
#
#   bash scripts/build_default_model.sh   # first: build/default_model, the SMS-only model
#   bash scripts/build_wordnet_model.sh   # then:  build/sms_wordnet_model, MAX_MINUTES (45) of training
#
# Goes on training the SMS-only model's biLM (--init-from) on the SMS training rows and WordNet
# 3.0's definitions and examples (Debian's wordnet-base, fetched with apt-get download and
# unpacked; nothing is installed). Each corpus has a .source.json (source, license) that
# model.json keeps. Rerunning resumes from build/sms_wordnet_model/checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
SMS="${SMS:-../shared/data/sms_spam.csv}"
MAX_MINUTES="${MAX_MINUTES:-45}"
mkdir -p build
"$PYTHON" scripts/sms_corpus.py "$SMS" 0 4457 build/sms_train.txt
if [ ! -f build/wordnet-base/usr/share/wordnet/data.noun ]; then
  (cd build && apt-get download wordnet-base && dpkg -x wordnet-base_*.deb wordnet-base)
fi
"$PYTHON" scripts/wordnet_corpus.py build/wordnet-base/usr/share/wordnet build/wordnet.txt
"$PYTHON" -m elmobatch.cli pretrain build/sms_train.txt build/wordnet.txt --out build/sms_wordnet_model \
    --init-from build/default_model --epochs 3 --batch-size 128 --softmax-samples 2048 --max-vocab 32768 \
    --heldout 0.02 --min-count 3 --seed 0 --checkpoint-every 100 --max-minutes "$MAX_MINUTES" \
    --note "SMS training rows 0..4456 and WordNet 3.0 definitions and examples"
echo "wrote build/sms_wordnet_model; compare it with: python benchmarks/head_compare.py --model build/sms_wordnet_model"
