# The README's two commands: `make demo` and `make test`. Each does all set-up first.
.PHONY: setup demo test lint

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	ruff check speechkit tests recipes benchmarks
	python3 -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests  # two workers, a test file each

lint: setup
	ruff check speechkit tests recipes benchmarks
	ruff format --check speechkit tests recipes benchmarks
