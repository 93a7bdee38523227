"""Emoji, reactions, replies and edits in two real browsers, one on each gateway node (issue 16),
under the page's strict Content-Security-Policy."""

from playwright.async_api import expect

from tests.browser.test_web_client import open_as_cookie, open_by_dev_sign_in
from tests.support import create_user


async def test_react_reply_and_edit_across_nodes(web_cluster, browser, shoot):
    suffix = web_cluster.history_url[-5:]
    ada = await create_user(web_cluster.history_url, "ada-rich" + suffix)
    grace = await create_user(web_cluster.history_url, "grace-rich" + suffix)
    errors, csp = [], []
    ada_context, ada_page = await open_by_dev_sign_in(browser, web_cluster.gateway_url("a"), ada)
    grace_context, grace_page = await open_as_cookie(browser, web_cluster.gateway_url("b"), grace)
    for page in (ada_page, grace_page):
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: csp.append(message.text) if "Content Security Policy" in message.text
                else None)
    await expect(grace_page.locator("#connection")).to_have_text("online")

    # Ada writes with an emoji from the picker (served from /vendor, its data too).
    await ada_page.fill("#start-name", grace.user_name)
    await ada_page.press("#start-name", "Enter")
    await ada_page.fill("#text", "Summit at noon ")
    await ada_page.click("#emoji-button")
    picker = ada_page.locator("emoji-picker")
    # The picker draws itself (its stylesheet admitted by hash) with its search box; with a colour
    # emoji font installed (scripts/system-deps.sh test) it shows the emoji, and a click picks one.
    await expect(picker.locator("input[type=search]")).to_be_visible(timeout=15000)
    picked = "🧗"
    await picker.locator("input[type=search]").fill("climbing")
    choice = picker.locator("button.emoji", has_text=picked).first
    await expect(choice).to_be_visible(timeout=10000)
    await shoot(ada_page, "rich-01-emoji-picker")
    assert csp == [], csp
    await choice.click()
    await expect(ada_page.locator("#text")).to_have_value(f"Summit at noon {picked}")
    if await picker.is_visible():
        await ada_page.click("#emoji-button")  # closes it
    await ada_page.press("#text", "Enter")
    sent = ada_page.locator(".message.mine").last
    await expect(sent.locator(".text")).to_have_text(f"Summit at noon {picked}")

    # Grace, on node b, reacts; Ada sees the count move, then adds hers: 2 on both sides.
    await grace_page.click(f'.conversation[data-partner="{ada.id}"]')
    received = grace_page.locator(".message").last
    await received.locator(".reaction.add").click()
    await received.locator(".reaction.quick", has_text="👍").click()
    await expect(received.locator(".reaction.mine")).to_have_text("👍 1")
    await expect(sent.locator(".reaction", has_text="👍")).to_have_text("👍 1")
    await sent.locator(".reaction", has_text="👍").click()
    await expect(sent.locator(".reaction.mine")).to_have_text("👍 2")
    await expect(received.locator(".reaction", has_text="👍")).to_have_text("👍 2")
    await shoot(grace_page, "rich-02-reaction-counts")

    # Grace replies: the quote shows above her composer, then in both threads.
    await received.locator("button.reply").click()
    await expect(grace_page.locator("#compose-context-text")).to_have_text(f"Summit at noon {picked}")
    await grace_page.fill("#text", "I'll bring the rope")
    await grace_page.press("#text", "Enter")
    reply_at_ada = ada_page.locator(".message").last
    await expect(reply_at_ada.locator(".quote-text")).to_have_text(f"Summit at noon {picked}")
    await expect(reply_at_ada.locator(".text")).to_have_text("I'll bring the rope")
    await shoot(ada_page, "rich-03-reply")

    # Ada edits her message; Grace sees the new text, marked edited, and her reply's quote follows on reload.
    await sent.locator("button.edit").click()
    await ada_page.fill("#text", "Summit at one")
    await ada_page.press("#text", "Enter")
    edited_at_grace = grace_page.locator(".message", has_text="Summit at one").first
    await expect(edited_at_grace.locator(".text")).to_have_text("Summit at one")
    await expect(edited_at_grace.locator(".edited")).to_have_text("edited")
    await expect(edited_at_grace.locator(".reaction", has_text="👍")).to_have_text("👍 2")
    await shoot(grace_page, "rich-04-edited")

    assert errors == []
    assert csp == [], "the page's CSP refused something the client needs"
    await ada_context.close()
    await grace_context.close()
