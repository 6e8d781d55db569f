import numpy as np
import pytest

from adapters.index_files import load_attributes
from index_builder.attributes import read_table, write_attributes
from index_builder.synth import BUCKET_SELECTIVITIES, synth_attributes
from schemas.errors import IndexRejected, InvalidInput

IDS = [f"i{i}" for i in range(6)]


def _csv(tmp_path, text: str):
    path = tmp_path / "attrs.csv"
    path.write_text(text)
    return path


def _load(tmp_path, table):
    out = tmp_path / "version"
    out.mkdir()
    return load_attributes(out, write_attributes(table, out), table.n_items)


def test_csv_columns_become_categories_and_flags(tmp_path):
    path = _csv(
        tmp_path,
        "item_id,category,in_stock\ni0,shoes,TRUE\ni1,hats,false\ni2,shoes,\ni4,,True\n",
    )
    table = read_table(path, IDS)
    assert {c.name: c.type for c in table.columns} == {"category": "category", "in_stock": "bool"}
    attrs = _load(tmp_path, table)
    assert attrs.category_rows("category", ["shoes"]).tolist() == [0, 2]
    assert attrs.category_rows("category", ["hats", "shoes"]).tolist() == [0, 1, 2]
    # i3 and i5 are not in the table, i2 and i4 have empty cells: no value, pass no `eq`.
    assert np.flatnonzero(attrs.bool_mask("in_stock", [True])).tolist() == [0, 4]
    assert np.flatnonzero(attrs.bool_mask("in_stock", [False])).tolist() == [1]


def test_parquet_bool_and_integer_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "attrs.parquet"
    pq.write_table(
        pa.table({"item_id": ["i0", "i5"], "on_sale": [True, False], "shelf": [3, 12]}), path
    )
    table = read_table(path, IDS)
    attrs = _load(tmp_path, table)
    assert attrs.spec("on_sale").type == "bool"
    assert attrs.spec("shelf").values == ["12", "3"]
    assert attrs.category_rows("shelf", ["12"]).tolist() == [5]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("item_id,color\ni0,red\nghost,blue\n", "1 item ids are not in the factors"),
        ("item_id,color\ni0,red\ni0,blue\n", "appears more than once"),
        ("sku,color\ni0,red\n", "no item_id column"),
        ("item_id,Color\ni0,red\n", "must match"),
        ("item_id\ni0\n", "no attribute columns"),
        ("item_id,color\ni0,red,extra\n", "wrong number of fields"),
    ],
)
def test_bad_tables_are_refused_with_the_reason(tmp_path, text, words):
    with pytest.raises(InvalidInput, match=words):
        read_table(_csv(tmp_path, text), IDS)


def test_float_columns_are_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "attrs.parquet"
    pq.write_table(pa.table({"item_id": ["i0"], "price": [9.99]}), path)
    with pytest.raises(InvalidInput, match="holds numbers"):
        read_table(path, IDS)


def test_updates_are_folded_into_flags_only(tmp_path):
    table = read_table(_csv(tmp_path, "item_id,color,in_stock\ni0,red,true\ni1,red,true\n"), IDS)
    applied = table.apply_updates(
        {("in_stock", "i1"): False, ("in_stock", "ghost"): False, ("color", "i0"): True}, IDS
    )
    assert applied == 1
    attrs = _load(tmp_path, table)
    assert np.flatnonzero(attrs.bool_mask("in_stock", [True])).tolist() == [0]


def test_a_tampered_offsets_file_is_refused(tmp_path):
    table = read_table(_csv(tmp_path, "item_id,color\ni0,red\ni1,blue\n"), IDS)
    out = tmp_path / "v"
    out.mkdir()
    specs = write_attributes(table, out)
    np.save(out / specs[0].offsets_file, np.array([0, 1, 5], dtype=np.int64))
    with pytest.raises(IndexRejected, match="color"):
        load_attributes(out, specs, len(IDS))


def test_synthetic_buckets_have_their_exact_selectivity(tmp_path):
    n = 100_000
    attrs = _load(tmp_path, synth_attributes(n, seed=4))
    for value, share in BUCKET_SELECTIVITIES.items():
        assert len(attrs.category_rows("bucket", [value])) == round(share * n)
