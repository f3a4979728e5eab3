# The image every manifest in cluster/ runs: ghcr.io/gaia2/gaia2:latest.
#   docker build -t ghcr.io/gaia2/gaia2:latest . && docker push ghcr.io/gaia2/gaia2:latest
#
# Ray's own GPU image of the pinned Ray and Python versions (tests/test_container.py checks that this tag, the
# `ray[...]==` pin in pyproject.toml and the manifests' rayVersion agree), with the project installed into it:
# the jobs run as `python -m jobs.<name>` with no working_dir. Pretrained networks are not baked in: they come
# from a mounted volume (see cluster/rayjob-evaluate.yaml), nothing is downloaded at run time.
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /home/ray/gaia2
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users gaia2 ./gaia2
COPY --chown=ray:users pipelines ./pipelines
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users cluster ./cluster
COPY --chown=ray:users examples ./examples
# The normal torch wheel (CUDA build), as on every machine; ray is already the pinned version in this image.
RUN pip install --no-cache-dir -e .

ENV RAY_DATA_DISABLE_PROGRESS_BARS=0 TOKENIZERS_PARALLELISM=false
