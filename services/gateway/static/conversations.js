// The conversation list: 1:1 partners and groups side by side, newest first, with unread badges.

import { $, api, avatarUrl, displayName, element, firstName, groupAvatarUrl, newer } from "./util.js";
import { groupKey, idOf, isMine, remember, seen, state, userKey } from "./state.js";
import { ensureGroup, groupSummary } from "./groups.js";
import { openConversation } from "./thread.js";

const LIST_LIMIT = 200;
const WATCH_LIMIT = 500;

export async function loadConversations() {
  const { body } = await api(`/api/messages/conversations?limit=${LIST_LIMIT}`);
  const removed = [...state.conversations.values()].filter((conversation) => conversation.removed);
  state.conversations.clear();
  for (const entry of body) {
    const conversation = entry.group ? groupEntry(entry) : userEntry(entry);
    state.conversations.set(conversation.key, conversation);
    if (entry.lastMessage) seen(entry.lastMessage._id);
  }
  // A group I was removed from stays greyed out until the page is reloaded.
  for (const conversation of removed) {
    if (!state.conversations.has(conversation.key)) state.conversations.set(conversation.key, conversation);
  }
  renderConversations();
  watchPartners();
}

function userEntry(entry) {
  remember(entry._id);
  return { key: userKey(entry._id._id), kind: "user", id: entry._id._id, profile: entry._id,
    lastMessage: entry.lastMessage, unreadCount: entry.unreadCount, removed: false };
}

function groupEntry(entry) {
  const summary = entry._id;
  const conversation = { key: groupKey(summary._id), kind: "group", id: summary._id, profile: summary,
    lastMessage: entry.lastMessage, unreadCount: entry.unreadCount, removed: false };
  const sender = entry.lastMessage && entry.lastMessage.sender;
  remember(sender);
  // The list names a group message's sender: learn the members when the name is not known yet.
  if (sender && !state.people.has(idOf(sender))) ensureGroup(summary._id).catch(() => {});
  return conversation;
}

/** Adds a group to the list, or updates its entry (name, image, member count). */
export function upsertGroupConversation(group) {
  const key = groupKey(group._id);
  const conversation = state.conversations.get(key) || { key, kind: "group", id: group._id, lastMessage: null,
    unreadCount: 0, removed: false, since: Date.now() };
  conversation.profile = groupSummary(group);
  state.conversations.set(key, conversation);
  if (state.current && state.current.key === key) state.current.profile = conversation.profile;
  renderConversations();
  return conversation;
}

export function watchPartners() {
  // Partners are told of presence anyway; watching also covers a conversation just begun,
  // and the ack says who of them is online now.
  if (!state.socket || !state.socket.connected) return;
  const partners = [...state.conversations.values()].filter((c) => c.kind === "user").map((c) => c.id);
  state.socket.emit("watchPresence", partners.slice(0, WATCH_LIMIT), (ack) => {
    if (!ack || !ack.ok) return;
    for (const id of ack.online) state.online.add(id);
    document.dispatchEvent(new Event("presence-changed"));
  });
}

/** When a conversation was last active, for the newest-first order. */
function activeAt(conversation) {
  const message = conversation.lastMessage;
  return message ? Date.parse(message.createdAt) || 0 : conversation.since || 0;
}

function newestFirst(a, b) {
  const difference = activeAt(b) - activeAt(a);
  if (difference !== 0) return difference;
  if (a.lastMessage && b.lastMessage) return newer(a.lastMessage._id, b.lastMessage._id) ? -1 : 1;
  return 0;
}

export function renderConversations() {
  const sorted = [...state.conversations.values()].sort(newestFirst);
  $("conversations").replaceChildren(...sorted.map(conversationItem));
}

function conversationItem(conversation) {
  const { profile, unreadCount } = conversation;
  const group = conversation.kind === "group";
  const item = element("li", "conversation" + (group ? " group" : "") + (conversation.removed ? " removed" : "") +
    (state.current && state.current.key === conversation.key ? " active" : ""));
  item.tabIndex = 0;
  item.dataset.key = conversation.key;
  if (group) item.dataset.group = conversation.id; else item.dataset.partner = conversation.id;
  const wrap = element("span", "avatar-wrap");
  const image = element("img", "avatar");
  image.alt = "";
  image.src = group ? groupAvatarUrl(profile) : avatarUrl(profile);
  wrap.append(image);
  if (!group) {
    const online = state.online.has(conversation.id);
    const dot = element("span", "dot" + (online ? " online" : ""));
    dot.title = online ? "online" : "offline";
    wrap.append(dot);
  }
  const who = element("span", "who");
  const name = element("div", "name");
  name.append(element("span", "title", group ? profile.name : displayName(profile)));
  if (group) name.append(element("span", "count", membersText(profile.memberCount)));
  who.append(name, element("div", "last", lastLine(conversation)));
  item.append(wrap, who);
  if (unreadCount > 0 && !conversation.removed) {
    const badge = element("span", "badge", String(unreadCount));
    badge.setAttribute("aria-label", `${unreadCount} unread`);
    item.append(badge);
  }
  const open = () => openConversation(conversation);
  item.addEventListener("click", open);
  item.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
  return item;
}

export const membersText = (count) => (count === 1 ? "1 member" : `${count || 0} members`);

/** The list's second line: the last message, with "You: " or, in a group, the sender's name. */
function lastLine(conversation) {
  if (conversation.removed) return "You were removed";
  const message = conversation.lastMessage;
  if (!message) return conversation.kind === "group" ? "New group" : "";
  if (isMine(message)) return `You: ${message.text}`;
  if (conversation.kind !== "group") return message.text;
  const sender = state.people.get(idOf(message.sender));
  return sender ? `${firstName(sender)}: ${message.text}` : message.text;
}

/**
 * A message arrived, was sent or synced: it becomes its conversation's last message (when newer),
 * and counts as unread when `unreadDelta` says so. `profile` names a conversation not listed yet.
 */
export function touchConversation(key, profile, message, unreadDelta) {
  let conversation = state.conversations.get(key);
  const isNew = !conversation;
  if (isNew) {
    const [kind, id] = key.split(":");
    conversation = { key, kind, id, profile, lastMessage: null, unreadCount: 0, removed: false };
    state.conversations.set(key, conversation);
  }
  if (!conversation.lastMessage || !newer(conversation.lastMessage._id, message._id)) {
    conversation.lastMessage = { ...message, sender: idOf(message.sender), receiver: idOf(message.receiver) };
  }
  conversation.unreadCount += unreadDelta;
  renderConversations();
  if (isNew && conversation.kind === "user") watchPartners();
  return conversation;
}
