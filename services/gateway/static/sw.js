// Parley's service worker (issue 18): shows the notifications the notifier pushes, one per
// conversation (its tag), and opens that conversation when one is clicked. Served at /sw.js so
// its scope is the whole page. The payload (services/notifier/consumer.py, `notification`):
// {title, body, icon, tag, conversation: {kind, id}, count, messageIds}.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let payload = {};
  try {
    payload = event.data ? event.data.json() : {};
  } catch {
    payload = {};
  }
  const title = typeof payload.title === "string" && payload.title ? payload.title : "Parley";
  const options = {
    body: typeof payload.body === "string" && payload.body ? payload.body : "New message",
    tag: typeof payload.tag === "string" ? payload.tag : "parley",
    renotify: true, // a newer notification of the same conversation alerts again
    data: { conversation: typeof payload.tag === "string" ? payload.tag : null },
  };
  if (typeof payload.icon === "string" && /^https?:\/\//.test(payload.icon)) options.icon = payload.icon;
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const conversation = event.notification.data && event.notification.data.conversation;
  const url = conversation ? `/?conversation=${encodeURIComponent(conversation)}` : "/";
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of windows) {
      if (new URL(client.url).origin === self.location.origin) {
        client.postMessage({ type: "open-conversation", conversation });
        return client.focus();
      }
    }
    return self.clients.openWindow(url);
  })());
});
