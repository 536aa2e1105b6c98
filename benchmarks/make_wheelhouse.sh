#!/usr/bin/env bash
# Fill ./.whl (git-ignored) with what a bare GPU machine without the package index needs beside its own torch,
# triton, transformers' needs, numpy, pandas, matplotlib, pyarrow, jinja2, pyyaml, safetensors and einops (what the
# lent H200 had on 2026-11-29): lm-eval and its pure-Python needs, datasets, the transformers / tokenizers / hub
# this project tests with, fla-core, and this project itself as a wheel. Run from the project root on a machine
# that reaches PyPI; wheels are for CPython 3.12 on x86-64 Linux (the GPU machine's). Re-run after changing the
# project: its own wheel is in there. benchmarks/gpu_check.sh installs from it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for p in lm_eval==0.4.13 datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 more-itertools \
         pytablewriter DataProperty mbstrdecoder typepy tabledata tcolorpy pathvalidate chardet nltk pytz \
         transformers==5.25.0 huggingface_hub==2.4.0 tokenizers==0.23.3 httpx2 httpcore2 fsspec==2026.9.0 \
         truststore defusedxml regex click idna pytest pytest-timeout pluggy iniconfig fla-core==0.6.0 \
         accelerate wonderwords; do
  python3 -m pip download -q --no-deps "${plat[@]}" -d .whl "$p"
done
# sdist-only packages, built here as pure-Python wheels
python3 -m pip wheel -q --no-deps word2number==1.1 sqlitedict==2.1.0 rouge_score==0.1.2 -w .whl
rm -f .whl/infini_bench-*.whl
python3 -m pip wheel -q --no-deps . -w .whl
du -sh .whl
