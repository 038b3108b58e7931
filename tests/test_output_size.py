"""Which vectors `embed` writes and in what precision: the pooled `embedding` alone by default,
the per-layer `layers` on request, float32 or float16, always as typed fixed-size lists."""

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.embedding import read_embedding, read_layers
from tests.conftest import FIXTURE

ROOT = Path(__file__).resolve().parents[1]
CHOICES = {"default": [], "layers": ["--vectors", "layers"], "float16": ["--vector-dtype", "float16"],
           "layers-float16": ["--vectors", "layers", "--vector-dtype", "float16"]}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, fixture_encoder):
    base = tmp_path_factory.mktemp("sizes")
    out = {}
    for name, options in CHOICES.items():
        result = CliRunner().invoke(main, ["embed", str(ROOT / "examples" / "messages.csv"), "--out",
                                           str(base / name), "--model", str(FIXTURE), "--cache-dir",
                                           str(base / "cache"), *options])
        assert result.exit_code == 0, result.output + repr(result.exception)
        out[name] = base / name
    return out


def table(out: Path) -> pa.Table:
    return ds.dataset(str(out), format="parquet").to_table().sort_by("id")


def test_default_writes_the_pooled_embedding_only(outputs, fixture_encoder):
    data = table(outputs["default"])
    dim = fixture_encoder.dim
    assert data.schema.field("embedding").type == pa.list_(pa.float32(), dim)
    assert "layers" not in data.column_names and data.schema.metadata[b"elmobatch.vectors"] == b"pooled"
    with pytest.raises(ValueError, match="no `layers` column .* --vectors layers"):
        read_layers(data)
    full = table(outputs["layers"])
    assert full.schema.field("layers").type == pa.list_(pa.list_(pa.float32(), dim), 3)
    np.testing.assert_array_equal(read_embedding(data), read_embedding(full))
    np.testing.assert_allclose(read_embedding(full), read_layers(full).mean(axis=1), atol=1e-6)


def test_float16_halves_the_vectors_and_stays_close(outputs, fixture_encoder):
    half, full = table(outputs["layers-float16"]), table(outputs["layers"])
    assert half.schema.field("embedding").type == pa.list_(pa.float16(), fixture_encoder.dim)
    assert half.schema.field("layers").type == pa.list_(pa.list_(pa.float16(), fixture_encoder.dim), 3)
    assert read_embedding(half).dtype == np.float32 and read_layers(half).dtype == np.float32
    np.testing.assert_allclose(read_embedding(half), read_embedding(full), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(read_layers(half), read_layers(full), rtol=2e-3, atol=2e-3)
    # DuckDB, as a consumer would, reads the half-precision lists
    [(n, dim)] = duckdb.sql(f"SELECT count(*), max(len(embedding)) FROM '{outputs['float16']}/*.parquet'").fetchall()
    assert (n, dim) == (half.num_rows, fixture_encoder.dim)


def test_bytes_per_row_follow_the_choice(outputs):
    def size(name: str) -> int:
        return sum(p.stat().st_size for p in outputs[name].glob("part-*.parquet"))

    assert size("float16") < size("default") < size("layers")
    assert size("layers-float16") < size("layers") and size("float16") < size("layers-float16")
    assert size("layers") > 2 * size("default")  # 4 vectors a row against 1
