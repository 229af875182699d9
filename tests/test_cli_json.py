"""``metastore get`` and ``export`` print numbers as JavaScript's JSON.stringify.

The stored answer is a Python float (``800.0``, ``-0.0``); the command prints
what a browser's ``JSON.stringify(metaData.get(...))`` prints for the same
answer (``800``, ``0``, ``1e+21``), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from dicom_samples import CT, dicom_json, write_json

from metastore.cli import cli
from metastore.store import Store

ROOT = "http://localhost/dicomweb"
CT_IMAGE = (
    f"wadors:{ROOT}/studies/1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    "/series/1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
    "/instances/1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322/frames/1"
)
#: voiLutModule as JSON.stringify writes it for the values written below.
VOI_LUT = (
    '{"voiLUTFunction":null,"windowCenter":[800,0,1e+21,1.5e-7,0.0000015,null],'
    '"windowWidth":[1500]}'
)


def test_get_and_export_print_numbers_as_javascript(
    db_url: str, tmp_path: Path
) -> None:
    """800 not 800.0, -0 as 0, exponents as 1e+21; the Python API keeps floats."""
    instance = dicom_json(CT)
    instance["00281050"] = {
        "vr": "DS",
        "Value": ["800", "-0", "1e21", "1.5e-7", "1.5e-6", "junk"],
    }
    instance["00281051"] = {"vr": "DS", "Value": [1500]}
    write_json(tmp_path / "src" / "ct.json", instance)
    runner = CliRunner()
    indexed = runner.invoke(
        cli, ["index", str(tmp_path / "src"), "--wadors-root", ROOT, "--db", db_url]
    )
    assert indexed.exit_code == 0, indexed.output

    got = runner.invoke(cli, ["get", "voiLutModule", CT_IMAGE, "--db", db_url])
    assert got.exit_code == 0, got.output
    assert got.stdout == VOI_LUT + "\n"

    exported = runner.invoke(
        cli, ["export", "--modules", "voiLutModule", "--db", db_url]
    )
    assert exported.exit_code == 0, exported.output
    assert exported.stdout == (
        f'{{"imageId":"{CT_IMAGE}","modules":{{"voiLutModule":{VOI_LUT}}}}}\n'
    )

    with Store(db_url) as store:
        value = (store.image_modules(CT_IMAGE) or {})["voiLutModule"]
    assert value["windowCenter"][:2] == [800.0, -0.0]
    assert all(type(x) is float for x in value["windowCenter"])
