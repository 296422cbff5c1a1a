# Two images from one file:
#   docker build --target api -t slimforge-api .       FastAPI, no torch
#   docker build --target worker -t slimforge-worker . Celery worker with CUDA torch
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/slimforge
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY compression ./compression
COPY slimforge ./slimforge
COPY migrations ./migrations
COPY data ./data

FROM base AS api
RUN pip install -e .
EXPOSE 8000
CMD ["uvicorn", "slimforge.app.asgi:app", "--host", "0.0.0.0", "--port", "8000", "--workers", "4"]

FROM base AS worker
# GGUF outputs (output.formats "gguf") need llama.cpp: llama-cpp-python (the gguf extra) compiles
# it from its sdist where no wheel fits, so a C/C++ toolchain and CMake; its CPU build is what
# converts, quantises and scores the files, also on a GPU worker. The converter
# (convert_hf_to_gguf.py) is not in the wheel: fetch_gguf_converter.py unpacks it from the same
# version's sdist into /usr/local/share/slimforge/ (pip download: needs the index at build time).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
COPY scripts/fetch_gguf_converter.py ./scripts/
# torch==2.13.0 from PyPI is the CUDA build on linux/x86_64.
RUN pip install -e ".[ml,gguf]" && python scripts/fetch_gguf_converter.py
CMD ["slimforge", "worker"]
