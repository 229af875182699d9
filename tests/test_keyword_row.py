"""``keyword_row``: a DICOM JSON dataset as keyword -> plain value."""

from __future__ import annotations

from typing import Any

import pytest

from metastore.keywords import keyword_row


@pytest.mark.parametrize(
    ("element", "value"),
    [
        ({"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}, "Doe^Jane"),
        (
            {
                "vr": "PN",
                "Value": [
                    {
                        "Alphabetic": "Yamada^Tarou",
                        "Ideographic": "山田^太郎",
                        "Phonetic": "やまだ^たろう",
                    }
                ],
            },
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
        ),
        # an empty middle group stays, trailing ones go (PS3.5 6.2)
        (
            {"vr": "PN", "Value": [{"Alphabetic": "A^B", "Phonetic": "a^b"}]},
            "A^B==a^b",
        ),
        ({"vr": "PN", "Value": [{"Ideographic": "山田"}]}, "=山田"),
        ({"vr": "PN", "Value": [{"Alphabetic": "A"}, {"Alphabetic": "B"}]}, ["A", "B"]),
        ({"vr": "PN", "Value": [{}]}, None),
        ({"vr": "DS", "Value": [2.5]}, 2.5),
        ({"vr": "DS", "Value": ["2.5", " 3 "]}, [2.5, 3]),
        ({"vr": "IS", "Value": ["12"]}, 12),
        ({"vr": "IS", "Value": [1, 2, 3]}, [1, 2, 3]),
        ({"vr": "DS", "Value": ["junk"]}, "junk"),
        ({"vr": "US", "Value": [512]}, 512),
        ({"vr": "FD", "Value": [0.5, 1.5]}, [0.5, 1.5]),
        ({"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]}, ["ORIGINAL", "PRIMARY"]),
        ({"vr": "LO", "Value": ["x"]}, "x"),
        ({"vr": "LO"}, None),
        ({"vr": "LO", "Value": []}, None),
        ({"vr": "OB", "BulkDataURI": "bulk/1"}, "bulk/1"),
        ({"vr": "OB", "InlineBinary": "AAE="}, "AAE="),
        ({"vr": "SQ"}, []),
        (
            {
                "vr": "SQ",
                "Value": [
                    {"00081150": {"vr": "UI", "Value": ["1.2"]}},
                    {"00081150": {"vr": "UI", "Value": ["1.3"]}},
                ],
            },
            [{"ReferencedSOPClassUID": "1.2"}, {"ReferencedSOPClassUID": "1.3"}],
        ),
    ],
)
def test_values(element: dict[str, Any], value: Any) -> None:
    """Each VR's values: PN strings, numbers, scalars or lists, None if empty."""
    assert keyword_row({"00100010": element}) == {"PatientName": value}


def test_keys_and_nesting() -> None:
    """Keywords for standard tags; private and unknown tags keep their tag;
    a sequence in a sequence is converted all the way down."""
    row = keyword_row(
        {
            "00100020": {"vr": "LO", "Value": ["P1"]},
            "00291010": {"vr": "OB", "InlineBinary": "AA=="},
            "00091001": {"vr": "LO", "Value": ["private"]},
            "00400275": {
                "vr": "SQ",
                "Value": [
                    {
                        "00400008": {
                            "vr": "SQ",
                            "Value": [{"00080100": {"vr": "SH", "Value": ["X"]}}],
                        }
                    }
                ],
            },
        }
    )
    assert row == {
        "PatientID": "P1",
        "00291010": "AA==",
        "00091001": "private",
        "RequestAttributesSequence": [
            {"ScheduledProtocolCodeSequence": [{"CodeValue": "X"}]}
        ],
    }
    assert list(row) == [
        "PatientID",
        "00291010",
        "00091001",
        "RequestAttributesSequence",
    ]
