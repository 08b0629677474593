"""Backup store: the last place a failed write goes before the sender gets an error.

The publisher puts a batch here only when an event could be written neither to its topic nor to
the failed-writes topic; the failed-writes processor lists, reads and republishes the batches and
deletes each one only after every event in it is back in Kafka. Two implementations share the
:class:`BackupStore` protocol: :class:`S3Store` (any S3-compatible endpoint) and
:class:`SpoolStore` (a local directory, fsynced). Objects use the format of
:mod:`eventgw.core.backup_codec`.
"""

from eventgw.backup.s3 import S3Store
from eventgw.backup.spool import SpoolStatistics, SpoolStore
from eventgw.backup.store import BackupFull, BackupNotFound, BackupStore, BackupUnavailable

__all__ = [
    "BackupFull",
    "BackupNotFound",
    "BackupStore",
    "BackupUnavailable",
    "S3Store",
    "SpoolStatistics",
    "SpoolStore",
]
