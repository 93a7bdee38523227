"""Push notifications in a real browser (issue 18): the page asks for permission only after a
click, subscribes this browser through the server, reports its visibility, and its service
worker shows a pushed notification (delivered through the DevTools protocol, as a push service
would) with the sender, the text and a tag per conversation; a notification's link opens the
conversation."""

import asyncio
import json
from urllib.parse import urlsplit

import asyncpg
from playwright.async_api import expect

from tests.support import create_user

NOTIFICATIONS_SHOWN = """async () => {
  const registration = await navigator.serviceWorker.ready;
  return (await registration.getNotifications()).map((n) => ({title: n.title, body: n.body, tag: n.tag, icon: n.icon}));
}"""


async def test_permission_after_a_click_then_a_pushed_notification_is_shown(web_cluster, browser, shoot):
    url = web_cluster.gateway_url("a")
    origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    ada = await create_user(web_cluster.history_url, "ada-notify")
    grace = await create_user(web_cluster.history_url, "grace-notify")
    context = await browser.new_context()
    await context.add_cookies([{"name": "token", "value": grace.token, "domain": urlsplit(url).hostname, "path": "/"}])
    page = await context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    await expect(page.locator("#connection")).to_have_text("online")

    # Nothing asked yet: the button waits for a click.
    assert await page.evaluate("Notification.permission") == "default"
    button = page.locator("#notify-button")
    await expect(button).to_be_visible()
    await context.grant_permissions(["notifications"], origin=origin)
    # Playwright's grant covers notifications; Chromium asks a separate permission for push.
    cdp = await context.new_cdp_session(page)
    context_id = (await cdp.send("Target.getTargetInfo"))["targetInfo"]["browserContextId"]
    browser_cdp = await browser.new_browser_cdp_session()
    await browser_cdp.send("Browser.setPermission", {"permission": {"name": "push", "userVisibleOnly": True},
                                                     "setting": "granted", "origin": origin,
                                                     "browserContextId": context_id})
    await button.click()
    await expect(button).to_be_hidden()
    registration = await page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
    assert registration == origin + "/"
    # Headless Chromium here reaches no push service (Google's), so its pushManager.subscribe()
    # refuses ("Registration failed"); where it can, the page stores the subscription it got.
    # (The server side of subscribing is tested in tests/notifications with real key pairs.)
    database = await asyncpg.connect(web_cluster.stack.env["DATABASE_URL"])
    try:
        for _ in range(200):  # until the page stored it, or showed the browser's refusal
            endpoints = await database.fetch("SELECT endpoint FROM push_subscriptions WHERE user_id = $1", grace.id)
            refusal = await page.text_content("#sidebar-error")
            if endpoints or "Registration failed" in refusal:
                break
            await page.wait_for_timeout(25)
    finally:
        await database.close()
    assert endpoints or "Registration failed" in refusal
    assert all(row["endpoint"].startswith("https://") for row in endpoints)
    await shoot(page, "notifications-01-enabled")

    # A push, as the notifier sends it, delivered to the service worker by the browser itself.
    registrations = asyncio.Queue()
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda event: registrations.put_nowait(event["registrations"]))
    await cdp.send("ServiceWorker.enable")
    registration_id = None
    while registration_id is None:
        for entry in await asyncio.wait_for(registrations.get(), 10):
            if entry["scopeURL"] == origin + "/" and not entry["isDeleted"]:
                registration_id = entry["registrationId"]
    payload = {"title": "Ada-Notify", "body": "lunch at noon?", "icon": "https://example.com/ada.png",
               "tag": f"user:{ada.id}", "conversation": {"kind": "user", "id": ada.id}, "count": 1,
               "messageIds": ["1"]}
    await cdp.send("ServiceWorker.deliverPushMessage",
                   {"origin": origin, "registrationId": registration_id, "data": json.dumps(payload)})
    for _ in range(100):
        shown = await page.evaluate(NOTIFICATIONS_SHOWN)
        if shown:
            break
        await page.wait_for_timeout(50)  # the worker shows it on its own thread: poll its list
    assert shown == [{"title": "Ada-Notify", "body": "lunch at noon?", "tag": f"user:{ada.id}",
                      "icon": "https://example.com/ada.png"}]
    # A second push of the same conversation replaces it (one per conversation).
    await cdp.send("ServiceWorker.deliverPushMessage", {"origin": origin, "registrationId": registration_id,
                                                        "data": json.dumps({**payload, "body": "2 new messages from Ada-Notify", "count": 2})})
    for _ in range(100):
        shown = await page.evaluate(NOTIFICATIONS_SHOWN)
        if shown and shown[0]["body"].startswith("2 new"):
            break
        await page.wait_for_timeout(50)
    assert [n["body"] for n in shown] == ["2 new messages from Ada-Notify"]

    # A click on it: the page opens the conversation (the worker tells the open page). The
    # click is the worker's own event, dispatched in the worker (no DevTools call clicks one).
    [worker] = context.service_workers
    await worker.evaluate("""async () => {
      const [shown] = await self.registration.getNotifications();
      self.dispatchEvent(new NotificationEvent("notificationclick", {notification: shown}));
    }""")
    await expect(page.locator("#partner-name")).to_have_text("Ada-Notify")
    await shoot(page, "notifications-02-opened-by-click")

    # What a click opens when no page is: the conversation's link.
    await page.goto(url)
    await expect(page.locator("#connection")).to_have_text("online")
    await page.goto(f"{url}/?conversation=user:{ada.id}")
    await expect(page.locator("#partner-name")).to_have_text("Ada-Notify")
    assert errors == []
    await context.close()
