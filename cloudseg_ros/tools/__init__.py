"""Command-line tools: demo and benchmarks (entry points of the `cloudseg` command)."""
