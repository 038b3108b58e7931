"""`elmobatch models`: the bundled model, and every model with vectors in the cache."""

import pytest
from click.testing import CliRunner

from elmobatch import load_encoder
from elmobatch.caching import EmbeddingCache
from elmobatch.cli import main


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_models_lists_bundled_and_cached(tmp_path, fixture_dir):
    cache = EmbeddingCache(tmp_path / "cache")
    fixture = load_encoder(str(fixture_dir))
    cache.embed(fixture, ["one message", "another message", "one message"])
    cache.embed(load_encoder(str(fixture_dir), precision="bf16"), ["one message"])
    result = CliRunner().invoke(main, ["models", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    default = load_encoder("default")
    assert lines[1].startswith("default (bundled)") and "1024" in lines[1] and default.fingerprint[:16] in lines[1]
    cached = [line for line in lines if line.startswith("cached")]
    assert len(cached) == 2
    float32_line = next(line for line in cached if "bf16" not in line)
    assert fixture.fingerprint[:16] in float32_line and " 2 " in float32_line and str(fixture_dir) in float32_line
    assert any("cached, bf16" in line and " 1 " in line for line in cached)
