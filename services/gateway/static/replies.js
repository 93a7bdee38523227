// Replies and edits (issue 16). A reply shows its quote above the composer while it is written
// and above the message in the thread; an edit (my own message, within the server's
// EDIT_WINDOW_SECONDS) reuses the composer: Send then saves the new text.

import { $, api, displayName, element, notice } from "./util.js";
import { state } from "./state.js";

const EDIT_WINDOW_MS = 15 * 60 * 1000; // the server's default; it refuses a late edit itself
const QUOTE_SHOWN = 200;

let replyingTo = null; // the message being answered
let editing = null; // my message being edited

function nameOf(userId) {
  if (state.me && userId === state.me._id) return "You";
  const person = state.people.get(userId);
  return person ? displayName(person) : "";
}

/** The quote of `message.replyTo` (or of a message being answered), for the thread. */
export function quoteElement(quote) {
  const block = element("blockquote", "quote");
  block.append(element("span", "quote-sender", nameOf(quote.sender)), element("span", "quote-text", quote.text));
  return block;
}

function showComposerBanner(label, text) {
  const banner = $("compose-context");
  banner.hidden = false;
  $("compose-context-label").textContent = label;
  $("compose-context-text").textContent = text.slice(0, QUOTE_SHOWN);
}

export function cancelCompose() {
  replyingTo = null;
  if (editing) $("text").value = "";
  editing = null;
  $("compose-context").hidden = true;
}

$("compose-cancel").addEventListener("click", cancelCompose);

export function startReply(message) {
  cancelCompose();
  replyingTo = message;
  const sender = typeof message.sender === "string" ? message.sender : message.sender._id;
  showComposerBanner(`Replying to ${nameOf(sender) || "message"}`, message.text);
  $("text").focus();
}

/** The `replyTo` a send carries now (and forgets it). */
export function takeReplyTo() {
  const id = replyingTo ? replyingTo._id : null;
  if (id) cancelCompose();
  return id;
}

export const canEdit = (message) => Boolean(message._id && message.createdAt
  && Date.now() - Date.parse(message.createdAt) < EDIT_WINDOW_MS);

export function startEdit(message) {
  cancelCompose();
  editing = message;
  showComposerBanner("Editing", message.text);
  $("text").value = message.text;
  $("text").focus();
}

/** When an edit is under way, Send saves it: true when this took the composer's text. */
export function submitEdit(text) {
  if (!editing) return false;
  const id = editing._id;
  cancelCompose();
  $("text").value = "";
  api(`/api/messages/${encodeURIComponent(id)}`, { method: "PUT", body: JSON.stringify({ text }) })
    .catch((error) => notice("sidebar-error", error.message));
  return true;
}

export const editedLabel = (message) => (message.editedAt ? "edited" : "");
