"""``python -m gearsight.serve MODEL [options]``: same as ``gearsight serve``, importing nothing else."""
from gearsight.commands.serve_cmd import main

if __name__ == "__main__":
    raise SystemExit(main())
