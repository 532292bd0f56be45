"""Preflight: every object is checked, and fixed where it can be, before any paid call.

* :mod:`.checks` - sniff the real format, bound size and pixels, plan the decode from the header,
  convert to what Rekognition (or the local model) accepts, or reject with a reason;
* :mod:`.prepared` - :class:`~.prepared.PreparedImage`, what preflight hands to a labeler;
* :mod:`.decode_budget` - how many large decodes one process runs at once.

May import: settings, errors, fingerprints (the pHash is taken from what preflight decoded),
documents.
"""

from __future__ import annotations
