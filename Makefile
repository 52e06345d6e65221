# Two entry points: `make demo` and `make test`. Both build .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch first, pinned to the build this machine keeps on disk, so that the
# package's own `torch>=2.2` requirement is already met and pip fetches nothing big.
TORCH := torch==2.14.1 torchvision==0.29.1
# Debian packages napari needs for a real OpenGL context under Xvfb.
APT_PKGS := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libdbus-1-3 \
	libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 \
	libfontconfig1 libglib2.0-0
DEMO_OUT ?= demo_out

.PHONY: demo test install install-test sysdeps bench weights clean restamp-weights

$(VENV)/.base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.testing: $(VENV)/.base
	$(PY) -m pip install -q -e '.[all,testing]'
	touch $@

install: $(VENV)/.base
install-test: $(VENV)/.testing

sysdeps:
	@if ! command -v xvfb-run >/dev/null || ! ldconfig -p | grep -q libxcb-cursor.so.0 \
	    || ! ldconfig -p | grep -q libEGL.so.1; then \
	  echo "installing Debian packages for a virtual display" >&2; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(APT_PKGS); \
	fi

demo: install
	$(VENV)/bin/focusq demo --out $(DEMO_OUT)

test: install-test sysdeps
	$(VENV)/bin/ruff check src tests benchmarks
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/run_all.py

weights: install
	$(VENV)/bin/focusq train --recipe default --out src/napari_focusq/weights

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info

# Record a new digest (tensors + reading metadata) in the shipped weights after editing
# their .json by hand; `focusq train` stamps what it writes itself.
restamp-weights:
	PYTHONPATH=src $(PYTHON) -m napari_focusq.models.restamp src/napari_focusq/weights/*.safetensors
