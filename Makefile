# make demo: set up, then train + evaluate Mask R-CNN on generated COCO-format data.
# make test: set up, then run the test suite.
PY := $(CURDIR)/.venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export PYTHON := $(PY)

.PHONY: setup test demo clean

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest -q tests

demo: setup
	@bash tools/demo.sh

clean:
	rm -rf work_dirs data/demo_coco
