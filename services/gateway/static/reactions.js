// Emoji (issue 16): the composer's emoji picker (emoji-picker-element, served from /vendor with
// its emoji list) and each message's reaction bar: counts, mine highlighted, a click toggles mine.
// `reactionUpdated` carries counts without `me` (one emit to every member): this module keeps
// my own `me` per emoji and flips it only when the update is my own change.

import "/vendor/emoji-picker/picker.js";
import { $, element, notice } from "./util.js";
import { state } from "./state.js";

const EMOJI_DATA = "/vendor/emoji-data.json";
const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉"];

/** An `<emoji-picker>` reading its emoji from this server (CSP: connect-src 'self'). */
function newPicker(onPick) {
  const picker = document.createElement("emoji-picker");
  picker.dataSource = EMOJI_DATA;
  picker.classList.add("emoji-picker");
  picker.addEventListener("emoji-click", (event) => onPick(event.detail.unicode));
  return picker;
}

// --- the composer's picker -----------------------------------------------------------------------

let composerPicker = null;

function toggleComposerPicker() {
  if (composerPicker) {
    composerPicker.remove();
    composerPicker = null;
    return;
  }
  composerPicker = newPicker((emoji) => {
    const text = $("text");
    const at = text.selectionStart ?? text.value.length;
    text.value = text.value.slice(0, at) + emoji + text.value.slice(text.selectionEnd ?? at);
    text.selectionStart = text.selectionEnd = at + emoji.length;
    text.focus();
  });
  $("composer").before(composerPicker);
}

$("emoji-button").addEventListener("click", toggleComposerPicker);

// --- reactions -----------------------------------------------------------------------------------

function setReaction(messageId, emoji, add) {
  state.socket.emit(add ? "react" : "unreact", { messageId, emoji }, (ack) => {
    if (ack && ack.ok) applyMine(messageId, ack.reactions);
    else if (ack) notice("sidebar-error", ack.error.message);
  });
}

/** The bar under a message: one button per emoji with its count (mine pressed), and "+" for more. */
export function reactionBar(message) {
  const bar = element("div", "reactions");
  bar.dataset.for = message._id;
  for (const reaction of message.reactions || []) {
    const button = element("button", "reaction" + (reaction.me ? " mine" : ""), `${reaction.emoji} ${reaction.count}`);
    button.type = "button";
    button.setAttribute("aria-pressed", String(Boolean(reaction.me)));
    button.dataset.emoji = reaction.emoji;
    button.addEventListener("click", () => setReaction(message._id, reaction.emoji, !reaction.me));
    bar.append(button);
  }
  if (!message._id) return bar; // still sending
  const more = element("button", "reaction add", "+");
  more.type = "button";
  more.title = "React";
  more.addEventListener("click", () => openReactionChooser(bar, message._id));
  bar.append(more);
  return bar;
}

function openReactionChooser(bar, messageId) {
  const open = bar.querySelector(".reaction-chooser");
  if (open) { open.remove(); return; }
  const chooser = element("div", "reaction-chooser");
  for (const emoji of QUICK_REACTIONS) {
    const quick = element("button", "reaction quick", emoji);
    quick.type = "button";
    quick.addEventListener("click", () => { chooser.remove(); setReaction(messageId, emoji, true); });
    chooser.append(quick);
  }
  const all = element("button", "reaction quick", "…");
  all.type = "button";
  all.title = "All emoji";
  all.addEventListener("click", () => {
    all.remove();
    chooser.append(newPicker((emoji) => { chooser.remove(); setReaction(messageId, emoji, true); }));
  });
  chooser.append(all);
  bar.append(chooser);
}

function redraw(messageId) {
  const message = state.messages.get(messageId);
  const bar = document.querySelector(`.reactions[data-for="${CSS.escape(messageId)}"]`);
  if (message && bar) bar.replaceWith(reactionBar(message));
}

/** My own answer (ack): the reactions as I see them, `me` included. */
function applyMine(messageId, reactions) {
  const message = state.messages.get(messageId);
  if (!message) return;
  message.reactions = reactions;
  redraw(messageId);
}

/** `reactionUpdated`: new counts; `me` kept from what I knew, flipped when the change is mine. */
export function onReactionUpdated({ messageId, reactions, userId, emoji, added }) {
  const message = state.messages.get(messageId);
  if (!message) return;
  const mine = new Set((message.reactions || []).filter((r) => r.me).map((r) => r.emoji));
  if (userId === state.me._id) {
    if (added) mine.add(emoji); else mine.delete(emoji);
  }
  message.reactions = reactions.map((r) => ({ ...r, me: mine.has(r.emoji) }));
  redraw(messageId);
}
