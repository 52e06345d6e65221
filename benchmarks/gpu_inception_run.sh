#!/usr/bin/env bash
# The inception preset's paper-recipe run on one GPU machine, in one command under 10 minutes.
#
# Here, once (CPU):  .venv/bin/python benchmarks/prepare_gpu_data.py .gpu_data   (PNG copies of the TIFFs: no imagecodecs/zarr there)
# Device tool:       run(command="bash benchmarks/gpu_inception_run.sh", carry=[".gpu_data"], timeout_s=600)
# Back here:         cat <files_at>/inception.safetensors.part* > data/models/inception.safetensors
#                    cp <files_at>/inception.json data/models/ && sha256sum -c <(grep '  work/' ...)  (see train.log)
#                    .venv/bin/focusq evaluate data/models/inception.safetensors data/brightfield/histoqc_template3.png --pixel-size 0.5
#
# Budget (600 s command): ~75 s throughput check, MINUTES of training (data, OTF bank, the
# final validation and checkpoint included), the checkpoint split into parts: files come
# back at most 16 MiB each and 8 in all (bench.log, train.log, inception.json, 4 parts).
# A second command on the same warm machine resumes: RESUME=work/inception.safetensors.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src FOCUSQ_DATA=$PWD/.gpu_data PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}
MINUTES=${MINUTES:-7}
mkdir -p "$OUT" work
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c 'import torch; print(torch.__version__, torch.cuda.is_available())'; } 2>&1 | tee "$OUT/bench.log"
timeout 75 python3 benchmarks/bench_inception_train.py --device cuda --repeats 10 2>&1 | tee -a "$OUT/bench.log"
# The trainer ends itself within MINUTES; the timeout only guards the command's limit. Its
# checkpoint file is written atomically every 2 minutes, so whatever stops it, the last one is whole.
timeout $((MINUTES * 60 + 60)) python3 -c 'from napari_focusq.cli.app import main; raise SystemExit(main())' \
    train --preset inception --device cuda --minutes "$MINUTES" --checkpoint-minutes 2 \
    --out work/inception.safetensors ${RESUME:+--init "$RESUME"} 2>&1 | tr '\r' '\n' | grep -v '^$' | tee "$OUT/train.log"
if [ -f work/inception.safetensors ]; then
    sha256sum work/inception.safetensors | tee -a "$OUT/train.log"
    split -b 15M -d -a 1 work/inception.safetensors "$OUT/inception.safetensors.part"
    cp work/inception.json "$OUT/"
fi
ls -la "$OUT"
