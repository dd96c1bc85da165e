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


@pytest.fixture(autouse=True, scope="session")
def computed_cache(tmp_path_factory):
    """Computed tables (RDLM's marginal approximation) go to one fresh folder per session: built
    once, shared by the tests and the CLI runs they start, never written to the user's cache."""
    import os

    os.environ["SIMPLEXDIFF_CACHE"] = str(tmp_path_factory.mktemp("computed"))
    yield
