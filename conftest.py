"""Doctest collection over src/crossent: modules whose optional dependency is not installed
are skipped rather than reported as import errors (their own tests skip the same way)."""

import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("transformers") is None:
    collect_ignore_glob.append("src/crossent/integrations/transformers.py")
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob += ["src/crossent/torch/*", "src/crossent/integrations/*",
                            "src/crossent/bench/*"]
