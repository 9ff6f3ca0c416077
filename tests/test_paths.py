"""utils.paths: file digests."""
import os

from wespeaker_py.utils.paths import file_digest


def test_file_digest_reads_the_whole_content_in_blocks(tmp_path):
    import hashlib
    path = tmp_path / "big.bin"
    content = os.urandom((1 << 20) + 17)   # more than one block
    path.write_bytes(content)
    assert file_digest(str(path)) == hashlib.sha256(content).hexdigest()
    assert file_digest(str(path), "sha1") == hashlib.sha1(content).hexdigest()
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))   # the last byte changed
    assert file_digest(str(path)) != hashlib.sha256(content).hexdigest()
