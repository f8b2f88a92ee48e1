#!/usr/bin/env bash
# Install JupyterLab for jobs on the test bed: jupyter.sh VENV REQUIREMENTS (as torch.sh does PyTorch).
# Run by start.sh in the background, in its own session; the venv is made from Debian's /usr/bin/python3
# so that the test user can run it. An existing venv is updated in place, never removed.
set -euo pipefail
venv=$1 req=$2
[[ -x $venv/bin/python ]] || /usr/bin/python3 -m venv "$venv"
rm -f "$venv/.testbed-installed"
"$venv/bin/pip" install --disable-pip-version-check --progress-bar off -r "$req"
"$venv/bin/jupyter-lab" --version | sed 's/^/jupyterlab /'
chmod -R a+rX "$venv"
cp "$req" "$venv/.testbed-installed"
