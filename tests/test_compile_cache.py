"""The train CLI's JAX persistent compilation cache (keras_densenet/training/compile_cache.py)."""

import pytest

from keras_densenet.training import compile_cache
from tests.helpers import BACKEND


@pytest.fixture
def jax_cache_reset():
    yield
    if BACKEND == "jax":
        import jax

        jax.config.update("jax_compilation_cache_dir", None)


def test_enable_on_jax_only(tmp_path, monkeypatch, jax_cache_reset):
    monkeypatch.setenv(compile_cache.ENV_SWITCH, "1")
    directory = str(tmp_path / "cache")
    result = compile_cache.enable(directory)
    if BACKEND != "jax":
        assert result is None
        return
    import jax

    assert result == directory and jax.config.jax_compilation_cache_dir == directory
    # A directory JAX already has is kept.
    assert compile_cache.enable(str(tmp_path / "other")) == directory


def test_switch_off(tmp_path, monkeypatch, jax_cache_reset):
    monkeypatch.setenv(compile_cache.ENV_SWITCH, "0")
    assert compile_cache.enable(str(tmp_path / "cache")) is None
    assert not (tmp_path / "cache").exists()
