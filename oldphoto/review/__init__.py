"""Curator review in the browser (`oldphoto review serve`): look at restored items, compare before and after,
approve, reject or ask for a reprocess, with every decision recorded in the catalog and as a PREMIS event.

- `app`: the FastAPI application (server-rendered pages, plain JavaScript in static/);
- `auth`: reviewers from $OLDPHOTO_REVIEWERS (hashed secrets), signed sessions, CSRF tokens;
- `images`: review images (thumbnail, before/after, mask overlay) made once per result and cached in DEST;
- `reprocess`: runs the reprocess requests queued by reviewers.
The catalog queries live in `oldphoto.catalog.review`.
"""
