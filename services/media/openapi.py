"""Media's part of the OpenAPI document: the attachment routes (issue 16), reached through a gateway."""

from ..shared.attachments import AttachmentOut
from ..shared.limits import ATTACHMENT_ID_PATTERN
from ..shared.openapi import Fragment, error_answers, json_answer, param, public_operation, schema_ref

ATTACHMENT_ID = param("attachmentId", "path", "The attachment", {"type": "string", "pattern": ATTACHMENT_ID_PATTERN},
                      required=True)
REDIRECT = {"description": "To a short-lived signed link of the bytes (`?redirect=false`: the link as JSON)"}
BYTES = {"description": "The bytes, with their stored type, Content-Disposition and nosniff",
         "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}

PUBLIC_PATHS = {
    "/api/attachments": {
        "post": {
            **public_operation("Upload one file (multipart, field `file`, at most MAX_ATTACHMENT_BYTES)",
                               {"201": json_answer(schema_ref(AttachmentOut), "Stored")},
                               statuses=(400, 401, 429, 503)),
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}}}}}},
        }
    },
    "/api/attachments/{attachmentId}": {
        "get": public_operation("Download (a member of its conversation, or its uploader before sending)",
                                {"302": REDIRECT}, [ATTACHMENT_ID], statuses=(400, 401, 404, 429, 503))
    },
    "/api/attachments/{attachmentId}/thumbnail": {
        "get": public_operation("An image's thumbnail (longest side 320 px)", {"302": REDIRECT}, [ATTACHMENT_ID],
                                statuses=(400, 401, 404, 429, 503))
    },
    "/api/attachments/{attachmentId}/content": {
        "get": {
            "summary": "The bytes, by signed link (no token); single byte ranges",
            "security": [{"signedLink": []}],
            "parameters": [ATTACHMENT_ID, param("variant", "query", "full or thumbnail", required=True),
                           param("expires", "query", "Unix time", required=True),
                           param("signature", "query", "HMAC of the three", required=True),
                           param("Range", "header", "bytes=start-end")],
            "responses": {"200": BYTES, "206": BYTES, "403": json_answer({"$ref": "#/components/schemas/Error"},
                                                                           "Invalid or expired link"),
                          "416": {"description": "Range not satisfiable"}, **error_answers(400, 404, 503)},
        }
    },
}

FRAGMENT = Fragment("media", public=PUBLIC_PATHS, internal={}, models=(AttachmentOut,))
