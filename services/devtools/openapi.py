"""The whole OpenAPI document, gathered from every service's fragment, and the file history serves.

History imports no other service, so it serves this document as a file written here:
`python -m services.devtools.openapi` after changing a route or a payload
(tests/unit/test_openapi.py fails, naming this command, while the file is stale).
"""

import json

from ..gateway.openapi import FRAGMENT as GATEWAY
from ..history.openapi import FRAGMENT as HISTORY
from ..history.openapi import OPENAPI_DOCUMENT
from ..media.openapi import FRAGMENT as MEDIA
from ..notifier.openapi import FRAGMENT as NOTIFIER
from ..presence.openapi import FRAGMENT as PRESENCE
from ..shared.openapi import Fragment, assemble

# The probes (/healthz, /readyz, /metrics) are one entry each in the document: the last fragment's
# summary stands, presence's, as it did before the fragments.
FRAGMENTS: dict[str, Fragment] = {fragment.service: fragment for fragment in (HISTORY, GATEWAY, MEDIA, NOTIFIER, PRESENCE)}
REGENERATE = "python -m services.devtools.openapi"


def openapi_document() -> dict:
    return assemble(list(FRAGMENTS.values()))


def document_text() -> str:
    return json.dumps(openapi_document(), indent=1) + "\n"


def main() -> None:
    OPENAPI_DOCUMENT.write_text(document_text())
    print(f"wrote {OPENAPI_DOCUMENT}")


if __name__ == "__main__":
    main()
