"""Where an upload says it came from, read from its bytes before any pixel is decoded.

`read_provenance` gives the contract's `provenance`: the C2PA manifest (validated against the
configured trust anchors, in a child process bounded in time and memory), the unsigned metadata
(XMP `DigitalSourceType`, generator traces, camera EXIF), and what they `declared` together.
`verdict_for` combines that with the classifier's label. docs/provenance.md says what each
signal does and does not prove.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.c2pa_reader import ManifestReader, Validation
from common.image import JpegLayout, UnsupportedImageFormat, sniff_format
from common.image_metadata import EmbeddedMetadata, read_metadata
from common.rules import AI_GENERATED, Label

__all__ = [
    "AI_SOURCE_TYPES",
    "CAMERA_SOURCE_TYPES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT_S",
    "ContentCredentials",
    "Declared",
    "EmbeddedMetadata",
    "ManifestReader",
    "Provenance",
    "Validation",
    "VerdictSource",
    "declared_source",
    "load_trust_anchors",
    "read_provenance",
    "verdict_for",
]

# IPTC Digital Source Type terms (http://cv.iptc.org/newscodes/digitalsourcetype/<term>).
AI_SOURCE_TYPES = frozenset(
    {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "algorithmicMedia"}
)
CAMERA_SOURCE_TYPES = frozenset({"digitalCapture"})  # counted only from a trusted manifest
DEFAULT_TIMEOUT_S = 2.0  # for one C2PA read; past it the manifest is `invalid`
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # the HTTP contract's limit for one file
MAX_TRUST_ANCHORS_BYTES = 1024 * 1024  # a PEM bundle of roots is a few KB
# The JUMBF description box's type of a C2PA manifest store: every embedded manifest holds it.
_C2PA_STORE_UUID = bytes.fromhex("6332706100110010800000aa00389b71")
_APP11 = 0xEB  # the JPEG segments a manifest is embedded in
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}

Declared = Literal["ai_generated", "camera"]
VerdictSource = Literal["classifier", "provenance"]


@dataclass(frozen=True)
class ContentCredentials:
    """The contract's `provenance.c2pa`: the active manifest and whether it holds."""

    validation: Validation  # trusted | untrusted | invalid
    # An IPTC URI: an AI type declared by its actions, else by an ingredient's manifest (an
    # edit of a generated picture), else the type its actions declare.
    digital_source_type: str | None = None
    generator: str | None = None  # the claim generator
    signer: str | None = None  # the signing certificate's organisation
    reason: str | None = None  # why not trusted (failure codes, a timeout); not in the contract

    def to_dict(self) -> dict[str, str | None]:
        return {
            "validation": self.validation,
            "digital_source_type": self.digital_source_type,
            "generator": self.generator,
            "signer": self.signer,
        }


@dataclass(frozen=True)
class Provenance:
    """The contract's `provenance` object; `to_dict()` is its JSON."""

    c2pa: ContentCredentials | None = None  # None: the file carries no manifest
    metadata: EmbeddedMetadata = field(default_factory=EmbeddedMetadata)
    declared: Declared | None = None

    def to_dict(self) -> dict:
        return {
            "c2pa": None if self.c2pa is None else self.c2pa.to_dict(),
            "metadata": self.metadata.to_dict(),
            "declared": self.declared,
        }


def read_provenance(
    data: bytes,
    *,
    trust_anchors_pem: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    reader: ManifestReader | None = None,
    layout: JpegLayout | None = None,
) -> Provenance:
    """The provenance of an upload's bytes. Never raises for any content: a manifest that
    cannot be read, is cut short, overruns `timeout_s` or the reader's memory is `invalid`.

    A file over `max_bytes` is not read at all (the HTTP layer refuses it first). `reader`
    holds the child processes; without one, a shared default is started on first use.
    `layout`: the JPEG's `common.image.jpeg_layout`, when the caller has walked its markers
    (the decode does): the segments it lists say where a manifest or a claim can be, so the
    bytes are not searched again for them.
    """
    if len(data) > max_bytes:
        too_big = ContentCredentials("invalid", reason=f"over {max_bytes} bytes: not read")
        return Provenance(c2pa=too_big if _C2PA_STORE_UUID in data else None)
    credentials = None
    if _may_embed_manifest(data, layout):
        credentials = _read_credentials(data, trust_anchors_pem, timeout_s, reader or _shared())
    metadata = read_metadata(data, layout)
    return Provenance(credentials, metadata, declared_source(credentials, metadata))


def declared_source(c2pa: ContentCredentials | None, metadata: EmbeddedMetadata) -> Declared | None:
    """`ai_generated` for any readable AI declaration (a manifest's, whatever its validation, or
    XMP's) or a known generator's trace; `camera` only for a trusted manifest declaring a
    capture; otherwise None. Forging a confession gains nothing; claiming a camera does."""
    declared_types = [metadata.digital_source_type]
    if c2pa is not None:
        declared_types.append(c2pa.digital_source_type)
    if metadata.generator or any(_term(t) in AI_SOURCE_TYPES for t in declared_types):
        return "ai_generated"
    trusted = c2pa is not None and c2pa.validation == "trusted"
    if trusted and _term(c2pa.digital_source_type) in CAMERA_SOURCE_TYPES:
        return "camera"
    return None


def verdict_for(prediction: Label, provenance: Provenance) -> tuple[Label, VerdictSource]:
    """The combined decision and what made it.

    An `ai_generated` declaration overrides a classifier that said `real` (`provenance`).
    Everything else is the classifier's answer (`classifier`), including a trusted `camera`
    declaration when the classifier says `ai_generated`: a signed capture proves which device
    signed the bytes, not that the scene in front of it was real (a photo of a screen showing a
    generated picture is a genuine capture), so the answer shows both and lets the client choose.
    """
    if provenance.declared == "ai_generated" and prediction != AI_GENERATED:
        return AI_GENERATED, "provenance"
    return prediction, "classifier"


def load_trust_anchors(path: str | Path | None) -> str | None:
    """The PEM text of the trust anchors in the file at `path` (C2PA_TRUST_ANCHORS), or None
    without a path. A file that is missing, too large or holds no certificate is a ValueError
    naming the path: a configured trust list that silently trusts nothing would hide a mistake."""
    if path is None or not str(path).strip():
        return None
    from cryptography import x509  # c2pa-python's own dependency; only needed here

    file = Path(path)
    try:
        if file.stat().st_size > MAX_TRUST_ANCHORS_BYTES:
            raise ValueError(f"C2PA_TRUST_ANCHORS: {file} is over {MAX_TRUST_ANCHORS_BYTES} bytes")
        pem = file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"C2PA_TRUST_ANCHORS: cannot read {file}: {error}") from None
    try:
        x509.load_pem_x509_certificates(pem.encode("ascii"))
    except ValueError:
        raise ValueError(f"C2PA_TRUST_ANCHORS: {file} holds no PEM certificate") from None
    return pem


def _read_credentials(
    data: bytes, anchors: str | None, timeout_s: float, reader: ManifestReader
) -> ContentCredentials | None:
    try:
        mime = _MIME[sniff_format(data)]
    except UnsupportedImageFormat:
        return None
    reading = reader.read(data, mime=mime, trust_anchors_pem=anchors, timeout_s=timeout_s)
    if reading is None:
        return None
    own, ingredients = reading.digital_source_types, reading.ingredient_source_types
    ai = [t for t in own + ingredients if _term(t) in AI_SOURCE_TYPES]
    return ContentCredentials(
        validation=reading.validation,
        digital_source_type=(ai or list(own) or [None])[0],
        generator=reading.generator,
        signer=reading.signer,
        reason=reading.reason,
    )


def _may_embed_manifest(data: bytes, layout: JpegLayout | None) -> bool:
    """Whether the bytes may embed a C2PA manifest, so that the library is worth starting.
    A JPEG embeds one in APP11 segments (the C2PA specification's JUMBF embedding), so a JPEG
    whose whole walk met none holds none; otherwise, whether the manifest store's UUID is in
    the bytes at all (a search of every byte: about 40 us per 200 KB here, the GIL held)."""
    if layout is not None and layout.complete:
        return _APP11 in layout.markers and _C2PA_STORE_UUID in data
    return _C2PA_STORE_UUID in data


def _term(source_type: str | None) -> str | None:
    """The IPTC term of a digital source type URI (`…/digitalsourcetype/digitalCapture`)."""
    return source_type.rstrip("/").rsplit("/", 1)[-1] if source_type else None


@functools.cache
def _shared() -> ManifestReader:
    return ManifestReader()
