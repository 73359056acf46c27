"""Stages 2–4 as one stage object: face detection + alignment, batched enhancement, blending (ARCHITECTURE §7.7, §9).

Provenance gets three stage records ("face_detection", "face_enhancement", "blending") and one FaceRecord per
face (box, score, the 5 alignment points, where it was found, whether the enhanced face was applied and why).

Do no harm:
- Faces are searched on the stage-1 output (as the official code) *and* on the scan, which has the same
  geometry, and the two lists are merged (`imageops.faces.merge_faces`): a face that restoration blurred is
  still found (`detected_on` "input"). Alignment, enhancement and blending use the stage-1 output.
- Before an enhanced face is blended in, it is compared with the scan's own face at low frequency
  (`imageops.faces.face_agreement`, after the histogram matching the blend does); below
  `options.face_min_agreement` dB the original face stays and the record says why.
- `options.face_strength` (0..1) scales the blend.

The aligned face size S is the face network's `load_size` (256, or 512 with --hr, for the official generators).
`batch(states)` enhances the faces of several items in shared forward passes of `options.face_batch` faces.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch

from oldphoto.digest import file_sha256
from oldphoto.imageops import faces as F
from oldphoto.imageops.colour import ColourAffine
from oldphoto.imageops.io import to_uint
from oldphoto.provenance import CheckpointRef, FaceRecord, StageName
from oldphoto.stages.base import FACE_MIN_AGREEMENT_DB, FACE_MIN_STRUCTURE, FaceResult, ItemState, Stage


@lru_cache(maxsize=1)
def landmarks_checkpoint() -> CheckpointRef:
    path = F.landmarks_model_path()
    return CheckpointRef(name="dlib_shape_predictor_68", file=os.path.basename(path), sha256=file_sha256(path))


def face_to_tensor(faces: list[np.ndarray]) -> torch.Tensor:
    """S×S×3 uint8 faces → N×3×S×S in [-1,1] (pixel/255, (x − 0.5)/0.5)."""
    arr = np.stack(faces).astype(np.float32) / 255.0
    return torch.from_numpy((arr - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def tensor_to_faces(t: torch.Tensor) -> list[np.ndarray]:
    """tanh-range N×3×S×S → uint8 faces with floor(v·255 + 0.5), v = (out + 1)/2 (§7.7)."""
    v = ((t.float().cpu().clamp(-1, 1) + 1.0) / 2.0).permute(0, 2, 3, 1).numpy()
    return list(np.clip(np.floor(v * 255.0 + 0.5), 0, 255).astype(np.uint8))


class FaceStage(Stage):
    steps = (StageName.FACE_DETECTION, StageName.FACE_ENHANCEMENT, StageName.BLENDING)

    @property
    def role(self) -> str:
        return self.options.face_role

    def operating_point(self) -> tuple[float, float, str | None]:
        """(minimum agreement dB, blend strength, why no face is applied or None): the options, else the face
        weights' own operating point (chosen on the face-val photos), else the defaults (26 dB, 1)."""
        own = self.models.operating_point(self.role) if hasattr(self.models, "operating_point") else {}
        o = self.options
        veto = None
        if o.face_min_agreement is None and own.get("apply") is False:
            veto = own.get("reason") or "this face network is not applied by default (its operating point)"
        t = o.face_min_agreement if o.face_min_agreement is not None else own.get("min_agreement",
                                                                                  FACE_MIN_AGREEMENT_DB)
        s = o.face_strength if o.face_strength is not None else own.get("strength", 1.0)
        return float(t), float(s), veto

    def face_size(self) -> int:
        net = self.models.get(self.role)
        cfg = getattr(net, "cfg", None)
        return int(getattr(cfg, "load_size", 512 if self.options.hr else 256))

    def __call__(self, state: ItemState) -> ItemState:
        return self.batch([state])[0]

    def batch(self, states: list[ItemState]) -> list[ItemState]:
        if not self.options.faces:
            for s in states:
                if not s.failed:
                    for n in self.steps:
                        self.skip(s, n, "faces disabled")
            return states
        live = [s for s in states if not s.failed]
        for s in live:
            self.attempt(s, self._detect)
        self._enhance([s for s in live if not s.failed])
        for s in live:
            if not s.failed:
                self.attempt(s, self._blend)
        return states

    # --- stage 2: detection and alignment
    def _detect(self, state: ItemState) -> None:
        with self.step(state, StageName.FACE_DETECTION, extra_checkpoints=(landmarks_checkpoint(),), device="cpu"):
            size = self.face_size()
            state.face_size = size
            img8 = to_uint(state.restored, 8)
            state.faces = []
            found = F.detect_faces(img8)
            if state.decoded is not None:
                # same geometry: a face restoration blurred is still found on the scan
                scan = state.scan_faces           # found by the detection stage's face guard, else here
                if scan is None:
                    scan = F.detect_faces(to_uint(state.decoded.pixels, 8))
                found = F.merge_faces(found, scan)
            else:
                found = F.merge_faces(found, [])
            for k, (det, where) in enumerate(found, start=1):
                try:
                    tform = F.alignment_transform(det.points5, size)
                except ValueError:
                    continue
                state.faces.append(FaceResult(index=k, box=det.box, points5=det.points5, score=det.score,
                                              tform=tform, aligned=F.align_face(img8, tform, size),
                                              detected_on=where))
                state.provenance.faces.append(FaceRecord(
                    index=k, box=[int(v) for v in det.box], score=det.score,
                    landmarks=[[float(x), float(y)] for x, y in det.points5], detected_on=where))

    # --- stage 3: enhancement, batched across items
    def _enhance(self, states: list[ItemState]) -> None:
        jobs = [(s, f) for s in states for f in s.faces]
        if not jobs:
            for s in states:
                self.skip(s, StageName.FACE_ENHANCEMENT, "no faces found")
            return
        import time

        t0 = time.perf_counter()
        try:
            net = self.models.get(self.role)
            bs = max(1, self.options.face_batch)
            for i in range(0, len(jobs), bs):
                chunk = jobs[i:i + bs]
                with torch.inference_mode():
                    out = net(face_to_tensor([f.aligned for _, f in chunk]).to(self.options.device))
                for (_, f), face in zip(chunk, tensor_to_faces(out)):
                    f.enhanced = face
            error = None
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        per_face = (time.perf_counter() - t0) / max(1, len(jobs))
        for s in states:
            if not s.faces:
                self.skip(s, StageName.FACE_ENHANCEMENT, "no faces found")
        with_faces = [s for s in states if s.faces]
        self.record_group(with_faces, StageName.FACE_ENHANCEMENT, [per_face * len(s.faces) for s in with_faces], error,
                          roles=(self.role,))

    # --- stage 4: blending
    def _maybe_put_back(self, state: ItemState, blended: np.ndarray, rec: FaceRecord, floor: float) -> None:
        """Do no harm: a face stage 1 smeared away (it kept less of the scan's face structure than `floor`)
        gets the scan's own face back."""
        defects = state.mask if state.use_scratch and state.mask is not None else None   # what stage 1 inpainted
        kept = F.structure_kept(state.decoded.pixels, state.restored, rec.box, defects)
        rec.structure_kept = round(kept, 3)
        rec.put_back = bool(kept < floor)
        if rec.put_back:
            cc = state.provenance.parameters.get("colour_correction")   # the scan's face gets the same global
            F.put_back(blended, state.decoded.pixels, rec.box,              # correction as the rest of the photo
                       colour=ColourAffine.from_dict(cc) if cc else None)
            rec.reason = (f"{rec.reason}; the scan's face was put back: stage 1 kept {kept:.2f} of its structure "
                          f"(< {floor:g})")

    def _blend(self, state: ItemState) -> None:
        if not state.faces:
            self.skip(state, StageName.BLENDING, "no faces found")
            return
        with self.step(state, StageName.BLENDING, device="cpu"):
            img8 = to_uint(state.restored, 8)
            scan8 = to_uint(state.decoded.pixels, 8) if state.decoded is not None else img8
            records = {r.index: r for r in state.provenance.faces}
            blended = state.restored
            min_agreement, strength, veto = self.operating_point()
            state.provenance.parameters.update(face_min_agreement_used=min_agreement, face_strength_used=strength)
            floor = self.options.face_min_structure
            floor = FACE_MIN_STRUCTURE if floor is None else floor
            if state.decoded is not None:
                state.provenance.parameters["face_min_structure_used"] = floor
            grey = state.decoded is not None and state.decoded.grey and not self.options.colour   # written grey
            for f in state.faces:
                rec = records[f.index]
                original = F.align_face(scan8, f.tform, state.face_size)
                agreement = F.face_agreement(original, F.match_histograms(f.enhanced, f.aligned), grey=grey)
                rec.agreement_db = round(agreement, 2)
                rec.applied = False
                if veto:
                    rec.reason = f"kept the original: {veto}"
                elif agreement < min_agreement:
                    rec.reason = (f"kept the original: the enhanced face disagrees with the scan at low frequency "
                                  f"({agreement:.1f} dB < {min_agreement:g} dB)")
                elif strength <= 0:
                    rec.reason = "kept the original: face strength 0"
                else:
                    F.blend_face(blended, img8, f.enhanced, f.tform, state.face_size, strength=strength)
                    rec.applied = True
                    rec.reason = (f"agrees with the scan at low frequency ({agreement:.1f} dB >= "
                                  f"{min_agreement:g} dB); strength {strength:g}")
                if not rec.applied and state.decoded is not None:
                    self._maybe_put_back(state, blended, rec, floor)
            state.restored = blended
