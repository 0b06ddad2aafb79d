"""Benchmark suites run by `make bench`; each module has run(quick) -> rows and markdown(rows) -> str."""
