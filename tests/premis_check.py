"""Structural check of a PREMIS 3.0 document (the test oracle for oldphoto.catalog.premis's XML): element order
and cardinality of the PREMIS 3 content model of the elements oldphoto writes, event date-times, and links
from events to existing agents and objects."""
from __future__ import annotations

from datetime import datetime

from lxml import etree

from oldphoto.catalog.premis import PREMIS_NS


def _q(tag: str) -> str:
    return f"{{{PREMIS_NS}}}{tag}"


# ------------------------------------------------------------------------------------ structural validation
# The PREMIS 3.0 content model of the elements we write: ordered (child, min, max) with max None = unbounded.
_U = None
CONTENT_MODEL: dict[str, list[tuple[str, int, int | None]]] = {
    "premis": [("object", 1, _U), ("event", 0, _U), ("agent", 0, _U), ("rights", 0, _U)],
    "object": [("objectIdentifier", 1, _U), ("preservationLevel", 0, _U), ("significantProperties", 0, _U),
               ("objectCharacteristics", 1, _U), ("originalName", 0, 1), ("storage", 0, _U),
               ("signatureInformation", 0, _U), ("environmentFunction", 0, _U),
               ("environmentDesignation", 0, _U), ("environmentRegistry", 0, _U),
               ("environmentExtension", 0, _U), ("relationship", 0, _U), ("linkingEventIdentifier", 0, _U),
               ("linkingRightsStatementIdentifier", 0, _U)],
    "objectIdentifier": [("objectIdentifierType", 1, 1), ("objectIdentifierValue", 1, 1)],
    "significantProperties": [("significantPropertiesType", 0, 1), ("significantPropertiesValue", 0, 1)],
    "objectCharacteristics": [("compositionLevel", 0, 1), ("fixity", 0, _U), ("size", 0, 1), ("format", 1, _U),
                              ("creatingApplication", 0, _U), ("inhibitors", 0, _U),
                              ("objectCharacteristicsExtension", 0, _U)],
    "fixity": [("messageDigestAlgorithm", 1, 1), ("messageDigest", 1, 1), ("messageDigestOriginator", 0, 1)],
    "format": [("formatDesignation", 0, 1), ("formatRegistry", 0, 1), ("formatNote", 0, _U)],
    "formatDesignation": [("formatName", 1, 1), ("formatVersion", 0, 1)],
    "relationship": [("relationshipType", 1, 1), ("relationshipSubType", 1, 1), ("relatedObjectIdentifier", 1, _U),
                     ("relatedEventIdentifier", 0, _U), ("relatedEnvironmentPurpose", 0, _U),
                     ("relatedEnvironmentCharacteristic", 0, 1)],
    "relatedObjectIdentifier": [("relatedObjectIdentifierType", 1, 1), ("relatedObjectIdentifierValue", 1, 1),
                                ("relatedObjectSequence", 0, 1)],
    "relatedEventIdentifier": [("relatedEventIdentifierType", 1, 1), ("relatedEventIdentifierValue", 1, 1),
                               ("relatedEventSequence", 0, 1)],
    "event": [("eventIdentifier", 1, 1), ("eventType", 1, 1), ("eventDateTime", 1, 1),
              ("eventDetailInformation", 0, _U), ("eventOutcomeInformation", 0, _U),
              ("linkingAgentIdentifier", 0, _U), ("linkingObjectIdentifier", 0, _U)],
    "eventIdentifier": [("eventIdentifierType", 1, 1), ("eventIdentifierValue", 1, 1)],
    "eventDetailInformation": [("eventDetail", 0, 1), ("eventDetailExtension", 0, _U)],
    "eventOutcomeInformation": [("eventOutcome", 0, 1), ("eventOutcomeDetail", 0, _U)],
    "eventOutcomeDetail": [("eventOutcomeDetailNote", 0, 1), ("eventOutcomeDetailExtension", 0, _U)],
    "linkingAgentIdentifier": [("linkingAgentIdentifierType", 1, 1), ("linkingAgentIdentifierValue", 1, 1),
                               ("linkingAgentRole", 0, _U)],
    "linkingObjectIdentifier": [("linkingObjectIdentifierType", 1, 1), ("linkingObjectIdentifierValue", 1, 1),
                                ("linkingObjectRole", 0, _U)],
    "agent": [("agentIdentifier", 1, _U), ("agentName", 0, _U), ("agentType", 0, 1), ("agentVersion", 0, 1),
              ("agentNote", 0, _U), ("agentExtension", 0, _U), ("linkingEventIdentifier", 0, _U),
              ("linkingRightsStatementIdentifier", 0, _U), ("linkingEnvironmentIdentifier", 0, _U)],
    "agentIdentifier": [("agentIdentifierType", 1, 1), ("agentIdentifierValue", 1, 1)],
}


def _check_children(el: etree._Element, problems: list[str], path: str) -> None:
    local = etree.QName(el).localname
    model = CONTENT_MODEL.get(local)
    children = [c for c in el if isinstance(c.tag, str)]
    if model is None:
        if children:
            problems.append(f"{path}: unexpected child elements in <{local}>")
        elif not (el.text or "").strip():
            problems.append(f"{path}: empty <{local}>")
        return
    for c in children:
        if etree.QName(c).namespace != PREMIS_NS:
            problems.append(f"{path}/{c.tag}: not in the PREMIS 3 namespace")
    names = [etree.QName(c).localname for c in children]
    i = 0
    for name, lo, hi in model:
        n = 0
        while i < len(names) and names[i] == name:
            n += 1
            i += 1
        if n < lo:
            problems.append(f"{path}: <{local}> needs at least {lo} <{name}>, has {n}")
        if hi is not None and n > hi:
            problems.append(f"{path}: <{local}> allows at most {hi} <{name}>, has {n}")
    if i < len(names):
        problems.append(f"{path}: <{names[i]}> not allowed at position {i + 1} of <{local}>")
    for k, c in enumerate(children):
        _check_children(c, problems, f"{path}/{etree.QName(c).localname}[{k + 1}]")


def _ident(el: etree._Element, prefix: str) -> tuple[str | None, str | None]:
    """(type, value) of a PREMIS identifier element: its <prefix>Type and <prefix>Value children."""
    ns = {"p": PREMIS_NS}
    return el.findtext(f"p:{prefix}Type", namespaces=ns), el.findtext(f"p:{prefix}Value", namespaces=ns)


def validate_premis(root: etree._Element) -> list[str]:
    """Problems with a PREMIS 3 document's structure (element order/cardinality of the content model above,
    event date-times, links from events to existing agents and objects). Empty list = valid."""
    problems: list[str] = []
    if root.tag != _q("premis"):
        return [f"root is {root.tag}, not premis:premis"]
    if root.get("version") != "3.0":
        problems.append("premis/@version is not 3.0")
    _check_children(root, problems, "premis")
    ns = {"p": PREMIS_NS}
    objects = {_ident(o, "objectIdentifier") for o in root.iterfind("p:object/p:objectIdentifier", ns)}
    agents = {_ident(a, "agentIdentifier") for a in root.iterfind("p:agent/p:agentIdentifier", ns)}
    events = {e.findtext("p:eventIdentifierValue", namespaces=ns) for e in root.iterfind("p:event/p:eventIdentifier", ns)}
    for ev in root.iterfind("p:event", ns):
        when = ev.findtext("p:eventDateTime", namespaces=ns)
        if when != "OPEN":
            try:
                datetime.fromisoformat(when.replace("Z", "+00:00"))
            except (ValueError, AttributeError):
                problems.append(f"event date-time {when!r} is not ISO 8601")
        for la in ev.iterfind("p:linkingAgentIdentifier", ns):
            key = _ident(la, "linkingAgentIdentifier")
            if key not in agents:
                problems.append(f"event links to unknown agent {key}")
        for lo in ev.iterfind("p:linkingObjectIdentifier", ns):
            key = _ident(lo, "linkingObjectIdentifier")
            if key not in objects:
                problems.append(f"event links to unknown object {key}")
    for rel in root.iterfind("p:object/p:relationship", ns):
        for ro in rel.iterfind("p:relatedObjectIdentifier", ns):
            key = _ident(ro, "relatedObjectIdentifier")
            if key not in objects:
                problems.append(f"relationship to unknown object {key}")
        for re_ in rel.iterfind("p:relatedEventIdentifier", ns):
            if re_.findtext("p:relatedEventIdentifierValue", namespaces=ns) not in events:
                problems.append("relationship to unknown event")
    return problems
