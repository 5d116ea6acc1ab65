# The participants' in-cluster JupyterLab: this package (editable install, so manifests/ and
# notebooks/ sit next to it) and JupyterLab. Build from the repository root and push where the
# cluster's nodes can pull (ECR), then set lab.yaml participants.jupyter_image:
#   docker build -f scripts/jupyterlab.Dockerfile -t <registry>/vllm-lws-lab-jupyterlab:0.1.0 .
#   docker push <registry>/vllm-lws-lab-jupyterlab:0.1.0
# It runs as uid 10002 with a read-only root filesystem (participant/jupyterlab.yaml): the
# notebooks are copied into the writable $HOME at start.
FROM python:3.12-slim-bookworm
COPY . /opt/vllm-lws-lab
RUN pip install --no-cache-dir -e /opt/vllm-lws-lab "jupyterlab>=4,<5" \
    && useradd --uid 10002 --create-home --home-dir /home/lab lab
USER 10002
WORKDIR /home/lab
