"""Three people in one group, in three browsers on two gateway nodes (issue 15's web client).

Ada (node A) creates a group with Grace (node B) and Alan (node A), messages, sees receipts and
typing, removes and re-adds Alan; Grace leaves. Every step is a screenshot
under .run/test/screenshots/groups-*.png.
"""

import asyncio
import re

from playwright.async_api import expect

from tests.browser.test_web_client import XSS, open_as_cookie
from tests.support import create_user

GROUP_NAME = f"Analytical Engine {XSS}"  # a group's name is user text too: it must stay text
REMOVED = re.compile(r"\bremoved\b")


async def signed_in(browser, url, user, errors):
    context, page = await open_as_cookie(browser, url, user)
    page.on("pageerror", lambda error: errors.append(f"{user.user_name}: {error}"))
    page.on("dialog", lambda dialog: errors.append(f"{user.user_name}: dialog {dialog.message}"))
    await expect(page.locator("#connection")).to_have_text("online")
    return context, page


async def test_a_group_of_three_across_two_nodes(web_cluster, browser, shoot):
    suffix = web_cluster.history_url[-5:]
    ada = await create_user(web_cluster.history_url, "adagrp" + suffix)
    grace = await create_user(web_cluster.history_url, "gracegrp" + suffix)
    alan = await create_user(web_cluster.history_url, "alangrp" + suffix)
    ada_name, grace_name, alan_name = (user.user_name.title() for user in (ada, grace, alan))  # create_user's display names
    errors = []
    ada_context, ada_page = await signed_in(browser, web_cluster.gateway_url("a"), ada, errors)
    grace_context, grace_page = await signed_in(browser, web_cluster.gateway_url("b"), grace, errors)
    alan_context, alan_page = await signed_in(browser, web_cluster.gateway_url("a"), alan, errors)

    # Ada creates the group: a name, and Grace and Alan by user name.
    await ada_page.click("#new-group")
    await ada_page.fill("#group-name", GROUP_NAME)
    for member in (grace, alan):
        await ada_page.fill("#group-member-name", member.user_name)
        await ada_page.press("#group-member-name", "Enter")
        await expect(ada_page.locator(f'#group-chosen [data-user="{member.id}"]')).to_be_visible()
    await shoot(ada_page, "groups-01-new-group-dialog")
    await ada_page.click("#group-create")
    await expect(ada_page.locator("#partner-name")).to_have_text(GROUP_NAME)
    await expect(ada_page.locator("#partner-status")).to_have_text("3 members")
    group_id = await ada_page.locator(".conversation.group").get_attribute("data-group")
    assert group_id and group_id.isdigit()

    # Ada sends; Grace (node B) and Alan (node A) receive it live, with Ada's name and a badge.
    await ada_page.fill("#text", "Hello, both of you")
    await ada_page.press("#text", "Enter")
    await expect(ada_page.locator(".message.mine .status")).to_have_text(["sent"])
    for page in (grace_page, alan_page):
        entry = page.locator(f'.conversation[data-group="{group_id}"]')
        await expect(entry.locator(".title")).to_have_text(GROUP_NAME)
        await expect(entry.locator(".count")).to_have_text("3 members")
        await expect(entry.locator(".last")).to_have_text(f"{ada_name}: Hello, both of you")
        await expect(entry.locator(".badge")).to_have_text("1")
    await shoot(grace_page, "groups-02-received-in-the-list")

    # Grace opens the group: Ada's message shows with her name and avatar, and Ada sees "read by 1".
    await grace_page.locator(f'.conversation[data-group="{group_id}"]').click()
    received = grace_page.locator(".message.from-member")
    await expect(received.locator(".sender")).to_have_text([ada_name])
    await expect(received.locator(".text")).to_have_text(["Hello, both of you"])
    await expect(received.locator("img.sender-avatar")).to_have_count(1)
    await expect(grace_page.locator(f'.conversation[data-group="{group_id}"] .badge')).to_have_count(0)
    await expect(ada_page.locator(".message.mine .status")).to_have_text(["read by 1"])
    await shoot(grace_page, "groups-03-thread-with-sender-names")
    await shoot(ada_page, "groups-04-read-by-1")

    # Grace types: Ada sees "Grace... is typing...", then the member count again when she stops.
    await grace_page.type("#text", "Typing away", delay=30)
    await expect(ada_page.locator("#partner-status")).to_have_text(f"{grace_name} is typing...")
    await shoot(ada_page, "groups-05-typing")
    await expect(ada_page.locator("#partner-status")).to_have_text("3 members", timeout=10000)
    await grace_page.press("#text", "Enter")
    await expect(ada_page.locator(".message.from-member .text")).to_have_text(["Typing away"])

    # Ada, an admin, removes Alan from the members panel; everyone's count drops to 2.
    await alan_page.locator(f'.conversation[data-group="{group_id}"]').click()
    await expect(alan_page.locator(".message .text")).to_have_text(["Hello, both of you", "Typing away"])

    # Grace reloads (her page throttles `typing` to one per two seconds; a fresh page has sent none):
    # the group and its history are still there.
    await grace_page.reload()
    await grace_page.locator(f'.conversation[data-group="{group_id}"]').click()
    await expect(grace_page.locator(".message .text")).to_have_text(["Hello, both of you", "Typing away"])

    # Grace and Alan type at once: Ada sees both names.
    both = re.compile(f"^({grace_name} and {alan_name}|{alan_name} and {grace_name}) are typing\\.\\.\\.$")
    await asyncio.gather(grace_page.type("#text", "me too", delay=40), alan_page.type("#text", "and me", delay=40),
                         expect(ada_page.locator("#partner-status")).to_have_text(both))
    await shoot(ada_page, "groups-06-two-typing")
    await ada_page.click("#members-button")
    members = ada_page.locator("#members-list .member")
    await expect(members).to_have_count(3)
    await expect(ada_page.locator(f'#members-list [data-user="{ada.id}"] .role')).to_have_text("admin")
    await shoot(ada_page, "groups-07-members-panel")
    await ada_page.locator(f'#members-list [data-user="{alan.id}"] .member-remove').click()
    await expect(members).to_have_count(2)
    await expect(ada_page.locator("#partner-status")).to_have_text("2 members")
    await expect(grace_page.locator(f'.conversation[data-group="{group_id}"] .count')).to_have_text("2 members")

    # Alan sees it: the group greyed out, "You were removed", and no composer to send with.
    alan_entry = alan_page.locator(f'.conversation[data-group="{group_id}"]')
    await expect(alan_entry).to_have_class(REMOVED)
    await expect(alan_entry.locator(".last")).to_have_text("You were removed")
    await expect(alan_page.locator("#removed-note")).to_be_visible()
    await expect(alan_page.locator("#composer")).to_be_hidden()
    await shoot(alan_page, "groups-08-removed")

    # Nor can he send by hand: the server refuses a removed member.
    refused = await alan_page.evaluate(
        """(groupId) => new Promise((resolve) => {
             const token = document.cookie.split("; ").find((part) => part.startsWith("token=")).slice(6);
             const socket = io({ auth: { token }, transports: ["websocket"] });
             socket.emit("sendMessage", { groupId, text: "still here?" }, (ack) => { socket.close(); resolve(ack); });
           })""",
        group_id,
    )
    assert refused["ok"] is False and refused["error"]["code"] == "not_a_member", refused

    # Ada adds Alan back by user name: his group comes back to life.
    await ada_page.fill("#add-member-name", alan.user_name)
    await ada_page.press("#add-member-name", "Enter")
    await expect(members).to_have_count(3)
    await expect(alan_page.locator("#composer")).to_be_visible()
    await expect(alan_entry).not_to_have_class(REMOVED)
    await shoot(alan_page, "groups-09-added-back")

    # Grace leaves (two clicks): the group is gone from her list, and Ada's panel shows two members.
    await grace_page.click("#members-button")
    await grace_page.click("#leave-group")
    await expect(grace_page.locator("#leave-group")).to_have_text("Click again to leave")
    await grace_page.click("#leave-group")
    await expect(grace_page.locator(f'.conversation[data-group="{group_id}"]')).to_have_count(0)
    await expect(grace_page.locator("#partner-name")).to_have_text("Pick a conversation")
    await expect(members).to_have_count(2)
    await expect(ada_page.locator("#partner-status")).to_have_text("2 members")
    await shoot(ada_page, "groups-10-after-grace-left")

    # Nothing ran from the group's name or the messages.
    assert await ada_page.locator("#messages img:not(.sender-avatar)").count() == 0
    assert errors == []
    for context in (ada_context, grace_context, alan_context):
        await context.close()
