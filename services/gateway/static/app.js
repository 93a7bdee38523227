// Parley's web client: the original guide's ChatList + ChatWindow + MessagesPage, on one page,
// with group conversations. This module signs in, connects and routes live events; the list,
// the open conversation and groups live in their own modules.
// Every piece of user text reaches the page through textContent, never as HTML.

import { $, api, displayName, element, lookupUser, notice } from "./util.js";
import { groupKey, idOf, isMine, keyOfMessage, remember, seen, state, userKey } from "./state.js";
import { loadConversations, renderConversations, touchConversation, watchPartners } from "./conversations.js";
import {
  ensureGroup, onGroupRead, sentBy, onGroupStoppedTyping, onGroupTyping, onGroupUpdated, onMemberAdded, onMemberRemoved,
  stoppedTyping,
} from "./groups.js";
import {
  appendMessage, belongsToCurrent, markReadIfVisible, openByKey, partnerTyping, refreshStatuses, removeMessage,
  renderHeader, replaceMessage, scrollToBottom,
} from "./thread.js";
import { onReactionUpdated } from "./reactions.js";
import { conversationFromUrl, reportVisibility, setupNotifications } from "./notifications.js";
import { listenForCalls } from "./calls.js";

const SYNC_PAGE = 200;
const SYNC_MAX_PAGES = 50;
const SEARCH_LIMIT = 20;

// --- sign-in ------------------------------------------------------------------------------------

function tokenFromCookie() {
  const row = document.cookie.split("; ").find((part) => part.startsWith("token="));
  return row ? decodeURIComponent(row.slice(6)) : null;
}

function userIdOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).id;
  } catch {
    return null;
  }
}

async function signInAs(userName) {
  try {
    const { body } = await api("/dev/session", { method: "POST", body: JSON.stringify({ userName }) });
    document.cookie = `token=${encodeURIComponent(body.token)}; path=/; SameSite=Lax`;
    await start(body.token);
  } catch (error) {
    notice("signin-error", error.message);
  }
}

async function showSignIn() {
  $("signin").hidden = false;
  try {
    const { body: users } = await api("/dev/users");
    $("demo-users").replaceChildren(...users.map((user) => {
      const item = document.createElement("li");
      const button = element("button", "", `${user.name || user.userName} (@${user.userName})`);
      button.type = "button";
      button.addEventListener("click", () => signInAs(user.userName));
      item.append(button);
      return item;
    }));
  } catch {
    notice("signin-note", "No session: sign in to the social app first.");
    $("signin-form").hidden = true;
  }
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  signInAs($("signin-name").value.trim());
});

// --- starting a chat, searching -----------------------------------------------------------------

$("start-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const userName = $("start-name").value.trim();
  if (!userName) return;
  try {
    const profile = await lookupUser(userName);
    remember(profile);
    $("start-name").value = "";
    notice("sidebar-error", "");
    await openByKey(userKey(profile._id), profile);
  } catch (error) {
    notice("sidebar-error", error.message);
  }
});

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = $("search-q").value.trim();
  const results = $("search-results");
  if (!q) { results.hidden = true; return; }
  try {
    const { body } = await api(`/api/messages/search?q=${encodeURIComponent(q)}&limit=${SEARCH_LIMIT}`);
    results.replaceChildren(...body.map(searchResult));
    if (!body.length) results.replaceChildren(element("li", "", "Nothing found"));
    results.hidden = false;
  } catch (error) {
    notice("sidebar-error", error.message);
  }
});

function searchResult(message) {
  const key = keyOfMessage(message);
  const listed = state.conversations.get(key);
  const partner = message.groupId ? null : (isMine(message) ? message.receiver : message.sender);
  const where = message.groupId
    ? `${listed ? listed.profile.name : "Group"} · ${displayName(message.sender)}`
    : displayName(partner);
  const item = document.createElement("li");
  item.tabIndex = 0;
  item.append(element("div", "meta", `${where} · ${new Date(message.createdAt).toLocaleString()}`),
    element("div", "", message.text));
  item.addEventListener("click", () => { $("search-results").hidden = true; openByKey(key, partner); });
  return item;
}

// --- live events --------------------------------------------------------------------------------

function onMessage(message) {
  const mine = isMine(message);
  const key = keyOfMessage(message);
  remember(message.sender);
  const open = belongsToCurrent(message);
  const alreadyHere = state.messages.has(message._id);
  if (open) appendMessage(message);
  seen(message._id);
  if (message.groupId) {
    stoppedTyping(groupKey(message.groupId), idOf(message.sender)); // they sent what they typed
    sentBy(message.groupId, idOf(message.sender), message._id);
    if (!state.conversations.has(key)) ensureGroup(message.groupId).catch(() => {}); // name and members
  }
  const profile = message.groupId ? { _id: message.groupId, name: "Group", memberCount: 0 }
    : (mine ? message.receiver : message.sender);
  if (!alreadyHere) touchConversation(key, profile, message, !mine && !open ? 1 : 0);
  if (open) {
    scrollToBottom();
    if (!mine) {
      if (!message.groupId) partnerTyping(idOf(message.sender), false);
      state.unreadInOpen = true;
      markReadIfVisible();
    }
  }
}

async function catchUp() {
  // After a reconnect: everything since the newest message seen, deletions included.
  let cursor = state.lastSeenId;
  for (let page = 0; page < SYNC_MAX_PAGES; page += 1) {
    const { body } = await api(`/api/messages/sync?after=${cursor}&limit=${SYNC_PAGE}`);
    for (const message of body.messages) onMessage(message);
    for (const edited of body.edited || []) replaceMessage(edited);
    for (const deleted of body.deleted) onDeleted(deleted);
    cursor = body.next;
    if (!body.hasMore) break;
  }
}

function onDeleted(deleted) {
  removeMessage(deleted._id);
  const key = deleted.groupId ? groupKey(deleted.groupId)
    : userKey(deleted.sender === state.me._id ? deleted.receiver : deleted.sender);
  const conversation = state.conversations.get(key);
  if (conversation && conversation.lastMessage && conversation.lastMessage._id === deleted._id) {
    loadConversations().catch(() => {});
  }
}

function presenceChanged() {
  renderConversations();
  renderHeader();
  refreshStatuses();
}

document.addEventListener("presence-changed", presenceChanged);

function connect(token) {
  const socket = io({ auth: { token }, transports: ["websocket", "polling"] });
  state.socket = socket;
  reportVisibility(socket); // pushes go only to users with no tab in view
  socket.on("connect", async () => {
    $("connection").textContent = "online";
    $("connection").classList.remove("offline");
    watchPartners();
    if (state.everConnected) await catchUp().catch(() => {});
    state.everConnected = true;
  });
  socket.on("disconnect", () => {
    $("connection").textContent = "reconnecting...";
    $("connection").classList.add("offline");
  });
  socket.on("connect_error", (error) => {
    if (error.message === "Authentication error") {
      document.cookie = "token=; path=/; max-age=0";
      socket.disconnect();
      $("app").hidden = true;
      showSignIn();
    }
  });
  socket.on("receiveMessage", onMessage);
  socket.on("messageSent", onMessage);
  socket.on("messageDeleted", onDeleted);
  socket.on("messageEdited", ({ message }) => replaceMessage(message));
  socket.on("reactionUpdated", onReactionUpdated);
  socket.on("messagesRead", ({ readerId, upTo }) => {
    const known = state.readUpTo.get(readerId);
    if (upTo && (!known || BigInt(upTo) > BigInt(known))) state.readUpTo.set(readerId, upTo);
    refreshStatuses();
  });
  // 1:1 typing carries the partner's id (the guide's string payload); a group's {userId, groupId}.
  socket.on("userTyping", (payload) => {
    if (payload && typeof payload === "object") onGroupTyping(payload); else partnerTyping(payload, true);
  });
  socket.on("userStoppedTyping", (payload) => {
    if (payload && typeof payload === "object") onGroupStoppedTyping(payload); else partnerTyping(payload, false);
  });
  socket.on("groupRead", onGroupRead);
  socket.on("groupUpdated", onGroupUpdated);
  socket.on("memberAdded", onMemberAdded);
  socket.on("memberRemoved", onMemberRemoved);
  socket.on("onlineUsers", (ids) => { for (const id of ids) state.online.add(id); presenceChanged(); });
  socket.on("userOnline", (id) => { state.online.add(id); presenceChanged(); });
  socket.on("userOffline", (id) => { state.online.delete(id); presenceChanged(); });
  socket.on("messageError", (error) => notice("sidebar-error", error.message));
  listenForCalls(socket);
}

async function start(token) {
  const userId = userIdOf(token);
  const { body: me } = await api(`/api/users/${encodeURIComponent(userId)}`);
  state.me = me;
  remember(me);
  $("signin").hidden = true;
  $("app").hidden = false;
  $("me").textContent = `@${me.userName}`;
  await loadConversations();
  connect(token);
  setupNotifications((key) => openAsked(key).catch(() => {}));
  const asked = conversationFromUrl(); // a notification was clicked
  if (asked) await openAsked(asked).catch(() => {});
}

/** Opens the conversation a notification named, with the partner's profile if it is not listed. */
async function openAsked(key) {
  if (key.startsWith("user:") && !state.conversations.has(key)) {
    const { body: profile } = await api(`/api/users/${encodeURIComponent(key.slice(5))}`);
    remember(profile);
    return openByKey(key, profile);
  }
  return openByKey(key);
}

const token = tokenFromCookie();
if (token && userIdOf(token)) {
  start(token).catch(() => showSignIn());
} else {
  showSignIn();
}
