"""Damage a stored object behind the store's back, for tests of corruption detection.

corrupt_object(store, "gan/run1/ckpt/step-1.pt")   # one bit flipped, recorded sha256 kept
"""

from __future__ import annotations

import io


def corrupt_object(store, key: str) -> None:
    """Flip one bit of the object's first byte, keeping its size and its recorded sha256.

    file://: edit the file in place (same inode, so only the sha256 check can notice);
    s3://: rewrite the object with the plain minio client, copying the old x-amz-meta-sha256.
    """
    from smf.common.store import FileStore

    if isinstance(store, FileStore):
        with open(store.root / key, "r+b") as f:
            first = f.read(1)
            f.seek(0)
            f.write(bytes([first[0] ^ 0x01]))
        return
    client = store.client
    name = f"{store.prefix}/{key}" if store.prefix else key
    recorded = client.stat_object(store.bucket, name).metadata["x-amz-meta-sha256"]
    data = bytearray(client.get_object(store.bucket, name).read())
    data[0] ^= 0x01
    client.put_object(store.bucket, name, io.BytesIO(bytes(data)), len(data), metadata={"sha256": recorded})
