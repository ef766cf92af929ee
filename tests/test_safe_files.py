"""Files someone else may control: a link, a FIFO or a huge file is refused at once, never followed or waited on."""

import os

import pytest

from retrovue_air import safe_files


def test_a_regular_file_is_read_whole(tmp_path):
    (tmp_path / "a").write_bytes(b"hello")
    assert safe_files.read_regular(str(tmp_path / "a"), 5) == b"hello"


def test_a_file_over_the_cap_is_refused(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 6)
    with pytest.raises(safe_files.UnsafeFile, match="larger than 5"):
        safe_files.read_regular(str(tmp_path / "a"), 5)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "f")  # no writer: a plain open() would wait for one forever
    with pytest.raises(safe_files.UnsafeFile, match="not a regular file"):
        safe_files.read_regular(str(tmp_path / "f"), 100)


def test_a_symlink_is_not_followed(tmp_path):
    (tmp_path / "target").write_bytes(b"secret")
    os.symlink(tmp_path / "target", tmp_path / "link")
    with pytest.raises(safe_files.UnsafeFile, match="symbolic link"):
        safe_files.read_regular(str(tmp_path / "link"), 100)


def test_a_directory_and_a_device_are_refused(tmp_path):
    for path in (str(tmp_path), "/dev/zero"):
        with pytest.raises(safe_files.UnsafeFile):
            safe_files.read_regular(path, 100)


def test_create_new_never_writes_through_a_planted_link(tmp_path):
    (tmp_path / "victim").write_bytes(b"keep")
    os.symlink(tmp_path / "victim", tmp_path / "out")
    with pytest.raises(FileExistsError):
        safe_files.create_new(str(tmp_path / "out"))
    assert (tmp_path / "victim").read_bytes() == b"keep"
    fd = safe_files.create_new(str(tmp_path / "new"))
    os.close(fd)
    assert (tmp_path / "new").exists()


def test_a_temporary_is_new_private_and_says_whose_it_is(tmp_path):
    fd, path = safe_files.create_temporary(str(tmp_path), "red-abc.ts", "k1-42")
    os.close(fd)
    name = os.path.basename(path)
    assert name.startswith(".red-abc.ts.k1-42.") and name.endswith(".part")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert safe_files.temporary_of(name) == ("red-abc.ts", "k1-42")
    for other in (".red-abc.ts.part", "red-abc.ts", ".x..part", ".ingest-progress-abc.part"):
        assert safe_files.temporary_of(other) is None, other
    with pytest.raises(ValueError):
        safe_files.create_temporary(str(tmp_path), "a", "has.dot")


def test_replace_whole_replaces_a_planted_link_instead_of_writing_through_it(tmp_path):
    (tmp_path / "victim").write_bytes(b"keep")
    os.symlink(tmp_path / "victim", tmp_path / "out.json")
    safe_files.replace_whole(str(tmp_path / "out.json"), b"new", "t")
    assert (tmp_path / "victim").read_bytes() == b"keep"
    assert not os.path.islink(tmp_path / "out.json") and (tmp_path / "out.json").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["out.json", "victim"]  # no temporary left
