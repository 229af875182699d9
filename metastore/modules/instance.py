"""The ``instance`` module: Cornerstone's ``getNormalized`` over twelve modules.

Owns ``instance``: the union of multiframe, general series, patient study,
image pixel, modality LUT, VOI LUT, SOP common, PET isotope, overlay plane,
transfer syntax, PET series and PET image modules, keys renamed UpperCamel.
Keys holding ``None`` are kept and a sub-module that raises is skipped, as
Cornerstone 5.x does.  Imports only sibling modules, ``metastore.modules.jsvalues``,
``metastore.modules.frames``, ``metastore.errors``, ``metastore.moduletypes`` and
``metastore.types``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

from metastore.errors import DicomError
from metastore.modules.camel import to_upper_camel_tag
from metastore.modules.frames import Frame
from metastore.modules.jsvalues import js_truthy
from metastore.modules.lut import modality_lut_module, voi_lut_module
from metastore.modules.multiframe import multiframe_module
from metastore.modules.overlay import overlay_plane_module
from metastore.modules.patient import patient_study_module
from metastore.modules.pet import (
    pet_image_module,
    pet_isotope_module,
    pet_series_module,
)
from metastore.modules.pixel import image_pixel_module
from metastore.modules.sop import sop_common_module, transfer_syntax_module
from metastore.modules.study import general_series_module
from metastore.moduletypes import InstanceModule
from metastore.types import ModuleValue

#: Cornerstone's ``instanceModuleNames``, in merge order (later keys win).
INSTANCE_MODULE_NAMES: tuple[
    tuple[str, Callable[[Frame, str], Mapping[str, object] | None]], ...
] = (
    ("multiframeModule", multiframe_module),
    ("generalSeriesModule", general_series_module),
    ("patientStudyModule", patient_study_module),
    ("imagePixelModule", image_pixel_module),
    ("modalityLutModule", modality_lut_module),
    ("voiLutModule", voi_lut_module),
    ("sopCommonModule", sop_common_module),
    ("petIsotopeModule", pet_isotope_module),
    ("overlayPlaneModule", overlay_plane_module),
    ("transferSyntax", transfer_syntax_module),
    ("petSeriesModule", pet_series_module),
    ("petImageModule", pet_image_module),
)


def instance_module(
    frame: Frame, image_id: str, computed: Mapping[str, ModuleValue] | None = None
) -> InstanceModule:
    """``instance``: the normalized union of twelve modules.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about.
        computed: Module values already computed for this frame (reused
            instead of building them again); a type present here with
            ``None`` counts as "no answer".

    Returns:
        One dict with UpperCamel keys (``SOPClassUID``, ``VOILUTFunction``,
        ``Overlays``, ``RadiopharmaceuticalInfo``...).  Overlays are the real
        ones (divergence 3).
    """
    result: dict[str, ModuleValue] = {}
    for name, build in INSTANCE_MODULE_NAMES:
        if computed is not None and name in computed:
            value = computed[name]
        else:
            try:
                value = build(frame, image_id)
            except DicomError:
                # Cornerstone quirk: getNormalized logs and skips a failing module
                continue
        if js_truthy(value):
            for key, item in value.items():
                result[to_upper_camel_tag(key)] = item
    # The keys of the twelve modules, renamed (a test checks them)
    return cast("InstanceModule", result)
