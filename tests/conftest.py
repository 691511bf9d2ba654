import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session: ray.init costs seconds (NOTES)."""
    import ray

    from dataengine.pipeline.ray_session import init_ray

    init_ray(address="local", num_cpus=2)  # never join a cluster another test left behind
    yield ray
    ray.shutdown()
