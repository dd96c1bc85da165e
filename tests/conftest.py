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
    """Computed tables (RDLM's marginal approximation) go to one fresh folder per test run: built
    once, shared by the tests, the xdist workers (the cache writes each file atomically) and the
    CLI runs they start, never written to the user's cache."""
    import os

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder = root / "computed"
    folder.mkdir(exist_ok=True)
    os.environ["SIMPLEXDIFF_CACHE"] = str(folder)
    yield


def pytest_collection_modifyitems(items):
    """Tests marked ``slow`` first (stable otherwise): with one xdist worker per core, long tests
    started early and short ones filling in at the end keep every core busy to the finish."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
