"""Fixtures the trainer tests share."""

import pytest

from trainer import strategy as strategy_lib


@pytest.fixture(scope="module")
def strategy():
    """MirroredStrategy over the 2 logical CPU devices tests/conftest.py makes."""
    strategy = strategy_lib.create_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    return strategy
