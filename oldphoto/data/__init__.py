"""Training/test data: pinned registry sources, fetching, texture decoding and the split manifest."""
from oldphoto.data.dataset import (DataNotFetchedError, PhotoDataset, PhotoRecord, builtin_photos, center_crop,
                                   held_out_face_photos, load_manifest, load_rgb, load_splits, make_splits,
                                   real_old_photo, real_old_photos, split_photos, held_out_photos)
from oldphoto.data.textures import TextureBank

__all__ = ["DataNotFetchedError", "PhotoDataset", "PhotoRecord", "TextureBank", "builtin_photos", "center_crop",
           "held_out_face_photos", "load_manifest", "load_rgb", "load_splits", "make_splits", "real_old_photo",
           "real_old_photos", "split_photos", "held_out_photos"]
