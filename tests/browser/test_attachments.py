"""An image and a file sent from node A are seen on node B (issue 16's web client).

Ada (gateway A) attaches a photo and a text file through the attach button's file input,
waits for both uploads to finish (each chip's progress bar gives way to its size), sends both
with no text; Grace (gateway B) sees the thumbnail inline and a card with the file's name and size, and
a click opens the full image. Screenshots under .run/test/screenshots/attachments-*.png.
"""

from playwright.async_api import expect

from tests.browser.test_web_client import XSS, open_as_cookie
from tests.integration.media_files import jpeg_with_gps
from tests.support import create_user


async def test_an_image_sent_from_node_a_is_seen_on_node_b(web_cluster, browser, shoot, tmp_path):
    suffix = web_cluster.history_url[-5:]
    ada = await create_user(web_cluster.history_url, "adaatt" + suffix)
    grace = await create_user(web_cluster.history_url, "graceatt" + suffix)
    errors = []
    ada_context, ada_page = await open_as_cookie(browser, web_cluster.gateway_url("a"), ada)
    grace_context, grace_page = await open_as_cookie(browser, web_cluster.gateway_url("b"), grace)
    for page in (ada_page, grace_page):
        page.on("pageerror", lambda error: errors.append(str(error)))
        await expect(page.locator("#connection")).to_have_text("online")
    photo = tmp_path / "engine.jpg"
    photo.write_bytes(jpeg_with_gps(1200, 800))
    notes = tmp_path / f"notes {XSS}.txt"
    notes.write_text("Notes on the Analytical Engine\n" * 100)

    await ada_page.fill("#start-name", grace.user_name)
    await ada_page.press("#start-name", "Enter")
    await expect(ada_page.locator("#composer")).to_be_visible()
    await ada_page.set_input_files("#attach-input", [str(photo), str(notes)])
    chips = ada_page.locator("#attachment-tray .attachment-chip[data-id]")
    await expect(chips).to_have_count(2)  # both uploaded: the progress bars gave way to sizes
    await shoot(ada_page, "attachments-01-tray")
    await ada_page.click("#composer button[type=submit]")
    await expect(ada_page.locator(".message.mine .attachment-image img")).to_have_count(1)
    await expect(chips).to_have_count(0)

    grace_entry = grace_page.locator(f'.conversation[data-partner="{ada.id}"]')
    await grace_entry.click()
    image = grace_page.locator(".message .attachment-image img")
    await expect(image).to_have_count(1)
    # The thumbnail has loaded (through gateway B, by signed link): its longest side is 320 px.
    await image.evaluate("img => img.complete || new Promise((done) => img.addEventListener('load', done))")
    assert await image.evaluate("img => img.naturalWidth") == 320
    card = grace_page.locator(".message .attachment-file")
    await expect(card.locator(".file-name")).to_have_text(notes.name)  # the name stays text
    await expect(card.locator(".file-size")).to_have_text("3.0 KB")
    await shoot(grace_page, "attachments-02-received-on-b")
    async with grace_context.expect_page() as opened:
        await image.click()
    full = await opened.value
    await full.wait_for_load_state()
    assert await full.evaluate("document.images[0] && document.images[0].naturalWidth") == 1200
    await shoot(full, "attachments-03-full-image")
    assert errors == []
    await ada_context.close()
    await grace_context.close()
