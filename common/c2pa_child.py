"""The C2PA reference library in a child process: one upload in, its active manifest's fields out.

`common.c2pa_reader` starts this file as `python -I c2pa_child.py MEMORY_BYTES` and speaks to it
over stdin/stdout (the framing is `common.c2pa_reader`'s). It imports only the standard library
and `c2pa`, so an isolated interpreter runs it, and it caps its own address space, so a manifest
that asks for too much memory ends this process, never the server.
"""

from __future__ import annotations

import io
import json
import resource
import struct
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import c2pa

HEADER = struct.Struct(">III")  # lengths of the MIME type, the trust-anchor PEM and the upload
READY = b"ready\n"  # written once the library is loaded and the memory cap is set
_STATES = {"Trusted": "trusted", "Valid": "untrusted", "Invalid": "invalid"}
_MAX_TEXT = 200  # characters kept of any string taken from a manifest
_MAX_CODES = 5  # failure codes kept in a reason
_MAX_SOURCE_TYPES = 32  # digitalSourceType values kept, in the order of the actions


def main() -> None:
    # The library is imported where used (the server imports this module for its framing
    # constants only), and here first, so that the memory cap comes on top of it.
    import c2pa  # noqa: F401

    _cap_address_space(int(sys.argv[1]))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(READY)
    stdout.flush()
    contexts: dict[str, c2pa.Context] = {}  # per trust-anchor PEM: usually exactly one
    while header := stdin.read(HEADER.size):
        mime_len, anchors_len, data_len = HEADER.unpack(header)
        mime = stdin.read(mime_len).decode()
        anchors = stdin.read(anchors_len).decode()
        data = stdin.read(data_len)
        if len(data) < data_len:  # the server went away mid-request
            return
        if anchors not in contexts:
            contexts[anchors] = make_context(anchors or None)
        answer = read_manifest(mime, data, contexts[anchors])
        stdout.write(json.dumps(answer).encode() + b"\n")
        stdout.flush()


def read_manifest(mime: str, data: bytes, context: c2pa.Context) -> dict:
    """`{"found": False}` without a manifest, else the active manifest's validation and fields,
    and the source types declared by the other manifests of the store (its ingredients')."""
    import c2pa

    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), context=context)
        if reader is None:
            return {"found": False}
        with reader:
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
            store = json.loads(reader.json())
    except (c2pa.C2paError, ValueError) as error:  # the library's errors; bad JSON from it
        return {"found": True, "validation": "invalid", "reason": _text(error)}
    manifests = store.get("manifests") or {}
    active = manifests.pop(store.get("active_manifest"), None) or {}
    failures = (results.get("activeManifest") or {}).get("failure") or []
    codes = [str(item.get("code")) for item in failures if isinstance(item, dict)]
    ingredient_types = [t for m in manifests.values() for t in _digital_source_types(m)]
    return {
        "found": True,
        "validation": _STATES.get(str(state), "invalid"),
        "digital_source_types": _digital_source_types(active),
        "ingredient_source_types": ingredient_types[:_MAX_SOURCE_TYPES],
        "generator": _generator(active),
        "signer": _signer(active),
        "reason": ", ".join(codes[:_MAX_CODES]) or None,
    }


def make_context(trust_anchors_pem: str | None) -> c2pa.Context:
    """Validation settings: trust only `trust_anchors_pem` (none: trust nobody), no network."""
    import c2pa

    # Never reach the network for an upload: no remote manifests, no OCSP.
    verify = {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False}
    config: dict = {"verify": verify}
    if trust_anchors_pem:
        config["trust"] = {"trust_anchors": trust_anchors_pem}
    return c2pa.Context(c2pa.Settings.from_dict(config))


def _digital_source_types(manifest: dict) -> list[str]:
    """The `digitalSourceType` of each action of the manifest's actions assertions, in order."""
    declared = []
    for assertion in manifest.get("assertions") or []:
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions") or []:
            source = action.get("digitalSourceType") if isinstance(action, dict) else None
            if isinstance(source, str) and source:
                declared.append(source[:_MAX_TEXT])
    return declared[:_MAX_SOURCE_TYPES]


def _generator(manifest: dict) -> str | None:
    infos = manifest.get("claim_generator_info") or []
    if infos and isinstance(infos[0], dict) and infos[0].get("name"):
        name, version = str(infos[0]["name"]), infos[0].get("version")
        return _text(f"{name} {version}" if version else name)
    legacy = manifest.get("claim_generator")  # C2PA 1.x manifests
    return _text(legacy) if legacy else None


def _signer(manifest: dict) -> str | None:
    info = manifest.get("signature_info") or {}
    name = info.get("issuer") or info.get("common_name")  # the signing certificate's organisation
    return _text(name) if name else None


def _text(value: object) -> str:
    return str(value)[:_MAX_TEXT]


def _cap_address_space(extra_bytes: int) -> None:
    """Allow this process `extra_bytes` of address space beyond what the loaded library uses."""
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        in_use = int(fields["VmSize"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # no procfs (macOS): leave the limit as it is
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = in_use + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


if __name__ == "__main__":
    main()
