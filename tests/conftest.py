import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ci")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")
