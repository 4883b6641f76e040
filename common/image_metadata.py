"""What an image's own metadata says about where it came from: XMP, generator traces, camera EXIF.

Read with Pillow from the file's header and metadata blocks (opening an image reads no pixel):
the XMP packet's IPTC `DigitalSourceType`, the text chunks and EXIF fields that image generators
leave behind, and the camera's EXIF `Make`/`Model`. Nothing here is signed: anyone can write
or strip any of it (docs/provenance.md says what each field does and does not prove).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import xml.etree.ElementTree as ElementTree  # nosec B405 (no DTD is parsed: _parse_xmp)
from dataclasses import dataclass

from PIL import ExifTags, Image

from common.image import JpegLayout

__all__ = ["KNOWN_GENERATORS", "EmbeddedMetadata", "read_metadata"]

IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
XMP_NS = "http://ns.adobe.com/xap/1.0/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# Names in EXIF `Software` or XMP `CreatorTool` that only image generators write (whole words,
# any case). Editors (Photoshop, GIMP, Lightroom) are not here: editing is not generating.
KNOWN_GENERATORS = re.compile(
    r"\b(stable diffusion|comfyui|novelai|invokeai|midjourney|dall[-·]?e|adobe firefly|"
    r"imagen|ideogram|leonardo\.ai|fooocus|automatic1111|draw things|dreamstudio)\b",
    re.IGNORECASE,
)
_MAX_XMP_BYTES = 1024 * 1024  # larger packets are not read (a JPEG's XMP block holds 64 KB)
_MAX_TEXT = 200  # characters kept of any value taken from the file
_APP1 = 0xE1  # a JPEG's EXIF and XMP segments
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)  # Pillow's "cannot read"


@dataclass(frozen=True)
class EmbeddedMetadata:
    """The contract's `provenance.metadata`: unsigned claims found in the file."""

    digital_source_type: str | None = None  # XMP Iptc4xmpExt:DigitalSourceType (an IPTC URI)
    generator: str | None = None  # a known image generator's trace, by name
    camera: str | None = None  # EXIF Make and Model

    def to_dict(self) -> dict[str, str | None]:
        return {
            "digital_source_type": self.digital_source_type,
            "generator": self.generator,
            "camera": self.camera,
        }


def read_metadata(data: bytes, layout: JpegLayout | None = None) -> EmbeddedMetadata:
    """The metadata claims of a JPEG, PNG or WebP file; empty for anything Pillow cannot open.

    `layout`: the JPEG's `common.image.jpeg_layout`, when the caller has walked its markers.
    A JPEG's claims are all in APP1 segments (EXIF, XMP), so one without any is not opened.
    """
    if layout is not None and _APP1 not in layout.markers:
        return EmbeddedMetadata()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: no pixel is decoded here
            with Image.open(io.BytesIO(data)) as image:
                info = dict(image.info)
        exif = Image.Exif()  # not image.getexif(): for a PNG without eXIf, it decodes the pixels
        if isinstance(info.get("exif"), bytes):
            exif.load(info["exif"])
        exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
    except (*_READ_ERRORS, Image.DecompressionBombError):
        return EmbeddedMetadata()
    xmp = _parse_xmp(info.get("xmp"))
    return EmbeddedMetadata(
        digital_source_type=_digital_source_type(xmp),
        generator=_generator(info, exif, exif_ifd, xmp),
        camera=_camera(exif),
    )


def _generator(
    info: dict, exif: Image.Exif, exif_ifd: dict, xmp: ElementTree.Element | None
) -> str | None:
    """The first trace found: generator text chunks, then EXIF Software, the web UI's EXIF
    UserComment, and XMP CreatorTool."""
    text = {key: value for key, value in info.items() if isinstance(value, str)}
    if "Steps: " in text.get("parameters", ""):  # AUTOMATIC1111, Forge, SD.Next (PNG)
        return "Stable Diffusion web UI"
    if '"class_type"' in text.get("prompt", "") or '"nodes"' in text.get("workflow", ""):
        return "ComfyUI"
    if {"invokeai_metadata", "invokeai_graph", "sd-metadata", "Dream"} & text.keys():
        return "InvokeAI"
    if "fooocus_scheme" in text:
        return "Fooocus"
    for claimed in (text.get("Software"), exif.get(ExifTags.Base.Software)):
        if isinstance(claimed, str) and KNOWN_GENERATORS.search(claimed):
            return _clean(claimed)
    comment = exif_ifd.get(ExifTags.Base.UserComment)  # the web UI's parameters in JPEG/WebP
    if isinstance(comment, bytes):  # an 8-byte character code, then the text
        encoding = "utf-16-be" if comment[:8] == b"UNICODE\0" else "latin-1"
        comment = comment[8:].decode(encoding, "ignore")
    if isinstance(comment, str) and "Steps: " in comment and "Sampler: " in comment:
        return "Stable Diffusion web UI"
    tool = _xmp_value(xmp, XMP_NS, "CreatorTool")
    if tool and KNOWN_GENERATORS.search(tool):
        return _clean(tool)
    return None


def _camera(exif: Image.Exif) -> str | None:
    make = _clean(exif.get(ExifTags.Base.Make))
    model = _clean(exif.get(ExifTags.Base.Model))
    if make and model and model.lower().startswith(make.lower()):
        return model  # "Canon" + "Canon EOS R5"
    return " ".join(part for part in (make, model) if part) or None


def _digital_source_type(xmp: ElementTree.Element | None) -> str | None:
    return _xmp_value(xmp, IPTC_EXT_NS, "DigitalSourceType")


def _parse_xmp(packet: object) -> ElementTree.Element | None:
    if isinstance(packet, str):
        packet = packet.encode("utf-8", "ignore")
    if not isinstance(packet, bytes) or len(packet) > _MAX_XMP_BYTES:
        return None
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:  # XMP has no DTD: no entity expansion
        return None
    start = packet.find(b"<")
    try:
        return ElementTree.fromstring(packet[start:].rstrip(b"\0 \r\n\t"))  # noqa: S314  # nosec B314
    except ElementTree.ParseError:
        return None


def _xmp_value(xmp: ElementTree.Element | None, namespace: str, name: str) -> str | None:
    """A simple XMP property in any of RDF's spellings: an attribute of rdf:Description,
    an element's text, or an element's rdf:resource."""
    if xmp is None:
        return None
    tag = f"{{{namespace}}}{name}"
    for element in xmp.iter():
        if tag in element.attrib:
            return _clean(element.attrib[tag])
        if element.tag == tag:
            return _clean(element.get(f"{{{RDF_NS}}}resource") or "".join(element.itertext()))
    return None


def _clean(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "ignore")
    if not isinstance(value, str):
        return None
    return value.replace("\0", "").strip()[:_MAX_TEXT] or None
