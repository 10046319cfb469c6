"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CAPROUTE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: a user's fresh clone has no ../shared (CI has it)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set CAPROUTE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def routerdc_dir(shared_data) -> Path:
    p = shared_data / "routerdc_7llm_repeated"
    if not (p / "scores_long.parquet").exists():
        pytest.skip(f"RouterDC data not found at {p}")
    return p


@pytest.fixture(scope="session")
def pandalm_file(shared_data) -> Path:
    p = shared_data / "pandalm_pairwise_human_vs_llmjudge" / "pairs.parquet"
    if not p.exists():
        pytest.skip(f"PandaLM pairs not found at {p}")
    return p
