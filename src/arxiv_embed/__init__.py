"""Shared code of the arXiv embedding pipeline and its API.

Small flat modules; nothing happens at import time but one check of where they are imported from: a stage run
in a copy of the repository (``dvc exp run --temp``, queued experiments under ``.dvc/tmp/exps/``) must run that
copy's code, which is what DVC records for the experiment, while an editable install points at the main
checkout. When the working folder holds its own ``src/arxiv_embed``, the package's submodules come from there.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_workspace = _Path.cwd() / "src" / "arxiv_embed"
if (_workspace / "__init__.py").is_file() and _workspace.resolve() != _Path(__file__).resolve().parent:
    __path__ = [str(_workspace)]
