# The two set-up commands of the README; each creates .venv and installs what it needs.
#   make demo   run the main job on the embedded synthetic default
#   make test   run the test suite (what CI runs)
#   make bench  run every benchmark (benchmarks/RESULTS.md)
.PHONY: demo test lint bench

demo:
	./scripts/demo

test:
	./scripts/test

lint:
	MRG_EXTRAS=dev ./scripts/venv.sh && .venv/bin/ruff check mrg tests benchmarks

# every benchmark of benchmarks/RESULTS.md, one after another (about an hour on 2 cores; bench_learning is most of it)
bench:
	./scripts/venv.sh && for b in benchmarks/bench_*.py benchmarks/labeler_agreement.py benchmarks/labeler_iu_mesh.py; do \
	  echo "== $$b"; .venv/bin/python $$b || exit 1; done
