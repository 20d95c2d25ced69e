# One image, two torch flavours:
#   api:    docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t mtl-tune-api .
#   worker: docker build -t mtl-tune-worker .   (PyPI's default torch wheels carry CUDA on linux/x86_64)
# The API process never trains; it only needs torch to validate problems, so the CPU wheel is enough there.
FROM python:3.11-slim

ARG TORCH_INDEX=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY tuner ./tuner
COPY api ./api
COPY storage ./storage
COPY mtl_tune_cli ./mtl_tune_cli

RUN if [ -n "$TORCH_INDEX" ]; then pip install "torch>=2.4" --index-url "$TORCH_INDEX"; fi \
    && pip install .

RUN useradd --create-home mtl && mkdir -p /data && chown mtl /data
USER mtl
WORKDIR /data
EXPOSE 8000
ENTRYPOINT ["mtl-tune"]
CMD ["--help"]
