"""The digest of the mapping's answers over the fixture corpus.

``metastore.modules.MAPPING_VERSION`` names the mapping whose answers an
instance's stored modules hold.  It must move whenever an answer changes,
and only then.  :func:`corpus_digest` makes that checkable: every instance
of the oracle fixture cases (``tests/fixtures/oracle/cases_*.json``) goes
through the indexer's own path (``metastore.index.extract.build_instance``:
which frames are images, every module of each), and the answers are
written as exact JSON (int and float told apart, NaN kept, keys sorted as
the store keeps them) into one SHA-256.  ``tests/fixtures/mapping_version.json``
records ``{version: digest}``; ``tests/test_mapping_version.py`` compares,
and ``scripts/mapping_digest.py --update`` records a new version's digest.

Only the standard library and metastore; no Node, no database.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from oracle_fixtures import load_cases

from metastore.errors import InvalidImageIdError, MetastoreError
from metastore.imageid import ImageId, parse_image_id, wadors_image_id
from metastore.index.extract import build_instance
from metastore.records import Source

#: The committed ``{MAPPING_VERSION: corpus digest}`` of every version.
RECORD = Path(__file__).parent / "fixtures" / "mapping_version.json"
#: The case sets of the corpus, in the order they are digested.
CASE_SETS = ("extra", "fuzz", "pydicom_testdata", "synthetic")
#: Where every corpus instance "was read from" (the answers ignore it).
_SOURCE = Source("mapping-corpus", 0, 0)
#: The DICOMweb root of the instances whose case imageId does not parse
#: (some fuzz cases): they are named by their UIDs, as the indexer would.
_ROOT = "https://mapping-corpus/dicomweb"


def _exact(value: Any) -> Any:
    """What plain JSON cannot say exactly, tagged (bytes, tuples stay lists)."""
    return {"$type": type(value).__name__, "repr": repr(value)}


def _text(value: Any) -> str:
    """``value`` as exact JSON: ``800`` is not ``800.0``, NaN stays NaN."""
    return json.dumps(
        value,
        sort_keys=True,
        allow_nan=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=_exact,
    )


def instance_answers(metadata: dict[str, Any], image_id: str) -> dict[str, Any]:
    """What the indexer would store for one instance named by ``image_id``.

    Its frame count, and per image its frame, imageId and every module; or
    ``{"invalid": True}`` when the indexer refuses the instance (the reason
    is prose, not an answer).
    """
    base = _base(image_id)

    def name(study: str, series: str, sop: str) -> ImageId:
        if base is not None:
            return base
        return parse_image_id(wadors_image_id(_ROOT, study, series, sop, 1))

    try:
        record = build_instance(metadata, _SOURCE, name)
    except MetastoreError:
        return {"invalid": True}
    return {
        "numberOfFrames": record.number_of_frames,
        "images": [
            [image.frame, image.image_id, dict(image.modules)]
            for image in record.images
        ],
    }


def _base(image_id: str) -> ImageId | None:
    """The case's imageId parsed, or ``None`` if the parser refuses it."""
    try:
        return parse_image_id(image_id)
    except InvalidImageIdError:
        return None


def corpus_digest() -> str:
    """SHA-256 (hex) of the answers for every instance of the corpus.

    An instance is named by its first case's imageId; cases repeating an
    instance (other frames of it) add nothing.
    """
    digest = hashlib.sha256()
    for set_name in CASE_SETS:
        seen: set[tuple[str, str]] = set()
        for case in load_cases(set_name):
            image_id = case["imageId"]
            base = _base(image_id)
            name = image_id if base is None else base.base
            key = (name, _text(case["metadata"]))
            if key in seen:
                continue
            seen.add(key)
            answers = instance_answers(case["metadata"], image_id)
            line = _text([set_name, key[0], answers])
            digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def recorded(path: Path = RECORD) -> dict[str, str]:
    """The committed ``{version: digest}``."""
    with path.open(encoding="utf-8") as f:
        record: dict[str, str] = json.load(f)
    return record
