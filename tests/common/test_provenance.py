import http.server
import os
import threading
import time

import pytest
from PIL import ExifTags, Image

from common import c2pa_child, image_metadata
from common.c2pa_reader import ManifestReader
from common.image import jpeg_layout
from common.image_metadata import EmbeddedMetadata, read_metadata
from common.provenance import (
    ContentCredentials,
    Provenance,
    declared_source,
    load_trust_anchors,
    read_provenance,
    verdict_for,
)
from tests.provenance_fixtures import (
    AI_MEDIA,
    C2PA_STORE_UUID,
    CAMERA_FIRMWARE,
    CAMERA_MODEL,
    CAPTURE,
    IMAGE_GENERATOR,
    IPTC,
    SD_PARAMETERS,
    TRUSTED,
    UNTRUSTED,
    camera_photo,
    case_names,
    cases,
    garbled_manifest,
    manifest_offset,
    photo,
    png_with_jumbf,
    png_with_text,
    sign,
    sign_edit,
    trust_anchors_pem,
    with_xmp,
    write_trust_anchors,
    xmp_packet,
)

FORMATS = ("JPEG", "PNG", "WEBP")
EMPTY = {"c2pa": None, "metadata": EmbeddedMetadata().to_dict(), "declared": None}


@pytest.fixture(scope="module")
def reader():
    with ManifestReader() as shared:
        yield shared


def _exif_with(software: str | None = None, user_comment: bytes | None = None) -> bytes:
    exif = Image.Exif()
    if software is not None:
        exif[ExifTags.Base.Software] = software
    if user_comment is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = user_comment
    return exif.tobytes()


def _read(data: bytes, reader: ManifestReader, **options) -> Provenance:
    options.setdefault("trust_anchors_pem", trust_anchors_pem())
    return read_provenance(data, reader=reader, **options)


# --- the contract's cases (issue 11, point 5), in every format -----------------------------


@pytest.mark.parametrize(("fmt", "name"), [(f, n) for f in FORMATS for n in case_names(f)])
def test_each_case_gives_exactly_the_contract_fields(fmt, name, reader):
    case = cases(fmt)[name]
    assert _read(case.data, reader).to_dict() == case.provenance


@pytest.mark.parametrize("name", case_names("JPEG"))
def test_a_jpegs_walked_layout_gives_the_same_provenance(name, reader):
    """The decode's walk over a JPEG's markers (to its second scan at most, as the Ingress
    walks it) stands in for searching the bytes: each case still gives the contract's fields."""
    case = cases("JPEG")[name]
    layout = jpeg_layout(case.data, max_scans=1)
    assert _read(case.data, reader, layout=layout).to_dict() == case.provenance


@pytest.mark.parametrize(
    "data",
    [
        photo("JPEG", exif=_exif_with(software="Adobe Firefly")),
        photo(
            "JPEG", exif=_exif_with(user_comment=b"UNICODE\0" + SD_PARAMETERS.encode("utf-16-be"))
        ),
        with_xmp("JPEG", xmp_packet(AI_MEDIA)),
        photo("JPEG", progressive=True, exif=_exif_with(software="Midjourney")),
        photo("JPEG"),
    ],
    ids=["exif_software", "exif_user_comment", "xmp", "progressive", "no_metadata"],
)
def test_a_jpegs_walked_layout_gives_the_same_metadata(data):
    assert read_metadata(data, jpeg_layout(data, max_scans=1)) == read_metadata(data)


def test_a_jpeg_without_app1_segments_is_not_opened_for_its_metadata(monkeypatch):
    """Its claims are all in APP1 segments (EXIF, XMP): one without any is not opened."""
    plain, camera = photo("JPEG"), camera_photo("JPEG")
    opened, open_image = [], image_metadata.Image.open
    monkeypatch.setattr(
        image_metadata.Image, "open", lambda *args: opened.append(args) or open_image(*args)
    )
    assert read_metadata(plain, jpeg_layout(plain, max_scans=1)) == EmbeddedMetadata()
    assert opened == []
    assert read_metadata(camera, jpeg_layout(camera, max_scans=1)).camera == CAMERA_MODEL
    assert len(opened) == 1


def test_a_jpeg_walked_whole_is_searched_for_a_manifest_only_with_an_app11_segment(
    reader, monkeypatch
):
    """A JPEG embeds its manifest in APP11 segments: the store's UUID elsewhere (a comment
    here) is none, and with a complete walk that met no APP11 the library is not asked. A walk
    that stopped at a progressive JPEG's second scan has not met every segment: the bytes are
    searched, and a signed one's manifest is found."""
    asked, read = [], reader.read
    monkeypatch.setattr(
        reader, "read", lambda data, **options: asked.append(data) or read(data, **options)
    )
    commented = photo("JPEG", comment=b"c2pa store " + C2PA_STORE_UUID)
    layout = jpeg_layout(commented, max_scans=1)
    assert layout.complete and 0xEB not in layout.markers
    assert _read(commented, reader, layout=layout).c2pa is None
    assert asked == []
    assert _read(commented, reader).c2pa is None  # without the walk: searched, asked, none found
    assert asked == [commented]

    progressive = sign(photo("JPEG", progressive=True), "JPEG", TRUSTED, CAPTURE, CAMERA_FIRMWARE)
    layout = jpeg_layout(progressive, max_scans=1)
    assert not layout.complete
    assert _read(progressive, reader, layout=layout).c2pa.validation == "trusted"


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_trust_anchors_a_trusted_signer_is_only_untrusted(fmt, reader):
    provenance = _read(
        cases(fmt)["camera_declared_trusted_signer"].data, reader, trust_anchors_pem=None
    )
    assert provenance.c2pa.validation == "untrusted"
    assert provenance.c2pa.reason == "signingCredential.untrusted"
    assert provenance.declared is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tampered_file_is_invalid_because_its_hash_no_longer_matches(fmt, reader):
    provenance = _read(cases(fmt)["camera_declared_tampered"].data, reader)
    assert provenance.c2pa.validation == "invalid"
    assert set(provenance.c2pa.reason.split(", ")) == {"assertion.dataHash.mismatch"}


def test_a_large_real_manifest_is_read_and_trusted(reader):
    data = sign(photo("JPEG"), "JPEG", TRUSTED, CAPTURE, CAMERA_FIRMWARE, thumbnail_bytes=6 << 20)
    provenance = _read(data, reader)
    assert provenance.c2pa.validation == "trusted"
    assert provenance.declared == "camera"


# --- the combining rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "declared", "expected"),
    [
        ("real", "ai_generated", ("ai_generated", "provenance")),
        ("ai_generated", "ai_generated", ("ai_generated", "classifier")),
        ("ai_generated", "camera", ("ai_generated", "classifier")),
        ("real", "camera", ("real", "classifier")),
        ("real", None, ("real", "classifier")),
        ("ai_generated", None, ("ai_generated", "classifier")),
    ],
)
def test_verdict_combines_the_classifier_with_the_declaration(prediction, declared, expected):
    assert verdict_for(prediction, Provenance(declared=declared)) == expected


@pytest.mark.parametrize("validation", ["trusted", "untrusted", "invalid"])
def test_an_ai_declaration_counts_whatever_the_signature_state(validation):
    c2pa = ContentCredentials(validation, digital_source_type=IPTC + "algorithmicMedia")
    assert declared_source(c2pa, EmbeddedMetadata()) == "ai_generated"


@pytest.mark.parametrize("validation", ["untrusted", "invalid"])
def test_a_camera_claim_counts_only_when_trusted(validation):
    c2pa = ContentCredentials(validation, digital_source_type=CAPTURE)
    assert declared_source(c2pa, EmbeddedMetadata()) is None


def test_an_ai_declaration_outweighs_a_trusted_camera_manifest():
    c2pa = ContentCredentials("trusted", digital_source_type=CAPTURE)
    metadata = EmbeddedMetadata(digital_source_type=IPTC + "compositeWithTrainedAlgorithmicMedia")
    assert declared_source(c2pa, metadata) == "ai_generated"


def test_an_ai_action_among_several_is_the_manifests_source_type(reader):
    edited = sign(
        photo("PNG"),
        "PNG",
        TRUSTED,
        CAPTURE,
        CAMERA_FIRMWARE,
        extra_actions=({"action": "c2pa.edited", "digitalSourceType": AI_MEDIA},),
    )
    provenance = _read(edited, reader)
    assert (provenance.c2pa.digital_source_type, provenance.declared) == (AI_MEDIA, "ai_generated")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_edit_of_a_generated_picture_declares_it_through_its_ingredient(fmt, reader):
    generated = sign(photo(fmt), fmt, UNTRUSTED, AI_MEDIA, IMAGE_GENERATOR)
    edited = sign_edit(generated, fmt, TRUSTED, ("Photo Editor", "9.0"))
    provenance = _read(edited, reader)
    assert provenance.to_dict() == {
        "c2pa": {
            "validation": "trusted",
            "digital_source_type": AI_MEDIA,
            "generator": "Photo Editor 9.0",
            "signer": TRUSTED,
        },
        "metadata": EmbeddedMetadata().to_dict(),
        "declared": "ai_generated",
    }


# --- unsigned metadata ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "generator"),
    [
        ({"parameters": SD_PARAMETERS}, "Stable Diffusion web UI"),
        ({"prompt": '{"3": {"class_type": "KSampler", "inputs": {}}}'}, "ComfyUI"),
        ({"workflow": '{"last_node_id": 9, "nodes": []}'}, "ComfyUI"),
        ({"invokeai_metadata": '{"generation_mode": "txt2img"}'}, "InvokeAI"),
        ({"Software": "NovelAI", "Comment": '{"steps": 28}'}, "NovelAI"),
        ({"fooocus_scheme": "fooocus"}, "Fooocus"),
        ({"parameters": "exposure 1/200, f/8"}, None),  # not the web UI's format
        ({"Software": "GIMP 2.10"}, None),  # editors do not generate
    ],
)
def test_png_text_chunks_name_their_generator(chunks, generator):
    assert read_metadata(png_with_text(**chunks)).generator == generator


@pytest.mark.parametrize(
    ("software", "generator"),
    [("Adobe Firefly", "Adobe Firefly"), ("Adobe Photoshop 25.0", None), ("Imagenomic", None)],
)
def test_exif_software_counts_only_for_known_generators(software, generator):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0131] = software
    assert read_metadata(photo("JPEG", exif=exif.tobytes())).generator == generator


def test_the_web_uis_parameters_in_a_jpeg_user_comment_name_it():
    from PIL import ExifTags, Image

    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = (
        b"UNICODE\0" + SD_PARAMETERS.encode("utf-16-be")
    )
    metadata = read_metadata(photo("JPEG", exif=exif.tobytes()))
    assert metadata.generator == "Stable Diffusion web UI"


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_xmp_packet_in_any_rdf_spelling_declares_its_source(fmt):
    element_form = with_xmp(fmt, _xmp_with_resource(AI_MEDIA))
    assert read_metadata(element_form).digital_source_type == AI_MEDIA


def _xmp_with_resource(source_type: str) -> bytes:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
        'xmlns:ext="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'  # any prefix will do
        f'<ext:DigitalSourceType rdf:resource="{source_type}"/>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


def test_an_xmp_packet_with_entities_is_not_parsed():
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&c;</x:xmpmeta>'
    )
    assert read_metadata(with_xmp("JPEG", laughs)) == EmbeddedMetadata()


# --- hostile input: never an exception, a manifest that fails is `invalid` -----------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("where", ["inside_manifest", "halfway_after_it", "last_byte"])
def test_a_truncated_signed_file_is_invalid(fmt, where, reader):
    data = cases(fmt)["camera_declared_trusted_signer"].data
    start = manifest_offset(data)
    cut = {
        "inside_manifest": start + 100,
        "halfway_after_it": start + (len(data) - start) // 2,
        "last_byte": len(data) - 1,
    }[where]
    provenance = _read(data[:cut], reader)
    assert provenance.c2pa.validation == "invalid"
    assert provenance.declared is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_bytes_inside_a_manifest_make_it_invalid(fmt, reader):
    data = garbled_manifest(cases(fmt)["ai_declared_untrusted_signer"].data)
    provenance = _read(data, reader)
    assert provenance.c2pa.validation == "invalid"
    assert provenance.c2pa.signer is None


@pytest.mark.parametrize(
    ("payload", "declared_size"),
    [(8 << 20, None), (1000, 0xFFFFFFFF), (100_000, 100)],
    ids=["8_MB_of_random_manifest", "claims_4_GB", "claims_less_than_it_holds"],
)
def test_a_huge_or_lying_manifest_box_is_invalid_and_quick(payload, declared_size, reader):
    data = png_with_jumbf(payload, declared_size)
    started = time.monotonic()
    provenance = _read(data, reader)
    assert provenance.c2pa.validation == "invalid"
    assert time.monotonic() - started < 5


def test_a_read_past_its_time_limit_is_invalid_and_the_next_one_works(reader):
    data = png_with_jumbf(8 << 20)
    slow = _read(data, reader, timeout_s=0.001)
    assert slow.c2pa.validation == "invalid"
    assert slow.c2pa.reason.startswith("the C2PA reader timed out after 0.001 s")
    case = cases("JPEG")["camera_declared_trusted_signer"]
    assert _read(case.data, reader).to_dict() == case.provenance


def test_a_read_past_its_memory_limit_is_invalid():
    data = sign(photo("JPEG"), "JPEG", TRUSTED, CAPTURE, CAMERA_FIRMWARE, thumbnail_bytes=6 << 20)
    with ManifestReader(memory_bytes=8 << 20) as small:
        provenance = _read(data, small)
    assert provenance.c2pa.validation == "invalid"
    assert provenance.c2pa.reason is not None


def test_a_file_over_max_bytes_is_not_read(reader):
    data = cases("PNG")["camera_declared_trusted_signer"].data
    provenance = _read(data, reader, max_bytes=len(data) - 1)
    assert provenance.c2pa == ContentCredentials(
        "invalid", reason=f"over {len(data) - 1} bytes: not read"
    )
    assert (provenance.metadata, provenance.declared) == (EmbeddedMetadata(), None)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        os.urandom(4096),
        b"\xff\xd8\xff\xe0" + os.urandom(2000),
        b"\x89PNG\r\n\x1a\n" + os.urandom(2000),
        b"RIFF\x00\x10\x00\x00WEBPVP8 " + os.urandom(2000),
    ],
    ids=["empty", "random", "jpeg_magic", "png_magic", "webp_magic"],
)
def test_bytes_that_are_no_image_carry_no_provenance(data, reader):
    assert _read(data, reader).to_dict() == EMPTY


def test_concurrent_reads_each_get_their_own_answer():
    wanted = {fmt: cases(fmt)["camera_declared_trusted_signer"] for fmt in FORMATS}
    answers: dict[str, dict] = {}
    with ManifestReader(max_children=2) as shared:

        def read(fmt: str) -> None:
            answers[fmt] = _read(wanted[fmt].data, shared).to_dict()

        threads = [threading.Thread(target=read, args=(fmt,)) for fmt in FORMATS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert answers == {fmt: case.provenance for fmt, case in wanted.items()}


def test_a_remote_manifest_is_never_fetched(tmp_path):
    """A file may name a manifest by URL; reading it must not make the server fetch that URL."""
    requests: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_error(404)

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/manifest.c2pa"
        data = sign(photo("JPEG"), "JPEG", TRUSTED, CAPTURE, CAMERA_FIRMWARE, remote_url=url)
        answer = c2pa_child.read_manifest("image/jpeg", data, c2pa_child.make_context(None))
        server.shutdown()
    assert requests == []
    assert answer["validation"] == "invalid"
    assert answer["reason"].startswith("Remote:")
    assert read_provenance(data).c2pa is None  # nothing embedded: the library is not even asked


# --- trust anchors -------------------------------------------------------------------------


def test_trust_anchors_load_from_a_pem_file(tmp_path):
    assert load_trust_anchors(write_trust_anchors(tmp_path / "roots.pem")) == trust_anchors_pem()
    assert load_trust_anchors(None) is None
    assert load_trust_anchors("") is None


@pytest.mark.parametrize("content", [None, "not a certificate", ""])
def test_a_trust_anchor_file_that_is_missing_or_holds_no_certificate_fails_by_name(
    content, tmp_path
):
    path = tmp_path / "roots.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match="C2PA_TRUST_ANCHORS"):
        load_trust_anchors(path)
