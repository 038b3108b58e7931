#!/usr/bin/env bash
# Rebuild the bundled default model (elmobatch/models/default/), in two stages:
#   1. build/sms_model: the biLM pretrained on the SMS training rows alone, 10 epochs, batches of 32
#      (the model bundled before; 41 minutes here);
#   2. build/default_model: that model trained on, from its weights (--init-from), on the SMS
#      training rows and WordNet together, for MAX_MINUTES (default 45) on 2 CPU cores.
#
#   bash scripts/build_default_model.sh
#
# Corpora (scripts/*_corpus.py write each with a .source.json naming its source and license,
# which model.json keeps):
#   build/sms_train.txt  the message text of rows 0..4456 of ../shared/data/sms_spam.csv (the
#                        reference split's training part; the test rows 4457..5571 are never read)
#   build/wordnet.txt    WordNet 3.0's definitions and example sentences, from Debian's
#                        wordnet-base package (downloaded and unpacked here; nothing is installed)
# Rerunning after an interruption (or after --max-minutes) resumes from build/default_model/checkpoint.
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
"$PYTHON" -m elmobatch.cli pretrain build/sms_train.txt --out build/sms_model \
    --epochs 10 --batch-size 32 --heldout 0.05 --min-count 2 --seed 0 --checkpoint-every 100 \
    --note "message text of rows 0..4456 (the reference training split) of sms_spam.csv"
"$PYTHON" -m elmobatch.cli pretrain build/sms_train.txt build/wordnet.txt --out build/default_model \
    --init-from build/sms_model --epochs 3 --batch-size 128 --softmax-samples 2048 --max-vocab 32768 --heldout 0.02 --min-count 3 \
    --seed 0 --checkpoint-every 100 --max-minutes "$MAX_MINUTES" \
    --note "SMS training rows 0..4456 and WordNet 3.0 definitions and examples"
mkdir -p elmobatch/models/default
cp build/default_model/{options.json,weights.hdf5,vocab.txt,model.json} elmobatch/models/default/
echo "installed the model in elmobatch/models/default/"
