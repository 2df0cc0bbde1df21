import sys

try:
    # What the benchmark needs beyond the server's own requirements (tqdm is imported late,
    # during a run: checked here, before anything starts).
    import numpy  # noqa: F401
    import psutil  # noqa: F401
    import tqdm  # noqa: F401

    from bench.cli import main
except ModuleNotFoundError as exc:  # say what to install, in one line
    if not exc.name or exc.name.split(".")[0] in ("bench", "geventchat"):
        raise
    missing = exc.name.split(".")[0]
    sys.exit(f"bench: error: python -m bench needs {missing}: pip install -r requirements.txt (or pip install {missing})")

raise SystemExit(main())
