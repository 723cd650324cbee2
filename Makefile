# Two commands do all set-up: `make demo` and `make test` (both build .venv on first use).
# Second runs are fast: every step is guarded by a stamp file that depends on its inputs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/camvid11
DEMO_ARGS ?=
PYTEST_ARGS ?=
WAN_ARGS ?=
# The generated Python interfaces live outside site-packages' own cloudseg_ros/ so the source tree
# (installed editable) and the interfaces merge into one package (see cloudseg_ros/__init__.py).
MSG_PY_DIR := cloudseg_msgs_py

.PHONY: all venv msgs demo test lint bench-edge bench-cloud wan-test clean

all: venv

venv: $(VENV)/.stamp-pkg

$(VENV)/.stamp-deps: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -m pip install -q -r requirements.txt 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c 'import rclpy, torch, av, simplejpeg, cv2, catkin_pkg, em, ament_package'
	touch $@

# CMake installs into the venv what colcon installs into a workspace (the ament index entry,
# share/cloudseg_ros/{launch,config,models,data}, lib/cloudseg_ros/<executables>, the interfaces),
# so `ros2 run` / `ros2 launch` work on the venv too; only the Python sources come from pip.
$(VENV)/.stamp-msgs: $(VENV)/.stamp-deps CMakeLists.txt cmake/drop_missing_include_dirs.cmake \
    package.xml setup.cfg $(wildcard msg/*.msg launch/* config/* models/* data/demo/*)
	mkdir -p build/msgs
	export PATH=$(CURDIR)/$(VENV)/bin:$$PATH && cd build/msgs && \
	  cmake $(CURDIR) -DCLOUDSEG_INSTALL_PYTHON=OFF -DBUILD_TESTING=OFF \
	    -DCMAKE_PREFIX_PATH=$(CURDIR)/$(VENV) -DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(VENV) \
	    -DPYTHON_INSTALL_DIR=$(MSG_PY_DIR) -DPython3_EXECUTABLE=$(CURDIR)/$(PY) > cmake.log 2>&1 \
	  || { tail -30 cmake.log; exit 1; }
	export PATH=$(CURDIR)/$(VENV)/bin:$$PATH && $(MAKE) -s -C build/msgs install > build/msgs/make.log 2>&1 \
	  || { tail -30 build/msgs/make.log; exit 1; }
	touch $@

$(VENV)/.stamp-pkg: $(VENV)/.stamp-msgs setup.cfg setup.py
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat \
	  2>&1 | grep -v '^WARNING: Location' || true
	echo "$(CURDIR)/$(VENV)/$(MSG_PY_DIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/cloudseg_msgs.pth"
	$(PY) -c 'from cloudseg_ros.msg import EncodedFrame, PipelineStats; import cloudseg_ros.core'
	touch $@

msgs: $(VENV)/.stamp-msgs

demo: venv
	$(VENV)/bin/cloudseg demo $(DEMO_ARGS)

test: venv
	$(PY) -m pytest test $(PYTEST_ARGS)

lint: venv
	$(PY) -m flake8 cloudseg_ros test launch

bench-edge: venv
	$(VENV)/bin/cloudseg bench-edge

bench-cloud: venv
	$(VENV)/bin/cloudseg bench-cloud

# Needs root (network namespaces + tc); says "skipped" otherwise. WAN_ARGS='--uplink zenoh':
# the robot-cloud hop over the zenoh uplink with mutual TLS.
wan-test: venv
	$(VENV)/bin/cloudseg wan-test $(WAN_ARGS)

clean:
	rm -rf build $(VENV)
