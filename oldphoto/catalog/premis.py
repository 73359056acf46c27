"""PREMIS 3.0 for the catalog: which preservation events a provenance record stands for, and the PREMIS XML
(objects, events, agents) of one item's whole history, optionally wrapped in a METS document (metsrw).

Event types follow the Library of Congress PREMIS eventType vocabulary:
  source sha256               -> "message digest calculation"
  load (decode + checks)      -> "validation"
  scratch_detection           -> "creation"          (a defect mask is created)
  global_restoration          -> "creation"          (a restored derivative is created; the original is untouched)
  tone transfer (in global)   -> "modification"      (with its parameters, when tone matching was on)
  face_detection              -> "metadata extraction" (face boxes and landmarks)
  face_enhancement, blending  -> "creation"
  write                       -> "information package creation" (outputs + provenance.json stored)
The agent of every event is the software (oldphoto + version) and the model checkpoints (name + sha256) the
stage used. Objects are the source file (one per distinct sha256 seen) and every output artefact, linked to
the source by a "derivation / has source" relationship.
"""
from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Any, Iterable

from lxml import etree

from oldphoto.catalog.tables import parse_time
from oldphoto.provenance import ItemProvenance

PREMIS_NS = "http://www.loc.gov/premis/v3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
PREMIS_XSD = "http://www.loc.gov/standards/premis/v3/premis.xsd"
NSMAP = {"premis": PREMIS_NS, "xsi": XSI_NS}

EVENT_TYPES = {
    "load": "validation",
    "scratch_detection": "creation",
    "global_restoration": "creation",
    "face_detection": "metadata extraction",
    "face_enhancement": "creation",
    "blending": "creation",
    "write": "information package creation",
}
STAGE_DETAILS = {
    "load": "decode the scanned file and check it is a readable image",
    "scratch_detection": "scratch detection: per-pixel defect mask (U-Net)",
    "global_restoration": "global restoration: latent space translation (VAE A -> mapping -> VAE B decoder)",
    "face_detection": "face detection and 5-point landmarks",
    "face_enhancement": "face enhancement (SPADE face generator) on aligned face crops",
    "blending": "blend enhanced faces back into the restored photograph",
    "write": "write restored image, mask, faces, review sheet and provenance.json",
}
# Which output artefact kinds a stage produces (the event's "outcome" objects).
STAGE_OUTPUTS = {
    "scratch_detection": ("mask",),
    "face_detection": ("face_before",),
    "face_enhancement": ("face_after",),
    "blending": ("restored",),
    "global_restoration": ("restored",),
    "write": None,   # all artefacts
}
OUTCOMES = {"done": "success", "failed": "failure", "skipped": "skipped", "running": "in progress",
            "pending": "not started"}


_NS = uuid.NAMESPACE_URL.bytes


def event_identifier(run_id: str, source_uri: str, seq: int) -> str:
    """A name-based (version 5) UUID, deterministic so that re-recording an attempt gives its events the same
    identifiers; equal to uuid.uuid5(NAMESPACE_URL, "oldphoto:RUN:URI:SEQ"), computed without the UUID class."""
    b = bytearray(hashlib.sha1(_NS + f"oldphoto:{run_id}:{source_uri}:{seq}".encode()).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _obj(uri: str, sha256: str | None) -> dict[str, Any]:
    return {"uri": uri, "sha256": sha256}


def events_for(prov: ItemProvenance, run_id: str, fallback_time: datetime) -> list[dict[str, Any]]:
    """The PREMIS events one provenance record stands for, as rows of the `events` table (without result_id)."""
    src = _obj(prov.input.uri, prov.input.sha256)
    version = prov.oldphoto_version or ""
    started = parse_time(prov.started) or parse_time(prov.finished) or fallback_time
    events: list[dict[str, Any]] = []

    def add(event_type: str, detail: str, when: datetime | None, outcome: str, outcome_detail: str | None,
            checkpoints: list[dict[str, str]], outcome_objects: list[dict[str, Any]]) -> None:
        seq = len(events)
        events.append(dict(seq=seq, identifier=event_identifier(run_id, prov.input.uri, seq), event_type=event_type,
                           detail=f"{detail} [run {run_id}]", date_time=when, agent_name="oldphoto",
                           agent_version=version, checkpoints=checkpoints, outcome=outcome,
                           outcome_detail=outcome_detail, source_objects=[src], outcome_objects=outcome_objects))

    if prov.input.sha256:
        add("message digest calculation", "sha256 of the source file", started, "success",
            f"sha256={prov.input.sha256}", [], [])
    t = started
    for s in prov.stages:
        # the stage's real end time; records written before stages carried their times: start + summed seconds
        t = parse_time(s.finished) or (t + timedelta(seconds=max(float(s.seconds or 0.0), 0.0)))
        outs = _stage_outcome_objects(prov, s)
        detail = STAGE_DETAILS.get(s.name, f"stage {s.name}") + f" on {s.device or 'cpu'} in {float(s.seconds or 0):.3f} s"
        add(EVENT_TYPES.get(s.name, "creation"), detail, t, OUTCOMES.get(s.status, s.status), _stage_note(prov, s),
            [{"name": c.name, "file": c.file, "sha256": c.sha256} for c in s.checkpoints], outs)
        params = _tone_parameters(prov, s)
        if params is not None:
            # the tone transfer changes pixels too: its own event, with its parameters (it is the last step of
            # the global restoration stage, so it ends when that stage ends)
            add("modification", f"tone transfer: the scan's local tone and colour carried onto the restored image "
                f"by a guided filter, scratched pixels excluded (not in the official method; {params})", t,
                "success", params, [], outs)
    if _failed_outside_stages(prov):
        add("validation", "item processing", parse_time(prov.finished) or t, "failure", prov.error, [], [])
    return events


def _failed_outside_stages(prov: ItemProvenance) -> bool:
    return prov.status == "failed" and not any(s.status == "failed" for s in prov.stages)


def _stage_outcome_objects(prov: ItemProvenance, s: Any) -> list[dict[str, Any]]:
    """The outputs a done stage created (STAGE_OUTPUTS: None = every output)."""
    if s.status != "done":
        return []
    kinds = STAGE_OUTPUTS.get(s.name, ())
    return [_obj(a.uri, a.sha256) for a in prov.outputs if kinds is None or a.kind in kinds]


def _stage_note(prov: ItemProvenance, s: Any) -> str | None:
    """The event's outcome detail: the stage's error, else what the stage found."""
    if s.error is not None:
        return s.error
    if s.name == "load" and s.status == "done":
        i = prov.input
        return f"{i.format or '?'} {i.mode or '?'} {i.width or '?'}x{i.height or '?'}"
    if s.name == "scratch_detection" and prov.mask_coverage is not None:
        return f"mask coverage {prov.mask_coverage:.6f}"
    if s.name == "face_detection" and s.status == "done":
        return f"{len(prov.faces)} face(s)"
    return None


def _tone_parameters(prov: ItemProvenance, s: Any) -> str | None:
    """The tone transfer's parameters as text when the done global restoration stage applied it, else None."""
    tone = prov.parameters.get("tone_transfer") if s.name == "global_restoration" else None
    if not tone or s.status != "done":
        return None
    return ", ".join(f"{k}={v}" for k, v in sorted(tone.items())) if isinstance(tone, dict) else str(tone)


# --------------------------------------------------------------------------------------------- XML building

def _q(tag: str) -> str:
    return f"{{{PREMIS_NS}}}{tag}"


def _sub(parent: etree._Element, tag: str, text: Any = None) -> etree._Element:
    el = etree.SubElement(parent, _q(tag))
    if text is not None:
        el.text = str(text)
    return el


def _ident(parent: etree._Element, prefix: str, kind: str, value: str) -> None:
    el = _sub(parent, f"{prefix}Identifier")
    _sub(el, f"{prefix}IdentifierType", kind)
    _sub(el, f"{prefix}IdentifierValue", value)


def _obj_key(o: dict[str, Any]) -> tuple[str, str]:
    return ("sha256", o["sha256"]) if o.get("sha256") else ("URI", o["uri"])


def _time(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else "OPEN"


def build_premis(item: Any, attempts: Iterable[Any]) -> etree._Element:
    """PREMIS 3.0 <premis> element of one item's history.

    `item` has .source_uri, .name; each attempt has .input (uri, sha256, bytes, format, mode, width, height),
    .artefacts (dicts kind/uri/sha256/bytes), .events (rows of the events table), .run_id.
    """
    root = etree.Element(_q("premis"), nsmap=NSMAP)
    root.set("version", "3.0")
    root.set(f"{{{XSI_NS}}}schemaLocation", f"{PREMIS_NS} {PREMIS_XSD}")
    objects, events, agents = _collect(attempts)
    for (kind, value), o in objects.items():
        _object_element(root, kind, value, o)
    for e in events:
        _event_element(root, e)
    for (kind, value), a in agents.items():
        _agent_element(root, kind, value, a)
    return root


def _collect(attempts: Iterable[Any]) -> tuple[dict[tuple[str, str], dict[str, Any]], list[dict[str, Any]],
                                                dict[tuple[str, str], dict[str, Any]]]:
    """The objects (sources and artefacts, by identifier), events and agents of an item's attempts."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    agents: dict[tuple[str, str], dict[str, Any]] = {}
    for a in attempts:
        src = _obj(a.input["uri"], a.input.get("sha256"))
        key = _obj_key(src)
        objects.setdefault(key, {**src, "bytes": a.input.get("bytes"), "format": a.input.get("format"),
                                 "original_name": _file_name(a.input["uri"]), "source": None, "events": []})
        for art in a.artefacts:
            o = _obj(art["uri"], art["sha256"])
            okey = _obj_key(o)
            made_by = [e["identifier"] for e in a.events if any(_obj_key(x) == okey for x in e["outcome_objects"])]
            objects.setdefault(okey, {**o, "bytes": art["bytes"], "format": _format_of(art["uri"]),
                                      "kind": art["kind"], "original_name": None, "source": key,
                                      "events": made_by})
        for e in a.events:
            events.append(e)
            if e.get("agent_type") == "person":
                agents.setdefault(_agent_key(e), {"name": e["agent_name"], "version": None, "type": "person",
                                                  "note": "curator who reviewed the restoration (oldphoto review)"})
                continue
            v = e["agent_version"] or "unknown"
            agents.setdefault(_agent_key(e), {"name": e["agent_name"], "version": v, "note": "restoration software"})
            for c in e["checkpoints"]:
                agents.setdefault(("sha256", c["sha256"]), {"name": c["name"], "version": None,
                                                            "note": f"model weights file {c['file']}"})
    return objects, events, agents


def _object_element(root: etree._Element, kind: str, value: str, o: dict[str, Any]) -> None:
    el = _sub(root, "object")
    el.set(f"{{{XSI_NS}}}type", "premis:file")
    _ident(el, "object", kind, value)
    if kind != "URI":
        _ident(el, "object", "URI", o["uri"])
    if o.get("kind"):
        sp = _sub(el, "significantProperties")
        _sub(sp, "significantPropertiesType", "oldphoto artefact kind")
        _sub(sp, "significantPropertiesValue", o["kind"])
    oc = _sub(el, "objectCharacteristics")
    _sub(oc, "compositionLevel", 0)
    if o.get("sha256"):
        fx = _sub(oc, "fixity")
        _sub(fx, "messageDigestAlgorithm", "SHA-256")
        _sub(fx, "messageDigest", o["sha256"])
    if o.get("bytes") is not None:
        _sub(oc, "size", o["bytes"])
    fmt = _sub(oc, "format")
    fd = _sub(fmt, "formatDesignation")
    _sub(fd, "formatName", o.get("format") or "unknown")
    if o.get("original_name"):
        _sub(el, "originalName", o["original_name"])
    if o.get("source"):
        rel = _sub(el, "relationship")
        _sub(rel, "relationshipType", "derivation")
        _sub(rel, "relationshipSubType", "has source")
        _ident(rel, "relatedObject", *o["source"])
        for ev in o["events"]:
            _ident(rel, "relatedEvent", "UUID", ev)


def _event_element(root: etree._Element, e: dict[str, Any]) -> None:
    el = _sub(root, "event")
    _ident(el, "event", "UUID", e["identifier"])
    _sub(el, "eventType", e["event_type"])
    _sub(el, "eventDateTime", _time(e["date_time"]))
    di = _sub(el, "eventDetailInformation")
    _sub(di, "eventDetail", e["detail"])
    oi = _sub(el, "eventOutcomeInformation")
    _sub(oi, "eventOutcome", e["outcome"])
    if e.get("outcome_detail"):
        od = _sub(oi, "eventOutcomeDetail")
        _sub(od, "eventOutcomeDetailNote", e["outcome_detail"])
    la = _sub(el, "linkingAgentIdentifier")
    kind, value = _agent_key(e)
    _sub(la, "linkingAgentIdentifierType", kind)
    _sub(la, "linkingAgentIdentifierValue", value)
    _sub(la, "linkingAgentRole", "implementer" if e.get("agent_type") == "person" else "executing program")
    for c in e["checkpoints"]:
        la = _sub(el, "linkingAgentIdentifier")
        _sub(la, "linkingAgentIdentifierType", "sha256")
        _sub(la, "linkingAgentIdentifierValue", c["sha256"])
        _sub(la, "linkingAgentRole", "model weights")
    for role, objs in (("source", e["source_objects"]), ("outcome", e["outcome_objects"])):
        for o in objs:
            lo = _sub(el, "linkingObjectIdentifier")
            k, v = _obj_key(o)
            _sub(lo, "linkingObjectIdentifierType", k)
            _sub(lo, "linkingObjectIdentifierValue", v)
            _sub(lo, "linkingObjectRole", role)


def _agent_element(root: etree._Element, kind: str, value: str, a: dict[str, Any]) -> None:
    el = _sub(root, "agent")
    _ident(el, "agent", kind, value)
    _sub(el, "agentName", a["name"])
    _sub(el, "agentType", a.get("type", "software"))
    if a["version"]:
        _sub(el, "agentVersion", a["version"])
    _sub(el, "agentNote", a["note"])


def _agent_key(e: dict[str, Any]) -> tuple[str, str]:
    """An event's agent: the software (name + version) or, for a curator's decision, the reviewer by name."""
    if e.get("agent_type") == "person":
        return ("local", f"reviewer:{e['agent_name']}")
    return ("software", f"{e['agent_name']} {e['agent_version'] or 'unknown'}")


def _format_of(uri: str) -> str:
    ext = uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
    return {"png": "Portable Network Graphics", "tif": "Tagged Image File Format",
            "tiff": "Tagged Image File Format", "jpg": "JPEG", "jpeg": "JPEG",
            "json": "JSON"}.get(ext, ext or "unknown")


def _file_name(uri: str) -> str:
    """PREMIS originalName: the source file's own name ('a.png'), not the output folder derived from it."""
    return uri.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def to_mets(premis_root: etree._Element, item_name: str, source_uri: str) -> etree._Element:
    """Wrap the PREMIS record in a METS document (metsrw). The fileSec lists the original (USE "original") and
    every output (USE = its artefact kind: restored, mask, face_before, face_after, review, provenance), each
    with its real URI as FLocat href and its SHA-256 checksum; each file's amdSec holds its PREMIS object
    (techMD); the original's also holds every event and agent (digiprovMD)."""
    import metsrw

    entries: list[Any] = []
    original = None
    for el in premis_root:            # each wrapped PREMIS element names its schema (METS profiles require it)
        el.set(f"{{{XSI_NS}}}schemaLocation", f"{PREMIS_NS} {PREMIS_XSD}")
    for el in premis_root.findall(_q("object")):
        ids = {i.findtext(_q("objectIdentifierType")): i.findtext(_q("objectIdentifierValue"))
               for i in el.findall(_q("objectIdentifier"))}
        uri = ids.get("URI") or source_uri
        sha = el.findtext(f"{_q('objectCharacteristics')}/{_q('fixity')}/{_q('messageDigest')}")
        kind = el.findtext(f"{_q('significantProperties')}/{_q('significantPropertiesValue')}")
        use = "original" if kind is None else kind
        fs = metsrw.FSEntry(path=uri, label=_file_name(uri), type="Item", use=use,
                            file_uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{uri}#{sha or ''}")),
                            checksum=sha, checksumtype="SHA-256" if sha else None)
        fs.add_premis_object(el)
        if kind is None and (original is None or uri == source_uri):
            original = fs
        entries.append(fs)
    if original is None:                  # no object recorded yet: the source alone
        original = metsrw.FSEntry(path=source_uri, label=_file_name(source_uri), type="Item", use="original",
                                  file_uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, source_uri)))
        entries.append(original)
    for el in premis_root.findall(_q("event")):
        original.add_premis_event(el)
    for el in premis_root.findall(_q("agent")):
        original.add_premis_agent(el)
    doc = metsrw.METSDocument()
    # one root div in the structMap (as the METS schema wants): the item, with its files
    doc.append_file(metsrw.FSEntry(label=item_name, type="Directory", children=entries))
    return doc.serialize()
