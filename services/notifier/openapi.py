"""The notifier's part of the OpenAPI document: no routes of its own (it consumes the job
stream), only the probes every service answers on its listeners."""

from ..shared.openapi import Fragment

FRAGMENT = Fragment("notifier", public={}, internal={})
