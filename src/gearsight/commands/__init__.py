"""CLI subcommands: argument parsing only; the work lives in the pipeline modules."""
