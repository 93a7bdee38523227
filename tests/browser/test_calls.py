"""Voice and video calls in real browsers (issue 17): Chromium with fake camera and microphone,
Ada on gateway node a, Grace on node b; the media flows between the two pages over WebRTC, and
Parley relays the signalling across the nodes. Screenshots of each step in
.run/test/screenshots/calls-*.png."""

import re
from urllib.parse import urlsplit

from playwright.async_api import expect

from tests.support import TEST_RUN_DIR, create_user, eventually, running_cluster
from tests.turn_client import running_turnserver

DESKTOP = {"width": 1280, "height": 800}
CONNECTED_TIMEOUT_MS = 20_000


TURN_SECRET = "browser-test-turn-shared-secret-0123456789abcdef"


async def open_page(context, url: str, user):
    await context.add_cookies([{"name": "token", "value": user.token, "domain": urlsplit(url).hostname, "path": "/"}])
    page = await context.new_page()
    await page.goto(url)
    await expect(page.locator("#connection")).to_have_text("online")
    return page


async def open_as(browser, url: str, user):
    context = await browser.new_context(viewport=DESKTOP)
    return context, await open_page(context, url, user)


def watch_errors(errors: list, *pages) -> None:
    for page in pages:
        page.on("pageerror", lambda error: errors.append(str(error)))


async def chat_with(page, partner) -> None:
    await page.fill("#start-name", partner.user_name)
    await page.press("#start-name", "Enter")
    await expect(page.locator("#partner-name")).to_have_text(partner.user_name.title())


async def plays_frames(page, selector: str) -> None:
    """The video element shows frames: it has a size and its time moves on (waited for, not slept)."""
    await page.wait_for_function(
        "(s) => { const v = document.querySelector(s); return v && v.videoWidth > 0 && v.currentTime > 0; }",
        arg=selector, timeout=CONNECTED_TIMEOUT_MS)
    start = await page.evaluate("(s) => document.querySelector(s).currentTime", selector)
    await page.wait_for_function("([s, t]) => document.querySelector(s).currentTime > t + 0.5",
                                 arg=[selector, start], timeout=CONNECTED_TIMEOUT_MS)


async def test_ada_on_node_a_video_calls_grace_on_node_b(web_cluster, call_browser, shoot):
    suffix = web_cluster.history_url[-5:]
    ada = await create_user(web_cluster.history_url, "ada" + suffix + "c")
    grace = await create_user(web_cluster.history_url, "grace" + suffix + "c")
    errors: list[str] = []
    ada_context, ada_page = await open_as(call_browser, web_cluster.gateway_url("a"), ada)
    grace_context, grace_page = await open_as(call_browser, web_cluster.gateway_url("b"), grace)
    watch_errors(errors, ada_page, grace_page)
    try:
        await chat_with(ada_page, grace)
        await expect(ada_page.locator("#call-buttons")).to_be_visible()
        await shoot(ada_page, "calls-01-chat-with-call-buttons")

        await ada_page.click("#call-video")
        await expect(ada_page.locator("#call-title")).to_have_text(f"Calling {grace.user_name.title()}")
        await expect(grace_page.locator("#call-title")).to_have_text(f"{ada.user_name.title()} is calling")
        await expect(grace_page.locator("#call-status")).to_have_text("Incoming video call")
        await expect(grace_page.locator("#call-accept")).to_be_visible()
        await shoot(ada_page, "calls-02-ada-ringing")
        await shoot(grace_page, "calls-03-grace-incoming")

        await grace_page.click("#call-accept")
        for page in (ada_page, grace_page):
            await expect(page.locator("#call")).to_have_attribute("data-connection", "connected",
                                                                  timeout=CONNECTED_TIMEOUT_MS)
        await plays_frames(grace_page, "#remote-video")
        await plays_frames(ada_page, "#remote-video")
        await expect(grace_page.locator("#call-duration")).not_to_have_text("0:00", timeout=5000)
        await shoot(grace_page, "calls-04-grace-in-call")
        await shoot(ada_page, "calls-05-ada-in-call")

        # Mute and camera off act on Ada's own tracks.
        await ada_page.click("#call-mute")
        await ada_page.click("#call-camera")
        await expect(ada_page.locator("#call-mute")).to_have_attribute("aria-pressed", "true")
        tracks = await ada_page.evaluate(
            "() => document.getElementById('local-video').srcObject.getTracks().map((t) => [t.kind, t.enabled])")
        assert sorted(tracks) == [["audio", False], ["video", False]]
        await shoot(ada_page, "calls-06-ada-muted-camera-off")

        await ada_page.click("#call-hangup")
        for page in (ada_page, grace_page):
            await expect(page.locator("#call-status")).to_have_text("Call ended")
        await shoot(grace_page, "calls-07-grace-call-ended")

        # Both threads show the call.
        await expect(ada_page.locator(".message.call-message.video .text")).to_have_text([
            re.compile(r"^Video call \(0:\d\d\)$")])
        await grace_page.locator(f'.conversation[data-partner="{ada.id}"]').click()
        await expect(grace_page.locator(".message.call-message .text")).to_have_count(1)
        await expect(grace_page.locator("#call")).to_be_hidden()
        await shoot(grace_page, "calls-08-grace-thread-with-call")
        assert errors == []
    finally:
        await ada_context.close()
        await grace_context.close()


async def test_grace_with_two_tabs_accepts_in_one_and_the_other_stops_ringing(web_cluster, call_browser, shoot):
    suffix = web_cluster.history_url[-5:]
    ada = await create_user(web_cluster.history_url, "ada" + suffix + "t")
    grace = await create_user(web_cluster.history_url, "grace" + suffix + "t")
    errors: list[str] = []
    ada_context, ada_page = await open_as(call_browser, web_cluster.gateway_url("a"), ada)
    grace_context, grace_tab = await open_as(call_browser, web_cluster.gateway_url("b"), grace)
    other_tab = await open_page(grace_context, web_cluster.gateway_url("a"), grace)  # her second tab, node a
    watch_errors(errors, ada_page, grace_tab, other_tab)
    try:
        await chat_with(ada_page, grace)
        await ada_page.click("#call-audio")
        for tab in (grace_tab, other_tab):
            await expect(tab.locator("#call-status")).to_have_text("Incoming audio call")
        await shoot(other_tab, "calls-09-second-tab-ringing")

        await grace_tab.click("#call-accept")
        await expect(other_tab.locator("#call-status")).to_have_text("Answered on another device")
        await expect(other_tab.locator("#call-accept")).to_be_hidden()
        await shoot(other_tab, "calls-10-second-tab-answered-elsewhere")
        for page in (ada_page, grace_tab):
            await expect(page.locator("#call")).to_have_attribute("data-connection", "connected",
                                                                  timeout=CONNECTED_TIMEOUT_MS)
        await expect(other_tab.locator("#call")).to_be_hidden()
        assert await other_tab.locator("#call").get_attribute("data-connection") == "new"  # never took part

        await grace_tab.click("#call-hangup")
        await expect(ada_page.locator("#call-status")).to_have_text("Call ended")

        # A call Ada gives up before anyone answers is a missed call in Grace's thread.
        await expect(ada_page.locator("#call")).to_be_hidden()
        await ada_page.click("#call-audio")
        await expect(other_tab.locator("#call-status")).to_have_text("Incoming audio call")
        await ada_page.click("#call-hangup")
        await expect(other_tab.locator("#call-status")).to_have_text("Call ended")
        await other_tab.locator(f'.conversation[data-partner="{ada.id}"]').click()
        await expect(other_tab.locator(".message.call-message.unanswered .text")).to_have_text(["Missed audio call"])
        await shoot(other_tab, "calls-11-missed-call-in-thread")

        # Declined on one tab: Ada hears it, the other tab stops ringing, the thread says so.
        await expect(ada_page.locator("#call")).to_be_hidden()
        await ada_page.click("#call-video")
        for tab in (grace_tab, other_tab):
            await expect(tab.locator("#call-status")).to_have_text("Incoming video call")
        await grace_tab.click("#call-decline")
        await expect(ada_page.locator("#call-status")).to_have_text("Declined")
        await expect(other_tab.locator("#call-status")).to_have_text("Declined")
        await expect(other_tab.locator(".message.call-message.unanswered .text")).to_have_text(
            ["Missed audio call", "Declined video call"])
        assert errors == []
    finally:
        await ada_context.close()
        await grace_context.close()


async def test_a_relay_only_call_flows_through_a_real_coturn_with_the_gateways_credentials(stores, call_browser,
                                                                                          shoot):
    """Both pages allow relay candidates only (`?relay=1`: iceTransportPolicy "relay"), so the
    call connects only if coturn accepted the credentials of GET /api/calls/ice-servers."""
    turn_log = TEST_RUN_DIR / "logs" / "browser-turn"
    with running_turnserver(TURN_SECRET, turn_log) as (host, port), running_cluster(
            stores, TEST_RUN_DIR / "logs" / "browser-turn-cluster", DEV_MODE="true",
            TURN_URLS=f"turn:{host}:{port}?transport=udp", TURN_SECRET=TURN_SECRET) as cluster:
        ada = await create_user(cluster.history_url, "adarelay")
        grace = await create_user(cluster.history_url, "gracerelay")
        errors: list[str] = []
        ada_context, ada_page = await open_as(call_browser, cluster.gateway_url("a") + "/?relay=1", ada)
        grace_context, grace_page = await open_as(call_browser, cluster.gateway_url("b") + "/?relay=1", grace)
        watch_errors(errors, ada_page, grace_page)
        try:
            await chat_with(ada_page, grace)
            await ada_page.click("#call-video")
            await grace_page.click("#call-accept")
            for page in (ada_page, grace_page):
                await expect(page.locator("#call")).to_have_attribute("data-connection", "connected",
                                                                      timeout=CONNECTED_TIMEOUT_MS)
            await plays_frames(grace_page, "#remote-video")
            await shoot(grace_page, "calls-12-relayed-through-coturn")
            # coturn's own log names the users whose allocations it accepted (written as it goes).
            async def coturn_logged_both():
                log = (turn_log / "turnserver.log").read_text()
                assert f":{ada.id}" in log and f":{grace.id}" in log

            await eventually(coturn_logged_both)
            await ada_page.click("#call-hangup")
            await expect(grace_page.locator("#call-status")).to_have_text("Call ended")
            assert errors == []
        finally:
            await ada_context.close()
            await grace_context.close()
