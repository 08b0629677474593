"""Build the configured backup store: S3 when a bucket is set, else the local spool."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventgw.backup.s3 import S3Store
from eventgw.backup.spool import SpoolStore

if TYPE_CHECKING:
    from eventgw.backup.store import BackupStore
    from eventgw.config.settings import BackupSettings


async def open_backup_store(settings: BackupSettings) -> BackupStore:
    """Open (and for S3, connect) the backup store; the caller must ``close()`` it."""
    if settings.s3_bucket:
        store = S3Store(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=(
                settings.s3_secret_access_key.get_secret_value()
                if settings.s3_secret_access_key
                else None
            ),
            auth=settings.auth(),
        )
        await store.open()
        return store
    spool = SpoolStore(settings.spool_dir, max_bytes=settings.spool_max_bytes, auth=settings.auth())
    await spool.open()
    return spool
