# make demo: set up, then train + evaluate a SparX detector on a generated COCO-format set.
# make test: set up, then run the test suite.
PY := $(CURDIR)/.venv/bin/python
# make demo DEMO=maskrcnn: Mask R-CNN with the small SparX-Mamba instead.
DEMO ?= rtdetr

.PHONY: setup test demo clean

setup:
	@bash tools/misc/setup_env.sh

# Bytecode is cached (some environments switch it off): many tests start
# tools as new Python processes, each compiling mmsparx again without it.
test: setup
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

demo: setup
	$(PY) tools/misc/demo.py --preset $(DEMO)

clean:
	rm -rf work_dirs data/demo_coco
