"""Checkpoints given by URL: downloaded once into a cache folder, then read
as the local files they have become.

torch.hub's and mmengine's ``load_from_http`` would download too, but they
unpickle with whatever ``torch.load`` does by default and fail with a
traceback. Here the file lands whole or not at all (a part file renamed
over the name), other processes wait for the one downloading it, a second
use needs no network, and a failed download is one paragraph that names
the URL, the reason and how to do without the network. Reading the file
is :mod:`mmsparx.fileio.reading`'s job, so a URL meets the same safe
loader as a path.
"""
from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import os.path as osp
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import BinaryIO, Iterator

from mmsparx.fileio.fitting import CheckpointError

CACHE_ENV = 'MMSPARX_CACHE'
# Seconds without a byte before a download is given up.
TIMEOUT_S = 60.0
CHUNK = 1 << 20
# The command that fetches and converts the published files (text only).
FETCH_COMMAND = 'python tools/model_converters/download.py'


class DownloadError(CheckpointError):
    """A checkpoint URL that could not be fetched. The message is one
    paragraph: the URL, why, and how to do without the network."""


def is_url(path: object) -> bool:
    """Whether ``path`` is an http(s) address rather than a file path."""
    return isinstance(path, str) and path.lower().startswith(
        ('http://', 'https://'))


def cache_dir() -> str:
    """``$MMSPARX_CACHE`` if set, else torch.hub's checkpoint folder (where
    torch.hub and mmengine keep what they download, so their copies are
    found too)."""
    folder = os.environ.get(CACHE_ENV)
    if folder:
        return osp.abspath(osp.expanduser(folder))
    import torch.hub
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def cached_path(url: str) -> str:
    """Where ``url`` is kept: the cache folder and the URL's file name."""
    name = osp.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise DownloadError(
            f'{url} names no file (its path ends in "/"): give the address '
            f'of the checkpoint file itself.')
    return osp.join(cache_dir(), urllib.parse.unquote(name))


def local_copy(path: str) -> str:
    """``path`` itself when it is not a URL; for a URL, its file in the
    cache, downloaded first when it is not there yet.

    Raises:
        DownloadError: the download failed or the cache is not writable.
    """
    if not is_url(path):
        return path
    target = cached_path(path)
    if osp.isfile(target):
        return target
    folder = osp.dirname(target)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise DownloadError(_unwritable(path, folder, err)) from err
    with _folder_lock(path, folder):
        if not osp.isfile(target):  # else another process fetched it
            _download(path, target)
    return target


@contextlib.contextmanager
def _folder_lock(url: str, folder: str) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder: the ranks of one job
    started together download a file once, the others wait for it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as err:
        raise DownloadError(_unwritable(url, folder, err)) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _download(url: str, target: str) -> None:
    """``url`` into ``target`` through a part file beside it; the part
    file goes whatever interrupts the download."""
    from mmengine.logging import print_log
    folder = osp.dirname(target)
    try:
        fd, part = tempfile.mkstemp(
            dir=folder, prefix=osp.basename(target) + '.', suffix='.part')
    except OSError as err:
        raise DownloadError(_unwritable(url, folder, err)) from err
    print_log(f'downloading {url} to {target}', logger='current')
    try:
        with os.fdopen(fd, 'wb') as out:
            _fetch_into(url, target, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, target)
    finally:
        if osp.exists(part):
            os.remove(part)
    print_log(f'downloaded {url} ({osp.getsize(target) / 2**20:.1f} MiB)',
              logger='current')


def _fetch_into(url: str, target: str, out: BinaryIO) -> None:
    request = urllib.request.Request(url, headers={'User-Agent': 'mmsparx'})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            expected = response.headers.get('Content-Length')
            copied = 0
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                copied += len(chunk)
    except (urllib.error.URLError, http.client.HTTPException,
            OSError) as err:
        raise DownloadError(download_failed(url, _reason(err),
                                            target)) from err
    if expected is not None and expected.isdigit() and \
            copied != int(expected):
        raise DownloadError(download_failed(
            url, f'the connection closed after {copied} of {expected} '
            'bytes', target))


def _reason(err: BaseException) -> str:
    """Why a download failed, in a few words."""
    if isinstance(err, urllib.error.HTTPError):
        return f'HTTP {err.code} {err.reason}'
    cause = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(cause, (socket.timeout, TimeoutError)):
        return f'no data for {TIMEOUT_S:g} s'
    if isinstance(cause, BaseException):
        text = str(cause)
        return f'{type(cause).__name__}: {text}' if text else \
            type(cause).__name__
    return str(cause)


def download_failed(url: str, reason: str, target: str) -> str:
    """The one paragraph a failed download is reported with."""
    name = osp.basename(target)
    return (f'could not download {url} ({reason}). To do without the '
            f'network here, download the file where you can (e.g. '
            f'`curl -L -O {url}`) and give its local path instead of the '
            f'URL, or copy it to {target}, where it is looked for before '
            f'any download ({CACHE_ENV} sets that folder). The published '
            f'SparX files are fetched and converted into checkpoints/ by '
            f'`{FETCH_COMMAND} {name}` (--url-base for a mirror).')


def _unwritable(url: str, folder: str, err: OSError) -> str:
    return (f'cannot download {url} into the cache folder {folder} '
            f'({err.strerror or err}): set {CACHE_ENV} to a writable '
            f'folder, or download the file yourself and give its local '
            f'path instead of the URL.')
