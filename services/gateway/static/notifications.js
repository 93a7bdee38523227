// Notifications (issue 18): the page tells the server when it is visible (`visibility`), so the
// user is pushed only while no tab of theirs is looked at; and, after a click on "Notify me"
// (never unprompted), it subscribes this browser to Web Push and registers the service worker
// that shows what is pushed (/sw.js).

import { $, api, notice } from "./util.js";

const supported = () => "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;

/** `visibility {visible}` now and on every change of the page's visibility. */
export function reportVisibility(socket) {
  const send = () => socket.emit("visibility", { visible: document.visibilityState === "visible" });
  socket.on("connect", send);
  document.addEventListener("visibilitychange", send);
}

function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((base64url.length + 3) % 4);
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

/** Registers the worker and stores this browser's subscription as the user's. */
export async function subscribe() {
  const registration = await navigator.serviceWorker.register("/sw.js");
  await navigator.serviceWorker.ready;
  let subscription = await registration.pushManager.getSubscription();
  if (!subscription) {
    const { body } = await api("/api/push/vapid-public-key");
    subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true, applicationServerKey: keyBytes(body.publicKey),
    });
  }
  await api("/api/push/subscriptions", { method: "POST", body: JSON.stringify(subscription.toJSON()) });
  return subscription;
}

function showButton(button) {
  const granted = Notification.permission === "granted";
  button.hidden = granted || Notification.permission === "denied";
}

/** The "Notify me" button (the permission prompt only follows its click); a browser that
 *  already granted it is subscribed again quietly (the server refreshes the row). */
export function setupNotifications(openConversation) {
  const button = $("notify-button");
  if (!supported()) return;
  navigator.serviceWorker.addEventListener("message", (event) => {
    if (event.data && event.data.type === "open-conversation" && event.data.conversation) {
      openConversation(event.data.conversation);
    }
  });
  showButton(button);
  button.addEventListener("click", async () => {
    try {
      const permission = await Notification.requestPermission();
      if (permission === "granted") await subscribe();
    } catch (error) {
      notice("sidebar-error", `Notifications: ${error.message}`);
    }
    showButton(button);
  });
  if (Notification.permission === "granted") subscribe().catch(() => {});
}

/** The conversation a notification's click asked for (`/?conversation=user:<id>`), once. */
export function conversationFromUrl() {
  const key = new URLSearchParams(location.search).get("conversation");
  if (key) history.replaceState(null, "", "/");
  return key && /^(user|group):[A-Za-z0-9_.-]{1,64}$/.test(key) ? key : null;
}
