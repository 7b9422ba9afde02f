"""``python -m gearsight.serve MODEL [options]``: same as ``gearsight serve``, importing nothing else."""
from gearsight.serve.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
