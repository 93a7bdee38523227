// The open conversation: header, messages (paged, live, with receipts), composer and typing.
// A 1:1 chat and a group share all of it; a group adds sender names and avatars, "read by N",
// "Ada is typing..." and the members panel.

import { renderCallButtons } from "./calls.js";
import { $, api, avatarUrl, displayName, element, groupAvatarUrl, newer, nextCursor, notice, typingText }
  from "./util.js";
import { groupKey, idOf, isMine, keyOfMessage, remember, seen, state } from "./state.js";
import { membersText, renderConversations } from "./conversations.js";
import { fetchGroup, markGroupRead, readersOf, typingNames } from "./groups.js";
import { closeMembersPanel, renderMembersPanel } from "./group-panel.js";
import { reactionBar } from "./reactions.js";
import { canEdit, editedLabel, quoteElement, startEdit, startReply, submitEdit, takeReplyTo } from "./replies.js";
import { attachmentsElement, clearTray, readyAttachmentIds, uploadsInProgress } from "./attachments.js";

const PAGE = 30;
const TYPING_EVERY_MS = 2000;
const TYPING_IDLE_MS = 2500;
const PARTNER_TYPING_SHOWN_MS = 8000; // the server clears it too; this guards a lost event
const SEND_TIMEOUT_MS = 10000;
const OLDER_PAGE_MARGIN_PX = 40;

const isGroup = () => Boolean(state.current && state.current.kind === "group");

const messagesUrl = (conversation) => (conversation.kind === "group"
  ? `/api/groups/${encodeURIComponent(conversation.id)}/messages`
  : `/api/messages/${encodeURIComponent(conversation.id)}`);

export async function openConversation(conversation) {
  const { key } = conversation;
  stopTyping();
  state.current = { key, kind: conversation.kind, id: conversation.id, profile: conversation.profile };
  state.messages.clear();
  state.pending.clear();
  state.unreadInOpen = false;
  state.partnerTyping = false;
  $("app").classList.add("chatting");
  $("messages").replaceChildren();
  closeMembersPanel();
  renderHeader();
  updateComposer();
  const removed = Boolean(state.conversations.get(key) && state.conversations.get(key).removed);
  if (conversation.kind === "group" && !removed) {
    fetchGroup(conversation.id).catch(() => {}); // members, roles and read watermarks, fresh
  }
  try {
    const { body, link } = await api(`${messagesUrl(conversation)}?limit=${PAGE}`);
    if (!state.current || state.current.key !== key) return;
    state.oldestCursor = nextCursor(link);
    for (const message of body) appendMessage(message);
  } catch (error) {
    if (!removed) notice("sidebar-error", error.message);
  }
  scrollToBottom();
  renderConversations();
  markReadIfVisible();
  if (!$("composer").hidden) $("text").focus();
}

export function closeConversation() {
  stopTyping();
  $("app").classList.remove("chatting");
  state.current = null;
  state.messages.clear();
  state.pending.clear();
  $("messages").replaceChildren();
  closeMembersPanel();
  renderHeader();
  updateComposer();
  renderConversations();
}

document.addEventListener("close-conversation", closeConversation);

// --- header -------------------------------------------------------------------------------------

export function renderHeader() {
  const current = state.current;
  $("members-button").hidden = !isGroup();
  renderCallButtons();
  if (!current) {
    $("partner-name").textContent = "Pick a conversation";
    $("partner-avatar").hidden = true;
    $("partner-status").textContent = "";
    return;
  }
  const group = current.kind === "group";
  if (group && !current.profile) current.profile = { _id: current.id, name: "Group", memberCount: 0 };
  if (group) {
    const known = state.groups.get(current.id);
    if (known) current.profile = { ...current.profile, name: known.name, image: known.image,
      memberCount: known.members.length };
  }
  $("partner-name").textContent = group ? current.profile.name : displayName(current.profile);
  $("partner-avatar").src = group ? groupAvatarUrl(current.profile) : avatarUrl(current.profile);
  $("partner-avatar").hidden = false;
  $("partner-status").textContent = statusLine();
}

function statusLine() {
  const current = state.current;
  if (current.kind === "user") {
    if (state.partnerTyping) return "typing...";
    return state.online.has(current.id) ? "online" : "offline";
  }
  const conversation = state.conversations.get(current.key);
  if (conversation && conversation.removed) return "You were removed";
  return typingText(typingNames(current.key)) || membersText(current.profile.memberCount);
}

/** 1:1 typing: "typing..." under the partner's name, until they stop, send, or it times out. */
export function partnerTyping(userId, typing) {
  if (!state.current || state.current.kind !== "user" || userId !== state.current.id) return;
  state.partnerTyping = typing;
  clearTimeout(state.partnerTypingTimer);
  if (typing) state.partnerTypingTimer = setTimeout(() => partnerTyping(userId, false), PARTNER_TYPING_SHOWN_MS);
  renderHeader();
}

// --- messages -----------------------------------------------------------------------------------

function messageElement(message, pending = false) {
  const mine = isMine(message);
  const inGroup = Boolean(message.groupId);
  const item = element("li", "message" + (mine ? " mine" : "") + (inGroup && !mine ? " from-member" : ""));
  item.dataset.id = message._id || "";
  if (inGroup && !mine) {
    const sender = state.people.get(idOf(message.sender)) || message.sender || {};
    const avatar = element("img", "sender-avatar");
    avatar.alt = "";
    avatar.src = avatarUrl({ ...sender, _id: idOf(message.sender) || "?" });
    item.append(avatar, element("div", "sender", displayName(sender)));
  }
  if (message.type === "call" && message.call) { // a call's entry (issue 17): "Missed video call"
    item.classList.add("call-message", message.call.kind);
    if (!message.call.durationSeconds && message.call.status !== "ended") item.classList.add("unanswered");
  }
  if (message.replyTo) item.append(quoteElement(message.replyTo));
  const text = element("div", "text", message.text);
  const meta = element("div", "meta");
  const time = element("time", "", new Date(message.createdAt || Date.now())
    .toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  meta.append(time);
  if (message.editedAt) meta.append(element("span", "edited", editedLabel(message)));
  if (!pending && message._id) meta.append(actionButton("reply", () => startReply(message)));
  if (!pending && mine && canEdit(message)) meta.append(actionButton("edit", () => startEdit(message)));
  if (mine) {
    const status = element("span", "status", pending ? "sending" : "");
    if (!pending) showStatus(status, message);
    meta.append(status);
    if (!pending) {
      const remove = element("button", "delete", "delete");
      remove.type = "button";
      remove.addEventListener("click", () => deleteMessage(message._id));
      meta.append(remove);
    }
  }
  item.append(text, attachmentsElement(message), meta, reactionBar(message));
  return item;
}

function actionButton(label, onClick) {
  const button = element("button", label, label);
  button.type = "button";
  button.addEventListener("click", onClick);
  return button;
}

/** An edited message (`messageEdited`, sync's `edited`) redrawn in place; reactions kept as I know them. */
export function replaceMessage(message) {
  const known = state.messages.get(message._id);
  if (!known) return;
  const updated = { ...message, reactions: known.reactions };
  state.messages.set(message._id, updated);
  const found = $("messages").querySelector(`[data-id="${CSS.escape(message._id)}"]`);
  if (found) found.replaceWith(messageElement(updated));
}

function showStatus(status, message) {
  if (!message.groupId) {
    status.textContent = statusOf(message);
    return;
  }
  const readers = readersOf(message.groupId, message._id);
  status.textContent = readers.length ? `read by ${readers.length}` : "sent";
  status.title = readers.map(displayName).join(", ");
}

function statusOf(message) {
  const partnerId = idOf(message.receiver);
  const readUpTo = state.readUpTo.get(partnerId);
  if (message.isRead || (readUpTo && !newer(message._id, readUpTo))) return "read";
  return state.online.has(partnerId) ? "delivered" : "sent";
}

export function belongsToCurrent(message) {
  return Boolean(state.current && keyOfMessage(message) === state.current.key);
}

export function appendMessage(message) {
  if (state.messages.has(message._id)) return; // live, synced and acknowledged copies meet here
  state.messages.set(message._id, message);
  remember(message.sender);
  seen(message._id);
  const pending = message.clientId && state.pending.get(message.clientId);
  const made = messageElement(message);
  if (pending) {
    pending.replaceWith(made);
    state.pending.delete(message.clientId);
    return;
  }
  const list = $("messages");
  const later = [...list.children].find((child) => child.dataset.id && newer(child.dataset.id, message._id));
  list.insertBefore(made, later || null);
}

export function refreshStatuses() {
  for (const item of $("messages").children) {
    const message = state.messages.get(item.dataset.id);
    const status = item.querySelector(".status");
    if (message && status) showStatus(status, message);
  }
}

export function scrollToBottom() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

$("messages").addEventListener("scroll", async () => {
  const list = $("messages");
  if (list.scrollTop > OLDER_PAGE_MARGIN_PX || !state.oldestCursor || state.loadingOlder || !state.current) return;
  state.loadingOlder = true;
  const current = state.current;
  try {
    const { body, link } = await api(`${messagesUrl(current)}?limit=${PAGE}&before=${state.oldestCursor}`);
    if (state.current !== current) return;
    const height = list.scrollHeight;
    state.oldestCursor = nextCursor(link);
    for (const message of body) appendMessage(message);
    list.scrollTop = list.scrollHeight - height; // keep the reader where they were
  } finally {
    state.loadingOlder = false;
  }
});

async function deleteMessage(id) {
  try {
    await api(`/api/messages/${id}`, { method: "DELETE" });
  } catch (error) {
    notice("sidebar-error", error.message);
  }
}

export function removeMessage(id) {
  state.messages.delete(id);
  const found = $("messages").querySelector(`[data-id="${CSS.escape(id)}"]`);
  if (found) found.remove();
}

export function markReadIfVisible() {
  if (!state.current || document.visibilityState !== "visible") return;
  const current = state.current;
  const conversation = state.conversations.get(current.key);
  if (current.kind === "group") {
    if (conversation && conversation.removed) return;
    if (!state.unreadInOpen && !(conversation && conversation.unreadCount)) return;
    state.unreadInOpen = false;
    markGroupRead(current.id).catch(() => { state.unreadInOpen = true; });
  } else {
    const unread = [...state.messages.values()].some((m) => idOf(m.sender) === current.id && !m.isRead);
    if (!unread && !(conversation && conversation.unreadCount)) return;
    state.socket.emit("markRead", { userId: current.id }, () => {});
    for (const message of state.messages.values()) {
      if (idOf(message.sender) === current.id) message.isRead = true;
    }
  }
  if (conversation) conversation.unreadCount = 0;
  renderConversations();
}

document.addEventListener("visibilitychange", markReadIfVisible);

// --- composing ----------------------------------------------------------------------------------

/** The composer shows for an open conversation I can write to; a removed member gets a note instead. */
export function updateComposer() {
  const conversation = state.current && state.conversations.get(state.current.key);
  const removed = Boolean(isGroup() && conversation && conversation.removed);
  $("composer").hidden = !state.current || removed;
  $("removed-note").hidden = !removed;
  if (removed) {
    stopTyping(false); // the server would refuse a removed member's stopTyping; it clears it itself
    renderMembersPanel();
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  const attachmentIds = readyAttachmentIds();
  if (uploadsInProgress()) {
    notice("composer-error", "Wait for the upload to finish");
    return;
  }
  if ((!text && !attachmentIds.length) || !state.current || $("composer").hidden) return;
  if (submitEdit(text)) return;
  const replyTo = takeReplyTo();
  const clientId = crypto.randomUUID();
  const group = isGroup();
  const draft = { _id: "", clientId, text, sender: state.me, receiver: group ? null : state.current.profile,
    createdAt: new Date().toISOString() };
  clearTray();
  if (group) draft.groupId = state.current.id;
  if (replyTo) draft.replyTo = { _id: replyTo, sender: "", text: "" };
  const made = messageElement(draft, true);
  state.pending.set(clientId, made);
  $("messages").append(made);
  scrollToBottom();
  $("text").value = "";
  // The server clears "typing..." itself when a message is sent; the throttle stays, so a
  // quick exchange of short messages sends one `typing` per two seconds at most.
  clearTimeout(state.typingTimer);
  const target = group ? { groupId: state.current.id } : { receiverId: state.current.id };
  send({ ...target, text, clientId, ...(replyTo ? { replyTo } : {}),
    ...(attachmentIds.length ? { attachmentIds } : {}) }, made);
});

function send(payload, made) {
  // A clientId makes the retry after a reconnect safe: the server stores the message once.
  state.socket.timeout(SEND_TIMEOUT_MS).emit("sendMessage", payload, (error, ack) => {
    if (error) {
      state.socket.once("connect", () => send(payload, made));
      return;
    }
    if (ack.ok) {
      appendMessage(ack.message);
      return;
    }
    const status = made.querySelector(".status");
    if (status) status.textContent = `not sent: ${ack.error.message}`;
    state.pending.delete(payload.clientId);
  });
}

$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

/** What `typing`/`stopTyping` carry: the partner's id (1:1, as the guide), or {groupId}. */
const typingTarget = () => (isGroup() ? { groupId: state.current.id } : state.current.id);

$("text").addEventListener("input", () => {
  if (!state.current || !state.socket.connected) return;
  const now = Date.now();
  if (now - state.typingSentAt > TYPING_EVERY_MS) {
    state.socket.emit("typing", typingTarget());
    state.typingSentAt = now;
  }
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(() => stopTyping(), TYPING_IDLE_MS);
});

export function stopTyping(tell = true) {
  clearTimeout(state.typingTimer);
  if (tell && state.typingSentAt && state.current && state.socket && state.socket.connected) {
    state.socket.emit("stopTyping", typingTarget());
  }
  state.typingSentAt = 0;
}

$("back").addEventListener("click", closeConversation);

/** Opens the conversation of `key` (listed or not): `profile` names one not listed yet. */
export function openByKey(key, profile) {
  const listed = state.conversations.get(key);
  if (listed) return openConversation(listed);
  const [kind, id] = key.split(":");
  return openConversation({ key, kind, id, profile });
}

export const openGroup = (groupId) => openByKey(groupKey(groupId));
