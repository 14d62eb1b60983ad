#!/usr/bin/env bash
# Sets up everything the tests need and runs them (napari widgets run on a virtual X screen).
set -euo pipefail
cd "$(dirname "$0")/.."
GUI_PACKAGES="xvfb libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 \
libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 \
libxcb-image0 libdbus-1-3"
if ! command -v xvfb-run >/dev/null || ! ldconfig -p | grep -q libxcb-cursor; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $GUI_PACKAGES >/dev/null
  else
    echo "napari's tests need a virtual screen; install it with:" >&2
    echo "  sudo apt-get install -y $GUI_PACKAGES" >&2
    exit 1
  fi
fi
bash scripts/setup.sh ".[test]"
xvfb-run -a .venv/bin/python -m pytest "$@"
