# The emulated Resonite headless console, for demos, tests and benchmarks.
#
#   docker build -f deploy/emulator.Dockerfile -t resofleet-emulator .
#   docker run -it --rm resofleet-emulator                      # like the community headless images
#   docker run -it --rm resofleet-emulator --scenario busy --seed 1
#
# The emulator is standard-library Python only, so the image is a Python plus
# the emulator/ package; any base with python3 >= 3.11 and its full stdlib
# (tomllib) works. BASE_IMAGE stays a public image by default; offline machines
# pass a local one: --build-arg BASE_IMAGE=$RESOFLEET_DOCKER_BASE_IMAGE.
#
# Compose runs it as the community headless images are run:
#   tty: true
#   stdin_open: true
# With a real TTY the kernel echoes commands and ends lines with CRLF, so the
# emulator does not emulate either (no --tty needed, none doubled).
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8

LABEL org.resofleet.role="headless" \
      org.opencontainers.image.title="resofleet emulator" \
      org.opencontainers.image.description="A stand-in for the Resonite headless console"

WORKDIR /opt/resofleet
COPY emulator/ ./emulator/

# Nothing to write, no reason to be root (65534 is "nobody" on Debian bases).
USER 65534:65534

ENTRYPOINT ["python3", "-m", "emulator"]
CMD ["--scenario", "default"]
