import pytest

from adapters.index_files import check_files
from schemas.errors import AnnrecError, IndexRejected
from schemas.layout import read_latest, version_dir
from schemas.manifest import MANIFEST_NAME, Manifest


@pytest.mark.parametrize("name", ["../etc", "..", "a/b", "", "20261125T205201.985044Z-f5ef7e/.."])
def test_version_names_cannot_escape_the_storage_root(tmp_path, name):
    with pytest.raises(AnnrecError):
        version_dir(tmp_path, name)


def test_latest_with_a_foreign_name_is_refused(tmp_path):
    (tmp_path / "LATEST").write_text("../../secrets\n")
    with pytest.raises(AnnrecError, match="not a version name"):
        read_latest(tmp_path)
    assert read_latest(tmp_path / "empty") is None


def test_check_files_catches_truncation_and_alteration(published):
    storage, manifest = published
    directory = version_dir(storage, manifest.version)
    check_files(directory, manifest)  # intact: no error
    stored = Manifest.model_validate_json((directory / MANIFEST_NAME).read_text())
    assert stored == manifest

    target = directory / manifest.mips_index.bands[0].file
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IndexRejected, match="sha256"):
        check_files(directory, manifest)
    target.write_bytes(bytes(data[:-4]))
    with pytest.raises(IndexRejected, match="bytes"):
        check_files(directory, manifest)
