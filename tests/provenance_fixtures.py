"""Real provenance test files: photos signed with C2PA by two throwaway CAs, XMP packets,
generator text chunks, camera EXIF, and hostile variants of them.

`TRUSTED` is the CA a test configures as trust anchor (`trust_anchors_pem()`,
`write_trust_anchors(path)` for C2PA_TRUST_ANCHORS); `UNTRUSTED` is one nobody configured.
`cases(fmt)` gives every contract case with the `provenance` JSON a server answers for it when
TRUSTED is its anchor, so unit tests and HTTP tests check the same fields.
"""

from __future__ import annotations

import datetime
import io
import os
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image, PngImagePlugin

from tests.images import crop, encode

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
AI_MEDIA = IPTC + "trainedAlgorithmicMedia"
CAPTURE = IPTC + "digitalCapture"
TRUSTED = "Trusted Test Camera Co"  # organisation of the trusted CA and its signer
UNTRUSTED = "Unknown Test Signer Ltd"
CAMERA_FIRMWARE = ("Test Camera Firmware", "3.1")  # claim generator of camera-signed files
IMAGE_GENERATOR = ("Test Image Generator", "2.0")  # claim generator of AI-signed files
CAMERA_MAKE, CAMERA_MODEL = "Testcam", "Testcam X100"
SD_PARAMETERS = (
    "studio photo of a leather watch on a marble table\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 96x72, "
    "Model: sd_xl_base_1.0"
)
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
C2PA_STORE_UUID = bytes.fromhex("6332706100110010800000aa00389b71")  # a manifest store's jumd


@dataclass(frozen=True)
class SigningIdentity:
    """A leaf certificate chained to a throwaway root, and its key, in PEM."""

    chain_pem: bytes  # leaf, then root
    key_pem: bytes
    root_pem: str


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        ]
    )


def _key_usage(*, signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signer,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signer,
        crl_sign=not signer,
        encipher_only=False,
        decipher_only=False,
    )


@cache
def identity(organisation: str) -> SigningIdentity:
    """An ES256 root CA and a leaf for C2PA signing (EKU emailProtection), valid for a day."""
    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_valid_before": now - datetime.timedelta(hours=1)}
    valid["not_valid_after"] = now + datetime.timedelta(days=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"{organisation} Root CA", organisation)
    root = (
        x509.CertificateBuilder(subject_name=root_name, issuer_name=root_name, **valid)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signer=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder(
            subject_name=_name(f"{organisation} Signer", organisation),
            issuer_name=root_name,
            **valid,
        )
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signer=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return SigningIdentity(
        chain_pem=leaf.public_bytes(pem) + root.public_bytes(pem),
        key_pem=leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        root_pem=root.public_bytes(pem).decode(),
    )


def trust_anchors_pem() -> str:
    """The PEM a server configures to trust TRUSTED (and only it)."""
    return identity(TRUSTED).root_pem


def write_trust_anchors(path: Path) -> Path:
    """Write the trust-anchor file that C2PA_TRUST_ANCHORS names."""
    path.write_text(trust_anchors_pem(), encoding="ascii")
    return path


def sign(
    data: bytes,
    fmt: str,
    organisation: str,
    source_type: str,
    generator: tuple[str, str],
    extra_actions: tuple[dict, ...] = (),
    thumbnail_bytes: int = 0,
    remote_url: str | None = None,
) -> bytes:
    """`data` with a C2PA manifest signed by `organisation`'s leaf, its `c2pa.created` action
    declaring `source_type`, then `extra_actions`; `thumbnail_bytes` of random bytes as its
    thumbnail make the manifest that large; with `remote_url` the file only names the manifest
    by that URL (not embedded)."""
    created = {"action": "c2pa.created", "digitalSourceType": source_type}
    manifest = _manifest(generator, [created, *extra_actions])
    if thumbnail_bytes:
        manifest["thumbnail"] = {"format": "image/jpeg", "identifier": "thumbnail.jpg"}

    def prepare(builder: c2pa.Builder) -> None:
        if thumbnail_bytes:
            builder.add_resource("thumbnail.jpg", io.BytesIO(os.urandom(thumbnail_bytes)))
        if remote_url:
            builder.set_no_embed()
            builder.set_remote_url(remote_url)

    return _signed(data, fmt, organisation, manifest, prepare)


def sign_edit(parent: bytes, fmt: str, organisation: str, generator: tuple[str, str]) -> bytes:
    """A crop of `parent` signed by `organisation`: a manifest whose actions declare no source
    type, with `parent` (and its own manifest) as its ingredient."""
    opened = {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}
    manifest = _manifest(generator, [opened, {"action": "c2pa.cropped"}])
    ingredient = {"title": f"parent.{fmt.lower()}", "relationship": "parentOf", "label": "parent"}
    with Image.open(io.BytesIO(parent)) as image:
        cropped = encode(image.convert("RGB").crop((0, 0, 80, 60)), fmt)
    return _signed(
        cropped,
        fmt,
        organisation,
        manifest,
        lambda builder: builder.add_ingredient_from_stream(
            ingredient, MIME[fmt], io.BytesIO(parent)
        ),
    )


def _manifest(generator: tuple[str, str], actions: list[dict]) -> dict:
    return {
        "claim_generator_info": [{"name": generator[0], "version": generator[1]}],
        "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
    }


def _signed(data: bytes, fmt: str, organisation: str, manifest: dict, prepare) -> bytes:
    """`data` signed with `manifest` by `organisation`, after `prepare(builder)`."""
    signing = identity(organisation)
    no_thumbnail = c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    signer = c2pa.Signer.from_info(
        c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, signing.chain_pem, signing.key_pem, None)
    )
    with signer, c2pa.Builder(manifest, context=c2pa.Context(no_thumbnail)) as builder:
        prepare(builder)
        signed = io.BytesIO()
        builder.sign(signer, MIME[fmt], io.BytesIO(data), signed)
    return signed.getvalue()


def camera_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = CAMERA_MAKE, CAMERA_MODEL  # Make, Model
    return exif.tobytes()


def photo(fmt: str, index: int = 0, **params) -> bytes:
    """A real photo crop encoded as `fmt` (extra Pillow save parameters: exif=, xmp=, pnginfo=)."""
    return encode(crop(index), fmt, **params)


def camera_photo(fmt: str) -> bytes:
    return photo(fmt, 1, exif=camera_exif())


def xmp_packet(source_type: str, *, as_attribute: bool = True) -> bytes:
    """An XMP packet declaring an IPTC digital source type, in either RDF spelling."""
    ns = 'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
    if as_attribute:
        body = f'<rdf:Description rdf:about="" {ns} Iptc4xmpExt:DigitalSourceType="{source_type}"/>'
    else:
        body = (
            f'<rdf:Description rdf:about="" {ns}><Iptc4xmpExt:DigitalSourceType>{source_type}'
            "</Iptc4xmpExt:DigitalSourceType></rdf:Description>"
        )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f"{body}</rdf:RDF></x:xmpmeta>" + " " * 64 + '<?xpacket end="w"?>'
    ).encode()


def with_xmp(fmt: str, packet: bytes, index: int = 2) -> bytes:
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet.decode())
        return photo(fmt, index, pnginfo=info)
    return photo(fmt, index, xmp=packet)


def png_with_text(**chunks: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    return photo("PNG", 3, pnginfo=info)


def reencoded(data: bytes, fmt: str) -> bytes:
    """What an upload looks like after an editor or a platform re-saved it: the pixels only."""
    with Image.open(io.BytesIO(data)) as image:
        return encode(image.convert("RGB"), fmt)


def tampered(data: bytes, fmt: str) -> bytes:
    """`data` edited after signing, the manifest untouched: a PNG or WebP gets one pixel
    changed (new, valid image data: the file still decodes), a JPEG one byte of its scan."""
    if fmt == "PNG":
        return _png_with_one_pixel_changed(data)
    if fmt == "WEBP":
        return _webp_with_one_pixel_changed(data)
    marker = b"\xff\xda"
    at = (data.rfind(marker) if fmt != "WEBP" else data.find(marker)) + 40
    changed = bytearray(data)
    changed[at] ^= 0x5A
    return bytes(changed)


def _one_pixel_changed(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    rgb.putpixel((0, 0), tuple(255 - v for v in rgb.getpixel((0, 0))))
    return rgb


def _riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(fourcc, payload) of each chunk of a WebP's RIFF body."""
    chunks, at = [], 12
    while at + 8 <= len(data):
        kind, length = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        chunks.append((kind, data[at + 8 : at + 8 + length]))
        at += 8 + length + (length & 1)
    return chunks


def _webp_with_one_pixel_changed(data: bytes) -> bytes:
    fresh = dict(_riff_chunks(encode(_one_pixel_changed(data), "WEBP")))
    body = b"WEBP"
    for kind, payload in _riff_chunks(data):
        if kind in (b"VP8 ", b"VP8L"):
            kind, payload = next((k, fresh[k]) for k in (b"VP8 ", b"VP8L") if k in fresh)
        body += kind + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _png_with_one_pixel_changed(data: bytes) -> bytes:
    rgb = _one_pixel_changed(data)
    rows = rgb.tobytes()
    stride = rgb.width * 3
    raw = b"".join(b"\0" + rows[y * stride : (y + 1) * stride] for y in range(rgb.height))
    idat = zlib.compress(raw)
    new_chunk = struct.pack(">I4s", len(idat), b"IDAT") + idat
    new_chunk += struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    out, at, placed = bytearray(data[:8]), 8, False
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        end = at + 12 + length
        if kind == b"IDAT":
            if not placed:
                out += new_chunk
                placed = True
        else:
            out += data[at:end]
        at = end
    return bytes(out)


def manifest_offset(data: bytes) -> int:
    """Where the manifest store's description box is (the start of what C2PA reads)."""
    at = data.find(C2PA_STORE_UUID)
    assert at > 0, "no C2PA manifest store in the file"
    return at


def garbled_manifest(data: bytes, length: int = 300) -> bytes:
    """Random bytes written over the inside of the manifest store."""
    at = manifest_offset(data) + 64
    return data[:at] + os.urandom(length) + data[at + length :]


def png_with_jumbf(payload_bytes: int, declared_bytes: int | None = None) -> bytes:
    """A PNG whose `caBX` chunk holds a C2PA manifest-store box header then random bytes:
    `payload_bytes` of them, the box claiming `declared_bytes` (default: what it holds)."""
    label = b"c2pa\0"
    description = struct.pack(">I4s", 8 + 16 + 1 + len(label), b"jumd") + C2PA_STORE_UUID
    description += b"\x03" + label
    body = description + os.urandom(payload_bytes)
    size = 8 + len(body) if declared_bytes is None else declared_bytes
    box = struct.pack(">I4s", min(size, 0xFFFFFFFF), b"jumb") + body
    png = photo("PNG", 0)
    idat = png.find(b"IDAT") - 4
    chunk = struct.pack(">I4s", len(box), b"caBX") + box
    return png[:idat] + chunk + struct.pack(">I", zlib.crc32(b"caBX" + box)) + png[idat:]


CASE_NAMES = (
    "ai_declared_untrusted_signer",
    "camera_declared_trusted_signer",
    "camera_declared_untrusted_signer",
    "camera_declared_tampered",
    "ai_declared_tampered",
    "stripped_by_reencoding",
    "xmp_trained_algorithmic_media",
    "xmp_digital_capture",
    "plain_photo",
    "stable_diffusion_parameters",  # PNG only: the web UI writes its text chunk to PNG files
)


def case_names(fmt: str) -> list[str]:
    return [name for name in CASE_NAMES if fmt == "PNG" or name != "stable_diffusion_parameters"]


@dataclass(frozen=True)
class Case:
    """An upload and the contract's `provenance` for it when TRUSTED is the trust anchor."""

    data: bytes
    provenance: dict

    @property
    def declared(self) -> str | None:
        return self.provenance["declared"]


def _c2pa(validation: str, source_type: str, generator: tuple[str, str], signer: str) -> dict:
    return {
        "validation": validation,
        "digital_source_type": source_type,
        "generator": f"{generator[0]} {generator[1]}",
        "signer": signer,
    }


def _metadata(source_type: str | None = None, generator: str | None = None, camera=None):
    return {"digital_source_type": source_type, "generator": generator, "camera": camera}


@cache
def cases(fmt: str) -> dict[str, Case]:
    """Every case of issue 11, point 5, in `fmt` (JPEG, PNG or WEBP), keyed by `case_names`."""
    camera = CAMERA_MODEL  # "Testcam" + "Testcam X100": the model names the make already
    camera_signed = sign(camera_photo(fmt), fmt, TRUSTED, CAPTURE, CAMERA_FIRMWARE)
    ai_untrusted = sign(photo(fmt, 0), fmt, UNTRUSTED, AI_MEDIA, IMAGE_GENERATOR)
    built = {
        "ai_declared_untrusted_signer": Case(
            ai_untrusted,
            {
                "c2pa": _c2pa("untrusted", AI_MEDIA, IMAGE_GENERATOR, UNTRUSTED),
                "metadata": _metadata(),
                "declared": "ai_generated",
            },
        ),
        "camera_declared_trusted_signer": Case(
            camera_signed,
            {
                "c2pa": _c2pa("trusted", CAPTURE, CAMERA_FIRMWARE, TRUSTED),
                "metadata": _metadata(camera=camera),
                "declared": "camera",
            },
        ),
        "camera_declared_untrusted_signer": Case(
            sign(camera_photo(fmt), fmt, UNTRUSTED, CAPTURE, CAMERA_FIRMWARE),
            {
                "c2pa": _c2pa("untrusted", CAPTURE, CAMERA_FIRMWARE, UNTRUSTED),
                "metadata": _metadata(camera=camera),
                "declared": None,
            },
        ),
        "camera_declared_tampered": Case(
            tampered(camera_signed, fmt),
            {
                "c2pa": _c2pa("invalid", CAPTURE, CAMERA_FIRMWARE, TRUSTED),
                "metadata": _metadata(camera=camera),
                "declared": None,
            },
        ),
        "ai_declared_tampered": Case(
            tampered(ai_untrusted, fmt),
            {
                "c2pa": _c2pa("invalid", AI_MEDIA, IMAGE_GENERATOR, UNTRUSTED),
                "metadata": _metadata(),
                "declared": "ai_generated",
            },
        ),
        "stripped_by_reencoding": Case(
            reencoded(camera_signed, fmt),
            {"c2pa": None, "metadata": _metadata(), "declared": None},
        ),
        "xmp_trained_algorithmic_media": Case(
            with_xmp(fmt, xmp_packet(AI_MEDIA)),
            {"c2pa": None, "metadata": _metadata(AI_MEDIA), "declared": "ai_generated"},
        ),
        "xmp_digital_capture": Case(
            with_xmp(fmt, xmp_packet(CAPTURE, as_attribute=False)),
            {"c2pa": None, "metadata": _metadata(CAPTURE), "declared": None},
        ),
        "plain_photo": Case(
            camera_photo(fmt),
            {"c2pa": None, "metadata": _metadata(camera=camera), "declared": None},
        ),
    }
    if fmt == "PNG":
        built["stable_diffusion_parameters"] = Case(
            png_with_text(parameters=SD_PARAMETERS),
            {
                "c2pa": None,
                "metadata": _metadata(generator="Stable Diffusion web UI"),
                "declared": "ai_generated",
            },
        )
    return built
