"""Download and safely extract iNaturalist-12K (``nature_12K.zip``, ~3.6 GB).

A multi-gigabyte download over a flaky connection must resume (HTTP ``Range`` on a ``.part`` file), prove it is
complete before anything trusts it, and never let the archive write outside its folder ("zip slip": absolute
names, ``..`` and symlinks are refused). Without a network it fails within seconds and says how to place the
data by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

INATURALIST_URL = "https://storage.googleapis.com/wandb_datasets/nature_12K.zip"
URL_ENV = "INAT_CNN_DATASET_URL"
_CHUNK = 1 << 20


def default_download_dir() -> Path:
    """Where ``--download`` puts the archive and the extracted dataset unless told otherwise."""
    from core.data.decode_cache import cache_root

    return cache_root() / "inaturalist"


class DownloadError(RuntimeError):
    """The download failed or is incomplete; the message says what to do next."""


def dataset_url() -> str:
    """The archive URL: ``$INAT_CNN_DATASET_URL`` (a mirror, or a local server in tests), else the official one."""
    return os.environ.get(URL_ENV) or INATURALIST_URL


def _manual_help(zip_path: Path, dest_dir: Path, url: str | None = None) -> str:
    return (f"To place the data by hand: download {url or dataset_url()} elsewhere and copy it to {zip_path} "
            f"(then rerun; it is extracted here), or extract it yourself so that "
            f"{dest_dir}/inaturalist_12K/train/<Class>/*.jpg and {dest_dir}/inaturalist_12K/val/<Class>/*.jpg "
            f"exist, and pass that inaturalist_12K folder as --data-dir.")


def _total_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    """Full size of the remote file from a 200 (Content-Length) or 206 (Content-Range) response."""
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")  # "bytes 100-999/1000"
        total = content_range.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": "inat-cnn"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def _transfer(response: http.client.HTTPResponse, part: Path, offset: int, total: int | None, desc: str,
              url: str) -> BaseException | None:
    """Append ``response``'s body to ``part`` (from ``offset``); the exception that cut it short, if any."""
    mode = "ab" if offset else "wb"
    with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                     unit_divisor=1024, desc=desc, disable=None) as bar:
        try:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
        except (http.client.IncompleteRead, OSError) as exc:
            log.warning("transfer of %s interrupted: %s", url, exc)
            return exc
    return None


def _zip_is_whole(path: Path) -> bool:
    """True when ``path`` ends in a zip end-of-central-directory record whose directory lies inside the file.

    A zip's table of contents is at its *end*, so a transfer cut anywhere before the last bytes fails
    this check, while reading only the last ~64 kB (never the gigabytes before them).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            zf.infolist()
        return True
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def fetch(url: str, dest: Path, *, timeout: float = 10.0, sha256: str | None = None, max_resumes: int = 3) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a previous partial download.

    Completeness is proved before ``dest`` exists: by the size the server announced (``Content-Length``
    / ``Content-Range``), else by asking for the bytes after the end (``Range``: a 416 says there are
    none, a 206 sends them and the transfer continues, up to ``max_resumes`` times) and, for a ``.zip``,
    by its end-of-central-directory record. Raises :class:`DownloadError` when the server is
    unreachable, the transfer stops early (the ``.part`` file is kept: call again to resume) or the
    checksum differs (the bad file is deleted).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the .part may already be complete
            total_text = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
            if total_text.isdigit() and int(total_text) == offset:
                return _finish(part, dest, sha256)
            part.unlink()
            raise DownloadError(f"server refused to resume {url} at byte {offset}; the partial file was "
                                "deleted, run again to start over") from exc
        raise DownloadError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"could not reach {url} ({reason}). {_manual_help(dest, dest.parent, url)}") from exc
    with response:
        if offset and response.status != 206:
            log.info("server ignored the Range request: restarting %s from zero", url)
            offset = 0
        total = _total_size(response, offset)
        cut = _transfer(response, part, offset, total, dest.name, url)
    size = part.stat().st_size
    if total is not None:
        if size != total:
            raise DownloadError(f"download of {url} is incomplete: {size} of {total} bytes in {part}; "
                                "run the same command again to resume")
    elif cut is not None:
        raise DownloadError(f"download of {url} was cut after {size} bytes (the server sent no size); the "
                            f"partial file {part} is kept: run the same command again to resume")
    else:
        _prove_unsized_download(url, part, dest, timeout, max_resumes)
    return _finish(part, dest, sha256)


def _prove_unsized_download(url: str, part: Path, dest: Path, timeout: float, max_resumes: int) -> None:
    """The server sent no size and closed the connection: a dropped connection looks the same as the end.

    Ask for the bytes after the end; 416 = complete, 206 = more to come (append, ask again); no answer
    or a server that ignores Range leaves the format check (a ``.zip`` must end in its directory).
    """
    for _ in range(max_resumes + 1):
        size = part.stat().st_size
        try:
            response = _open(url, size, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 416:
                break
            total_text = (exc.headers.get("Content-Range") or "").rpartition("/")[2]  # "bytes */1000"
            if total_text.isdigit() and int(total_text) != size:
                raise DownloadError(f"download of {url} is incomplete: {size} of {total_text} bytes in {part}; "
                                    "run the same command again to resume") from exc
            break  # the server has nothing after our last byte
        except (TimeoutError, urllib.error.URLError, OSError):
            break
        with response:
            if response.status != 206:
                break  # Range ignored: the format check decides
            log.info("server had more of %s after byte %d (the first transfer was cut): continuing", url, size)
            cut = _transfer(response, part, size, _total_size(response, size), dest.name, url)
        if cut is None and part.stat().st_size == size:
            break  # an empty 206: nothing after our last byte
        if cut is not None:
            raise DownloadError(f"download of {url} was cut again after {part.stat().st_size} bytes; the partial "
                                f"file {part} is kept: run the same command again to resume")
    if dest.suffix.lower() == ".zip" and not _zip_is_whole(part):
        raise DownloadError(f"download of {url} ended after {part.stat().st_size} bytes without a zip directory "
                            f"(the server sent no size and the connection dropped); the partial file {part} is "
                            "kept: run the same command again to resume")
    if dest.suffix.lower() != ".zip":
        log.warning("the server sent no size for %s: %d bytes received; pass a sha256 to verify it", url,
                    part.stat().st_size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _finish(part: Path, dest: Path, sha256: str | None) -> Path:
    if sha256 is not None and (got := _sha256(part)) != sha256.lower():
        part.unlink()
        raise DownloadError(f"checksum mismatch for {dest.name}: sha256 {got}, expected {sha256}; the file "
                            "was deleted, run again to download it afresh")
    os.replace(part, dest)
    return dest


def _check_member(info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's relative path, or ValueError when it could escape the destination."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"refusing to extract {info.filename!r}: absolute path in archive")
    if ".." in path.parts:
        raise ValueError(f"refusing to extract {info.filename!r}: '..' would escape the destination")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ValueError(f"refusing to extract {info.filename!r}: symbolic link in archive")
    return path


def safe_extract(zip_path: Path, dest_dir: Path) -> list[Path]:
    """Extract ``zip_path`` into ``dest_dir`` after checking every member; returns the top-level entries.

    All members are checked before anything is written, so a malicious archive writes nothing. macOS
    resource forks (``__MACOSX/``) are not extracted.
    """
    dest_dir = Path(dest_dir)
    with zipfile.ZipFile(zip_path) as zf:
        members = [(info, _check_member(info)) for info in zf.infolist()]
        members = [(i, p) for i, p in members if p.parts and p.parts[0] != "__MACOSX"]
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".extract-"))
        try:
            for info, rel in tqdm(members, desc=f"extracting {Path(zip_path).name}", unit="file", disable=None):
                target = tmp.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            tops = []
            for entry in sorted(tmp.iterdir()):
                final = dest_dir / entry.name
                if final.exists():
                    raise FileExistsError(f"{final} already exists; remove it or extract elsewhere")
                os.replace(entry, final)
                tops.append(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return tops


def find_dataset_root(folder: Path, max_depth: int = 2) -> Path | None:
    """The first folder (breadth-first, up to ``max_depth`` below ``folder``) holding ``train/`` and ``val/``."""
    level = [Path(folder)]
    for _ in range(max_depth + 1):
        for d in level:
            if (d / "train").is_dir() and (d / "val").is_dir():
                return d
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    return None


def download_inaturalist(dest_dir: Path, url: str | None = None, sha256: str | None = None, *,
                         timeout: float = 10.0, keep_zip: bool = True) -> Path:
    """Download (resumably) and extract iNaturalist-12K into ``dest_dir``; returns the dataset root.

    ``url`` defaults to :func:`dataset_url`. Already extracted -> returned at once, nothing is fetched.
    A zip left by an older, cut download (no end-of-central-directory record) is resumed, not trusted.
    """
    url = url or dataset_url()
    dest_dir = Path(dest_dir).expanduser()
    dest_dir.mkdir(parents=True, exist_ok=True)
    existing = find_dataset_root(dest_dir)
    if existing is not None:
        log.info("dataset already present at %s", existing)
        return existing
    zip_path = dest_dir / (PurePosixPath(urllib.request.urlparse(url).path).name or "dataset.zip")
    if zip_path.is_file() and not _zip_is_whole(zip_path):
        part = zip_path.with_name(zip_path.name + ".part")
        log.warning("%s is not a whole zip (cut download?): resuming it from byte %d", zip_path,
                    zip_path.stat().st_size)
        os.replace(zip_path, part)
    if not zip_path.is_file():
        fetch(url, zip_path, timeout=timeout, sha256=sha256)
    elif sha256 is not None and (got := _sha256(zip_path)) != sha256.lower():
        raise DownloadError(f"{zip_path} has sha256 {got}, expected {sha256}; delete it and run again")
    try:
        safe_extract(zip_path, dest_dir)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{zip_path} is not a valid zip ({exc}); delete it and run again") from exc
    root = find_dataset_root(dest_dir)
    if root is None:
        raise DownloadError(f"{zip_path} did not contain a train/ + val/ folder. {_manual_help(zip_path, dest_dir)}")
    if not keep_zip:
        zip_path.unlink()
    log.info("iNaturalist-12K ready at %s", root)
    return root


def resolve_dataset(data_dir: Path | None, download: bool) -> Path | None:
    """The dataset root a script should use, shared by every ``--data-dir``/``--download`` pair.

    Without ``download`` this is ``data_dir`` as given (``None`` means the demo set). With it, the
    archive is fetched into ``data_dir`` or :func:`default_download_dir` and the extracted root is
    returned, so every script downloads to, and later finds, the same place.
    """
    if not download:
        return data_dir
    return download_inaturalist(Path(data_dir) if data_dir is not None else default_download_dir())
