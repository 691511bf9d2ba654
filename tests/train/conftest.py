import pytest

from train.synth_shards import write_synthetic_shards


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """Synthetic shards (Parquet + WebDataset, 120 train / 20 val rows, shards of 32 rows)."""
    return write_synthetic_shards(tmp_path_factory.mktemp("synth") / "out")

