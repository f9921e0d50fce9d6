# syntax=docker/dockerfile:1
# The reward models' image: the Python servers of scripts/remote_scorer/ (CLAP, Audiobox
# Aesthetics) with torch, transformers and the musicrl-scorer kit. No weights are in it: each
# server loads its folder from the musicrl-models volume (deploy/overlays/musicgen).
#
#   docker build -f deploy/scorer.Dockerfile -t musicrl-scorer:0.1.0 .
#
# torch's default Linux wheel brings CUDA's libraries, so the same image runs on a GPU node
# with --device cuda.
FROM python:3.12-slim
WORKDIR /opt/musicrl-scorer
COPY python/musicrl-scorer /tmp/musicrl-scorer
RUN pip install --no-cache-dir torch==2.15.0 transformers==5.23.0 audiobox-aesthetics==0.0.4 \
        /tmp/musicrl-scorer \
 && rm -rf /tmp/musicrl-scorer \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin musicrl
COPY scripts/remote_scorer scripts/remote_scorer
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
USER 10001:10001
EXPOSE 50071 50072
ENTRYPOINT ["python"]
