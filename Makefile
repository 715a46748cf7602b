# The few commands a person types; each is a thin call so you can see what it runs.
.PHONY: install demo test lint bench

install:
	python -m pip install uv
	uv sync --locked --all-extras

demo:
	uv run --locked --all-extras python -m pipeline serve

test:
	uv run --locked --all-extras pytest

lint:
	uv run --locked --all-extras ruff check service pipeline tests
	uv run --locked --all-extras ruff format --check service pipeline tests
	uv run --locked --all-extras mypy

bench:
	uv run --locked --all-extras python -m bench.serve_bench
	uv run --locked --all-extras python -m bench.pipeline_bench --rows 10000,100000,1000000,10000000 --repeats 3 --plot docs/pipeline_scale.png
