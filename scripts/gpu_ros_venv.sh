#!/usr/bin/env bash
# Build the ROS 2 venv on a machine without internet (the GPU machine) from carried wheels.
#
#   WHEELS="dir1 dir2" bash scripts/gpu_ros_venv.sh [VENV]      (VENV: relative, default .venv312)
#
# The wheels are the Kilted lines of requirements.txt (plus pip, catkin_pkg, empy, lark,
# psutil, setuptools, wheel, av, simplejpeg) for the target Python, fetched on a connected machine with
#   pip download --python-version 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64 \
#     --platform manylinux2014_x86_64 --platform any -d DIR <those names>
# (empy is an sdist: `pip wheel --no-deps empy==3.3.4 -w DIR` first, it is pure Python).
# The venv sees the system's site-packages, so the machine's own torch (CUDA), numpy and OpenCV
# are used; then the Makefile's own steps build msg/ and install the package, exactly as
# `make venv` does, so `VENV/bin/cloudseg ...` works (e.g. `cloudseg bench-fleet`).
set -euo pipefail
VENV=${1:-.venv312}
case $VENV in /*) echo "VENV must be relative to the repository root (the Makefile's rule)" >&2
                  exit 2 ;; esac
: "${WHEELS:?set WHEELS to the folders holding the wheels}"
links=()
for d in $WHEELS; do links+=(--find-links "$d"); done
ros_reqs=$(grep -o '^ros-kilted-[a-z0-9-]*==[0-9.]*' requirements.txt | grep -v pytest)

python3 -m venv --system-site-packages "$VENV"
# When python3 is itself a venv (the GPU machine's torch lives in one), --system-site-packages
# only reaches the base interpreter: add the outer venv's packages too, after the new venv's own.
outer=$(python3 -c 'import sys, sysconfig
print(sysconfig.get_paths()["purelib"] if sys.prefix != sys.base_prefix else "")')
if [ -n "$outer" ]; then
  "$VENV/bin/python" -c 'import sys, sysconfig
open(sysconfig.get_paths()["purelib"] + "/zz_outer_venv.pth", "w").write(sys.argv[1] + "\n")' "$outer"
fi
# An old pip makes a legacy egg-link for the editable install, which hides the entry points.
"$VENV/bin/python" -m pip install -q --no-index "${links[@]}" --upgrade pip 2>&1 \
  | grep -v '^WARNING' || true
"$VENV/bin/python" -m pip install -q --no-index "${links[@]}" $ros_reqs catkin_pkg \
  empy==3.3.4 lark psutil av simplejpeg setuptools wheel 2>&1 | grep -v '^WARNING' || true
"$VENV/bin/python" -c 'import rclpy, torch, cv2, catkin_pkg, em, ament_package, simplejpeg
print("ros venv:", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'
# requirements.txt is already satisfied (without its CPU torch pin): the Makefile's dependency
# stamp would try to download, so mark it done and let make build the messages and package.
touch "$VENV/.stamp-deps"
make -s "$VENV/.stamp-pkg" VENV="$VENV"
"$VENV/bin/cloudseg" --help > /dev/null && echo "ros venv ready: $VENV"
