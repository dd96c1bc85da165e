import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ci")
# tiny models run fastest on one thread, and stay fast when other work shares the cores
torch.set_num_threads(1)


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")
