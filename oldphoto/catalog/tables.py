"""The catalog's tables as SQLAlchemy Core tables (the ORM classes of `oldphoto.catalog.models` define them)."""
from __future__ import annotations

from oldphoto.catalog import models as m

items_t = m.Item.__table__
results_t = m.ItemResult.__table__
runs_t = m.Run.__table__
coll_t = m.Collection.__table__
stages_t = m.StageResult.__table__
ckpt_t = m.StageCheckpoint.__table__
arts_t = m.Artefact.__table__
masks_t = m.Mask.__table__
faces_t = m.Face.__table__
events_t = m.Event.__table__
CHILD_TABLES = (ckpt_t, stages_t, arts_t, masks_t, faces_t, events_t)   # delete order
