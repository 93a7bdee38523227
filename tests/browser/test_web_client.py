"""Two people chat in two browsers, one on each gateway node, as the original guide's client would."""

from urllib.parse import urlsplit

from playwright.async_api import expect

from tests.support import create_user

XSS = "<img src=x onerror=alert(1)>"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


async def open_as_cookie(browser, url: str, user, viewport=DESKTOP):
    """The social app's way: the token is already in the `token` cookie."""
    context = await browser.new_context(viewport=viewport)
    await context.add_cookies([{"name": "token", "value": user.token, "domain": urlsplit(url).hostname, "path": "/"}])
    page = await context.new_page()
    await page.goto(url)
    return context, page


async def open_by_dev_sign_in(browser, url: str, user, viewport=DESKTOP):
    """Development mode: pick a user on the sign-in page."""
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    await page.goto(url)
    await page.fill("#signin-name", user.user_name)
    await page.click("#signin-form button")
    await expect(page.locator("#me")).to_have_text(f"@{user.user_name}")
    return context, page


async def test_two_people_chat_across_nodes_in_real_browsers(web_cluster, browser, shoot):
    ada = await create_user(web_cluster.history_url, "ada" + web_cluster.history_url[-5:])
    grace = await create_user(web_cluster.history_url, "grace" + web_cluster.history_url[-5:])
    errors = []
    ada_context, ada_page = await open_by_dev_sign_in(browser, web_cluster.gateway_url("a"), ada)
    grace_context, grace_page = await open_as_cookie(browser, web_cluster.gateway_url("b"), grace)
    for page in (ada_page, grace_page):
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    await expect(grace_page.locator("#connection")).to_have_text("online")
    await shoot(ada_page, "01-signed-in")

    # Ada starts a chat by user name and sends; Grace, on the other node, receives it live.
    await ada_page.fill("#start-name", grace.user_name)
    await ada_page.press("#start-name", "Enter")
    await expect(ada_page.locator("#partner-name")).to_have_text(grace.user_name.title())
    await ada_page.fill("#text", "Hello Grace, from node A")
    await ada_page.press("#text", "Enter")
    await expect(ada_page.locator(".message.mine .text")).to_have_text(["Hello Grace, from node A"])
    conversation = grace_page.locator(f'.conversation[data-partner="{ada.id}"]')
    await expect(conversation.locator(".last")).to_have_text("Hello Grace, from node A")
    await expect(conversation.locator(".badge")).to_have_text("1")
    await shoot(grace_page, "02-received-with-unread-badge")

    # Online dots: each sees the other online.
    await expect(conversation.locator(".dot")).to_have_class("dot online")

    # Grace opens the chat: the message is read, and Ada's side says so.
    await conversation.click()
    await expect(grace_page.locator(".message .text")).to_have_text(["Hello Grace, from node A"])
    await expect(ada_page.locator(".message.mine .status")).to_have_text(["read"])
    await shoot(ada_page, "03-read-receipt")

    # Grace types: Ada sees "typing...", cleared when Grace stops.
    await grace_page.type("#text", "Hi Ada", delay=30)
    await expect(ada_page.locator("#partner-status")).to_have_text("typing...")
    await shoot(ada_page, "04-typing")
    await expect(ada_page.locator("#partner-status")).to_have_text("online", timeout=10000)

    # Grace sends the XSS string: it shows as text, nothing runs, no <img> is made.
    await grace_page.fill("#text", XSS)
    await grace_page.press("#text", "Enter")
    await expect(ada_page.locator(".message:not(.mine) .text")).to_have_text([XSS])
    assert await ada_page.locator(".messages img").count() == 0
    await shoot(ada_page, "05-xss-stays-text")

    # A reload keeps the history.
    await grace_page.reload()
    await grace_page.locator(f'.conversation[data-partner="{ada.id}"]').click()
    await expect(grace_page.locator(".message .text")).to_have_text(["Hello Grace, from node A", XSS])
    await shoot(grace_page, "06-history-after-reload")

    # Ada closes her browser: Grace's online dot goes off.
    await ada_context.close()
    await expect(grace_page.locator(f'.conversation[data-partner="{ada.id}"] .dot')).to_have_class("dot", timeout=10000)
    await expect(grace_page.locator("#partner-status")).to_have_text("offline")
    await shoot(grace_page, "07-partner-offline")

    assert errors == []
    await grace_context.close()


async def test_phone_viewport_search_delete_and_older_pages(web_cluster, browser, shoot):
    ada = await create_user(web_cluster.history_url, "adaphone" + web_cluster.history_url[-5:])
    grace = await create_user(web_cluster.history_url, "gracephone" + web_cluster.history_url[-5:])
    context, page = await open_as_cookie(browser, web_cluster.gateway_url("a"), ada, viewport=PHONE)
    await expect(page.locator("#connection")).to_have_text("online")
    await page.fill("#start-name", grace.user_name)
    await page.press("#start-name", "Enter")
    await expect(page.locator("#composer")).to_be_visible()
    for number in range(45):  # more than one page (30)
        await page.fill("#text", f"note {number}")
        await page.press("#text", "Enter")
    await expect(page.locator(".message.mine")).to_have_count(45)
    await expect(page.locator(".message.mine .status").last).not_to_have_text("sending")
    assert await page.locator("#sidebar-error").text_content() == "", "no event was refused"
    await shoot(page, "08-phone-chat")

    # Back on the list, reopen: the newest page, then older ones on scrolling up.
    await page.click("#back")
    await expect(page.locator("#conversations")).to_be_visible()
    await shoot(page, "09-phone-list")
    await page.locator(f'.conversation[data-partner="{grace.id}"]').click()
    await expect(page.locator(".message.mine")).to_have_count(30)
    for _ in range(10):
        await page.locator("#messages").evaluate("list => list.scrollTop = 0")
        await page.wait_for_timeout(200)
        if await page.locator(".message.mine").count() == 45:
            break
    await expect(page.locator(".message.mine .text").first).to_have_text("note 0")

    # Delete one: it disappears here (and for the partner).
    target = page.locator(".message.mine", has_text="note 44")
    await target.locator(".delete").click()
    await expect(page.locator(".message.mine")).to_have_count(44)

    # Search, from the list.
    await page.click("#back")
    await page.fill("#search-q", "note 7")
    await page.press("#search-q", "Enter")
    await expect(page.locator("#search-results li").first).to_contain_text("note 7")
    await shoot(page, "10-phone-search")
    await context.close()


async def test_the_page_reconnects_and_catches_up_without_duplicates(web_cluster, browser, shoot):
    ada = await create_user(web_cluster.history_url, "adarec" + web_cluster.history_url[-5:])
    grace = await create_user(web_cluster.history_url, "gracerec" + web_cluster.history_url[-5:])
    context, page = await open_as_cookie(browser, web_cluster.gateway_url("b"), grace)
    await expect(page.locator("#connection")).to_have_text("online")
    sender_context, sender = await open_as_cookie(browser, web_cluster.gateway_url("a"), ada)
    await sender.fill("#start-name", grace.user_name)
    await sender.press("#start-name", "Enter")
    await sender.fill("#text", "before the drop")
    await sender.press("#text", "Enter")
    await page.locator(f'.conversation[data-partner="{ada.id}"]').click()
    await expect(page.locator(".message .text")).to_have_text(["before the drop"])

    await context.set_offline(True)  # the network drops
    await page.evaluate("window.dispatchEvent(new Event('offline'))")
    await expect(page.locator("#connection")).to_have_text("reconnecting...")  # the page saw the drop
    for text in ("while you were away 1", "while you were away 2"):
        await sender.fill("#text", text)
        await sender.press("#text", "Enter")
    await expect(sender.locator(".message.mine .status")).not_to_have_text(["sending"] * 3)
    await context.set_offline(False)

    await expect(page.locator(".message .text")).to_have_text(
        ["before the drop", "while you were away 1", "while you were away 2"], timeout=20000)
    await shoot(page, "11-caught-up-after-reconnect")
    await context.close()
    await sender_context.close()
