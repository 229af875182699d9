"""Benchmark `metastore serve` (issue 12): ratios measured in one run.

1. Series metadata of a 500-instance series: metastore serve vs Orthanc with
   its DICOMweb plugin (Debian packages `orthanc`, `orthanc-dicomweb`,
   started here on loopback with the same files), warm (median of repeats)
   and cold (first request after each server starts).  Target: <= 0.5x.
2. QIDO `/studies?PatientName=...&fuzzymatching=true` on a store of 10,000
   studies: median (target < 20 ms), then 8 clients in a bounded loop:
   errors (target 0) and requests per second.  Needs the query layer of
   issue 11 (Store.query with filters); skipped with a note without it.
3. Frames: bytes per second of frame 1 of each of the 500 instances served
   over HTTP vs read with pydicom in a loop.  Target: >= 0.8x.

Usage: .venv/bin/python scripts/bench_serve.py [--instances 500] [--studies 10000]
       [--frames-only]
Every server runs on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import inspect
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

ROOT = "1.2.826.0.1.3680043.10.1139"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _dataset(
    study: str,
    series: str,
    sop: str,
    number: int,
    patient: str,
    pixels: bool,
    size: int = 256,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CT, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID = patient, patient.replace("^", "")
    ds.StudyDate, ds.StudyTime = "20200101", "101010"
    ds.StudyDescription, ds.SeriesDescription = "Bench", "Axial"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.ImagePositionPatient = [0, 0, number * 1.25]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = "1.25"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    if pixels:
        rng = np.random.default_rng(number)
        ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    return ds


def _serve(db_url: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "metastore", "serve", "--port", "0", "--db", db_url],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        match = re.search(r"at http://127\.0\.0\.1:(\d+)/dicomweb", line)
        if match:
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, int(match.group(1))
    raise RuntimeError("metastore serve did not start")


def _get(
    port: int,
    path: str,
    accept: str | None = None,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    own = connection is None
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path, headers={"Accept": accept} if accept else {})
    response = conn.getresponse()
    body = response.read()
    if own:
        conn.close()
    return response.status, body


def _timed(port: int, path: str, accept: str | None = None) -> float:
    start = time.perf_counter()
    status, body = _get(port, path, accept)
    elapsed = time.perf_counter() - start
    if status != 200:
        raise RuntimeError(f"{path}: {status} {body[:200]!r}")
    return elapsed


class Orthanc:
    """Orthanc with the DICOMweb plugin on loopback, own storage folder."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        config = {
            "Name": "bench",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "HttpPort": port,
            "DicomPort": port + 1,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "Plugins": ["/usr/share/orthanc/plugins"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["Orthanc", str(self.folder / "orthanc.json")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/system", timeout=2
                )
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(60)
            self.process = None

    def upload(self, files: list[Path]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        for path in files:
            conn.request("POST", "/instances", body=path.read_bytes())
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"Orthanc refused {path}: {response.status}")
        conn.close()


def bench_metadata_and_frames(
    work: Path, count: int, repeats: int, frames_only: bool = False
) -> None:
    from metastore import index_paths
    from metastore.store import Store

    folder = work / "series"
    folder.mkdir()
    study, series = f"{ROOT}.1", f"{ROOT}.1.1"
    files = []
    for n in range(1, count + 1):
        path = folder / f"{n:04d}.dcm"
        _dataset(study, series, f"{series}.{n}", n, "Bench^Series", True).save_as(
            path, enforce_file_format=True
        )
        files.append(path)
    url = f"sqlite:///{work / 'series.sqlite'}"
    with Store(url) as store:
        index_paths(store, [folder], workers=1)
    path = f"/dicomweb/studies/{study}/series/{series}/metadata"
    if frames_only:
        process, port = _serve(url)
        try:
            _frames_ratio(port, study, series, files)
        finally:
            process.terminate()
            process.wait(30)
        return

    cold, warm = [], []
    for _ in range(3):  # cold: the first request after each start
        process, port = _serve(url)
        try:
            cold.append(_timed(port, path))
            warm += [_timed(port, path) for _ in range(repeats)]
        finally:
            process.terminate()
            process.wait(30)
    ours = (statistics.median(cold), statistics.median(warm))
    print(
        f"series metadata, {count} instances, metastore serve: cold "
        f"{ours[0] * 1000:.0f} ms, warm {ours[1] * 1000:.1f} ms (median)"
    )
    process, port = _serve(url)
    try:
        _frames_ratio(port, study, series, files)
    finally:
        process.terminate()
        process.wait(30)

    if (
        shutil.which("Orthanc") is None
        or not Path("/usr/share/orthanc/plugins").is_dir()
    ):
        print(
            "Orthanc: not installed (apt-get install orthanc orthanc-dicomweb); "
            "no ratio"
        )
        return
    (work / "orthanc").mkdir()
    orthanc = Orthanc(work / "orthanc", 18042)
    orthanc.start()
    try:
        orthanc.upload(files)
    finally:
        orthanc.stop()
    opath = f"/dicom-web/studies/{study}/series/{series}/metadata"
    o_cold, o_warm = [], []
    for _ in range(3):
        orthanc.start()
        try:
            o_cold.append(_timed(orthanc.port, opath, "application/dicom+json"))
            o_warm += [
                _timed(orthanc.port, opath, "application/dicom+json")
                for _ in range(repeats)
            ]
        finally:
            orthanc.stop()
    theirs = (statistics.median(o_cold), statistics.median(o_warm))
    print(
        f"series metadata, Orthanc: cold {theirs[0] * 1000:.0f} ms, warm "
        f"{theirs[1] * 1000:.1f} ms"
    )
    print(
        f"ratio metastore/Orthanc: cold {ours[0] / theirs[0]:.2f}x, warm "
        f"{ours[1] / theirs[1]:.2f}x (target <= 0.5x)"
    )


class _RawClient:
    """A minimal keep-alive HTTP/1.1 GET client for the frames ratio.

    ``http.client`` spends ~0.4 ms of CPU per 131 kB answer (its header
    parsing goes through the email package), more than the whole pydicom
    read it is compared with; this one reads the status line, the
    Content-Length and the body, so the ratio measures the server.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def get(self, path: str, accept: str) -> tuple[int, bytes]:
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if match is None:
            raise RuntimeError(f"{path}: no Content-Length")
        length = int(match.group(1))
        chunks, have = [self.buffer], len(self.buffer)
        while have < length:
            chunk = self.sock.recv(max(length - have, 65536))
            if not chunk:
                raise RuntimeError(f"{path}: connection closed")
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        body, self.buffer = data[:length], data[length:]
        return status, body

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def _frames_rate(port: int, study: str, series: str, files: list[Path]) -> float:
    """Frame bytes per second: frame 1 of each file, one request each.

    The bytes counted are each answer's frame (its one part's payload), so
    the two sides of the ratio count the same thing.
    """
    client = _RawClient(port)
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    total = 0
    start = time.perf_counter()
    for n in range(1, len(files) + 1):
        status, body = client.get(
            f"/dicomweb/studies/{study}/series/{series}"
            f"/instances/{series}.{n}/frames/1",
            accept,
        )
        if status != 200:
            raise RuntimeError(f"frame {n}: {status}")
        frame = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
        total += len(frame)
        if n == 1 and frame != pydicom.dcmread(files[0]).PixelData:
            raise RuntimeError("the served frame is not the file's pixel data")
    elapsed = time.perf_counter() - start
    client.close()
    return total / elapsed


def _pydicom_rate(files: list[Path]) -> float:
    """The baseline: the same frames (single-frame files' pixel data, Explicit
    VR Little Endian as stored, as served) read with pydicom in a loop."""
    total = 0
    start = time.perf_counter()
    for path in files:
        total += len(pydicom.dcmread(path).PixelData)
    return total / (time.perf_counter() - start)


def _frames_ratio(port: int, study: str, series: str, files: list[Path]) -> None:
    """Served vs pydicom, in alternating rounds (warm page cache for both)."""
    _frames_rate(port, study, series, files)  # the files into the page cache
    served, loop = [], []
    for _ in range(5):
        served.append(_frames_rate(port, study, series, files))
        loop.append(_pydicom_rate(files))
    ratios = sorted(a / b for a, b in zip(served, loop, strict=True))
    print(
        f"frames, {len(files)} x frame 1 (one request each): served "
        f"{statistics.median(served) / 1e6:.0f} MB/s, pydicom loop "
        f"{statistics.median(loop) / 1e6:.0f} MB/s (medians of 5 alternating "
        f"rounds): {statistics.median(ratios):.2f}x, rounds "
        f"{ratios[0]:.2f}-{ratios[-1]:.2f}x (target >= 0.8x)"
    )


def bench_qido(work: Path, studies: int, clients: int, per_client: int) -> None:
    from metastore import index_paths
    from metastore.store import Store

    if "filters" not in inspect.signature(Store.query).parameters:
        print(
            "QIDO: skipped, the query layer of issue 11 (Store.query with "
            "filters) is not in this tree"
        )
        return
    folder = work / "studies"
    folder.mkdir()
    names = ["Gómez^José", "Doe^Jane", "Smith^John", "Yamada^Taro", "Müller^Anna"]
    for n in range(studies):
        name = f"{names[n % len(names)]}{n}"
        study = f"{ROOT}.2.{n}"
        _dataset(study, study + ".1", study + ".1.1", 1, name, False).save_as(
            folder / f"{n:05d}.dcm", enforce_file_format=True
        )
    url = f"sqlite:///{work / 'studies.sqlite'}"
    with Store(url) as store:
        index_paths(store, [folder])
    process, port = _serve(url)
    try:
        path = "/dicomweb/studies?PatientName=gomez*&fuzzymatching=true&limit=101"
        _timed(port, path)
        times = [_timed(port, path) for _ in range(50)]
        print(
            f"QIDO on {studies} studies: median {statistics.median(times) * 1000:.1f}"
            " ms (target < 20 ms)"
        )
        errors: list[str] = []
        done = [0]
        lock = threading.Lock()

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for _ in range(per_client):
                try:
                    status, _ = _get(port, path, None, conn)
                except OSError as exc:
                    status = 0
                    errors.append(str(exc))
                with lock:
                    done[0] += 1
                    if status != 200:
                        errors.append(str(status))
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        print(
            f"QIDO, {clients} clients x {per_client}: {done[0] / elapsed:.0f} "
            f"requests/s, {len(errors)} errors (target 0)"
        )
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--frames-only", action="store_true", help="only the frames ratio"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        bench_metadata_and_frames(work, args.instances, args.repeats, args.frames_only)
        if not args.frames_only:
            bench_qido(work, args.studies, 8, 50)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
