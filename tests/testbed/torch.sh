#!/usr/bin/env bash
# Install PyTorch's CPU build for jobs on the test bed: torch.sh VENV REQUIREMENTS.
# Run by start.sh (in the background, in its own session); the venv is made from Debian's
# /usr/bin/python3 so that the test user can run it (a venv of a Python under /root cannot be).
# An existing venv is updated in place (running jobs keep their interpreter), never removed.
set -euo pipefail
venv=$1 req=$2
[[ -x $venv/bin/python ]] || /usr/bin/python3 -m venv "$venv"
rm -f "$venv/.testbed-installed"
links=()
[[ -d /opt/wheels ]] && links=(--find-links /opt/wheels) # where these machines keep the torch wheel
"$venv/bin/pip" install --disable-pip-version-check --progress-bar off "${links[@]}" -r "$req"
"$venv/bin/python" -c 'import torch, torch.distributed as d; assert d.is_gloo_available(); print("torch", torch.__version__)'
chmod -R a+rX "$venv"
cp "$req" "$venv/.testbed-installed"
