"""The notifier's own metrics (besides the HTTP ones every service has), on its internal port."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.jobs_taken = Counter("parley_notifier_jobs_taken_total",
                                  "Jobs taken from the stream, by how (read new, or claimed from a dead notifier).",
                                  ["how"], registry=registry)
        self.jobs_acknowledged = Counter("parley_notifier_jobs_acknowledged_total",
                                         "Jobs acknowledged (XACK) after the push service answered.", registry=registry)
        self.jobs_dropped = Counter("parley_notifier_jobs_dropped_total",
                                    "Jobs acknowledged without a push, by reason.", ["reason"], registry=registry)
        self.pushes = Counter("parley_notifier_pushes_total", "Pushes sent, by final outcome.", ["outcome"],
                              registry=registry)
        self.retries = Counter("parley_notifier_push_retries_total",
                               "Pushes sent again after a 429, a 5xx or no answer.", registry=registry)
        self.subscriptions_removed = Counter("parley_notifier_subscriptions_removed_total",
                                             "Subscriptions removed because the push service answered 404 or 410.",
                                             registry=registry)
        self.store_to_push = Histogram("parley_notifier_store_to_push_seconds",
                                       "From a message's storing to the push service's answer, per job.",
                                       registry=registry,
                                       buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.jobs_held = Gauge("parley_notifier_jobs_held", "Jobs this notifier holds, not yet acknowledged.",
                               registry=registry)
