"""Search: the questions asked of the ``images`` alias.

* :mod:`.queries` - labels (with synonyms and confidence), "like", describe an image, top
  labels, pages and presigned links;
* :mod:`.similarity` - "more like this" and near-duplicate groups from the stored fingerprints.

May import: everything below: documents, fingerprints, preflight and labelers (an example
image is prepared and labeled the same way as an indexed one), engine.
"""

from __future__ import annotations
