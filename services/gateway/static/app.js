// Parley's web client: the original guide's ChatList + ChatWindow + MessagesPage, on one page.
// Every piece of user text reaches the page through textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const PAGE = 30;
const TYPING_EVERY_MS = 2000;
const TYPING_IDLE_MS = 2500;

const state = {
  me: null,
  socket: null,
  everConnected: false,
  conversations: new Map(), // partnerId -> {partner, lastMessage, unreadCount}
  online: new Set(),
  current: null, // partner profile of the open chat
  messages: new Map(), // _id -> message of the open chat
  pending: new Map(), // clientId -> element of a message not yet acknowledged
  oldestCursor: null, // `before` of the next older page, null when none is left
  loadingOlder: false,
  readUpTo: new Map(), // partnerId -> newest of my message ids they have read
  lastSeenId: "0", // newest message id seen: where `sync` resumes after a reconnect
  typingSentAt: 0,
  typingTimer: null,
  partnerTypingTimer: null,
};

const newer = (a, b) => BigInt(a) > BigInt(b);
const noticeTimers = {};
const notice = (where, text) => {
  $(where).textContent = text || "";
  clearTimeout(noticeTimers[where]);
  if (text) noticeTimers[where] = setTimeout(() => { $(where).textContent = ""; }, 6000);
};

// --- HTTP ---------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const answer = await fetch(path, {
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    ...options,
  });
  const body = answer.status === 204 ? null : await answer.json().catch(() => null);
  if (!answer.ok) {
    const error = new Error((body && body.message) || `HTTP ${answer.status}`);
    error.code = body && body.code;
    error.status = answer.status;
    throw error;
  }
  return { body, link: answer.headers.get("Link") };
}

function nextCursor(link) {
  const match = link && link.match(/[?&]before=(\d+)/);
  return match ? match[1] : null;
}

// --- avatars: the profile image, or initials on a colour of the user's own ---------------------

function avatarUrl(profile) {
  if (profile.profileImage) return profile.profileImage;
  const name = profile.name || profile.userName || "?";
  const initials = name.split(/\s+/).map((word) => word[0] || "").join("").slice(0, 2).toUpperCase();
  let hash = 0;
  for (const char of profile._id) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="44" height="44">` +
    `<rect width="44" height="44" fill="hsl(${hash % 360},55%,55%)"/>` +
    `<text x="50%" y="55%" dominant-baseline="middle" text-anchor="middle" font-family="sans-serif" ` +
    `font-size="17" fill="#fff">${initials.replace(/[^A-Z0-9]/gi, "")}</text></svg>`;
  return "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg);
}

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
    const list = $("demo-users");
    list.replaceChildren(...users.map((user) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `${user.name || user.userName} (@${user.userName})`;
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

// --- conversation list --------------------------------------------------------------------------

async function loadConversations() {
  const { body } = await api("/api/messages/conversations?limit=200");
  state.conversations.clear();
  for (const conversation of body) {
    state.conversations.set(conversation._id._id, {
      partner: conversation._id,
      lastMessage: conversation.lastMessage,
      unreadCount: conversation.unreadCount,
    });
    seen(conversation.lastMessage._id);
  }
  renderConversations();
  watchPartners();
}

function watchPartners() {
  // Partners are told of presence anyway; watching also covers a conversation just begun,
  // and the ack says who of them is online now.
  if (!state.socket || !state.socket.connected) return;
  state.socket.emit("watchPresence", [...state.conversations.keys()].slice(0, 500), (ack) => {
    if (!ack || !ack.ok) return;
    for (const id of ack.online) state.online.add(id);
    presenceChanged();
  });
}

function presenceChanged() {
  renderConversations();
  renderPartnerStatus();
  refreshStatuses();
}

function renderConversations() {
  const sorted = [...state.conversations.values()].sort((a, b) =>
    newer(a.lastMessage ? a.lastMessage._id : "0", b.lastMessage ? b.lastMessage._id : "0") ? -1 : 1);
  $("conversations").replaceChildren(...sorted.map(conversationItem));
}

function conversationItem(conversation) {
  const { partner, lastMessage, unreadCount } = conversation;
  const item = document.createElement("li");
  item.className = "conversation" + (state.current && state.current._id === partner._id ? " active" : "");
  item.tabIndex = 0;
  item.dataset.partner = partner._id;
  const wrap = document.createElement("span");
  wrap.className = "avatar-wrap";
  const image = document.createElement("img");
  image.className = "avatar";
  image.alt = "";
  image.src = avatarUrl(partner);
  const dot = document.createElement("span");
  dot.className = "dot" + (state.online.has(partner._id) ? " online" : "");
  dot.title = state.online.has(partner._id) ? "online" : "offline";
  wrap.append(image, dot);
  const who = document.createElement("span");
  who.className = "who";
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = partner.name || partner.userName;
  const last = document.createElement("div");
  last.className = "last";
  last.textContent = lastMessage ? (lastMessage.sender === state.me._id ? "You: " : "") + lastMessage.text : "";
  who.append(name, last);
  item.append(wrap, who);
  if (unreadCount > 0) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = String(unreadCount);
    badge.setAttribute("aria-label", `${unreadCount} unread`);
    item.append(badge);
  }
  item.addEventListener("click", () => openChat(partner));
  item.addEventListener("keydown", (event) => { if (event.key === "Enter") openChat(partner); });
  return item;
}

function touchConversation(partner, message, unreadDelta) {
  const conversation = state.conversations.get(partner._id) ||
    { partner, lastMessage: null, unreadCount: 0 };
  if (!conversation.lastMessage || !newer(conversation.lastMessage._id, message._id)) {
    conversation.lastMessage = { ...message, sender: message.sender._id, receiver: message.receiver._id };
  }
  conversation.unreadCount += unreadDelta;
  const isNew = !state.conversations.has(partner._id);
  state.conversations.set(partner._id, conversation);
  renderConversations();
  if (isNew) watchPartners();
}

$("start-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const userName = $("start-name").value.trim();
  if (!userName) return;
  try {
    const { body } = await api(`/api/users/lookup?userName=${encodeURIComponent(userName)}`);
    $("start-name").value = "";
    notice("sidebar-error", "");
    await openChat(body);
  } catch (error) {
    notice("sidebar-error", error.status === 404 ? `No user named ${userName}` : error.message);
  }
});

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = $("search-q").value.trim();
  const results = $("search-results");
  if (!q) { results.hidden = true; return; }
  try {
    const { body } = await api(`/api/messages/search?q=${encodeURIComponent(q)}&limit=20`);
    results.replaceChildren(...body.map((message) => {
      const partner = message.sender._id === state.me._id ? message.receiver : message.sender;
      const item = document.createElement("li");
      item.tabIndex = 0;
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.textContent = `${partner.name || partner.userName} · ${new Date(message.createdAt).toLocaleString()}`;
      const text = document.createElement("div");
      text.textContent = message.text;
      item.append(meta, text);
      item.addEventListener("click", () => { results.hidden = true; openChat(partner); });
      return item;
    }));
    if (!body.length) {
      const item = document.createElement("li");
      item.textContent = "Nothing found";
      results.replaceChildren(item);
    }
    results.hidden = false;
  } catch (error) {
    notice("sidebar-error", error.message);
  }
});

// --- chat window --------------------------------------------------------------------------------

async function openChat(partner) {
  state.current = partner;
  state.messages.clear();
  state.pending.clear();
  $("app").classList.add("chatting");
  $("partner-name").textContent = partner.name || partner.userName;
  $("partner-avatar").src = avatarUrl(partner);
  $("partner-avatar").hidden = false;
  $("composer").hidden = false;
  renderPartnerStatus();
  $("messages").replaceChildren();
  const { body, link } = await api(`/api/messages/${encodeURIComponent(partner._id)}?limit=${PAGE}`);
  state.oldestCursor = nextCursor(link);
  for (const message of body) appendMessage(message);
  scrollToBottom();
  renderConversations();
  markReadIfVisible();
  $("text").focus();
}

function renderPartnerStatus(typing = false) {
  if (!state.current) return;
  $("partner-status").textContent = typing ? "typing..." : state.online.has(state.current._id) ? "online" : "offline";
}

function messageElement(message, pending = false) {
  const mine = message.sender._id === state.me._id;
  const item = document.createElement("li");
  item.className = "message" + (mine ? " mine" : "");
  item.dataset.id = message._id || "";
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = message.text;
  const meta = document.createElement("div");
  meta.className = "meta";
  const time = document.createElement("time");
  time.textContent = new Date(message.createdAt || Date.now()).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  meta.append(time);
  if (mine) {
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = pending ? "sending" : statusOf(message);
    meta.append(status);
    if (!pending) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "delete";
      remove.textContent = "delete";
      remove.addEventListener("click", () => deleteMessage(message._id));
      meta.append(remove);
    }
  }
  item.append(text, meta);
  return item;
}

function statusOf(message) {
  const readUpTo = state.readUpTo.get(message.receiver._id);
  if (message.isRead || (readUpTo && !newer(message._id, readUpTo))) return "read";
  return state.online.has(message.receiver._id) ? "delivered" : "sent";
}

function belongsToCurrent(message) {
  if (!state.current) return false;
  const partnerId = state.current._id;
  return (message.sender._id === partnerId && message.receiver._id === state.me._id) ||
    (message.sender._id === state.me._id && message.receiver._id === partnerId);
}

function appendMessage(message) {
  if (state.messages.has(message._id)) return; // live, synced and acknowledged copies meet here
  state.messages.set(message._id, message);
  seen(message._id);
  const pending = message.clientId && state.pending.get(message.clientId);
  const element = messageElement(message);
  if (pending) {
    pending.replaceWith(element);
    state.pending.delete(message.clientId);
    return;
  }
  const list = $("messages");
  const later = [...list.children].find((child) => child.dataset.id && newer(child.dataset.id, message._id));
  list.insertBefore(element, later || null);
}

function refreshStatuses() {
  for (const element of $("messages").children) {
    const message = state.messages.get(element.dataset.id);
    const status = element.querySelector(".status");
    if (message && status) status.textContent = statusOf(message);
  }
}

function scrollToBottom() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

$("messages").addEventListener("scroll", async () => {
  const list = $("messages");
  if (list.scrollTop > 40 || !state.oldestCursor || state.loadingOlder || !state.current) return;
  state.loadingOlder = true;
  const partnerId = state.current._id;
  try {
    const { body, link } = await api(
      `/api/messages/${encodeURIComponent(partnerId)}?limit=${PAGE}&before=${state.oldestCursor}`);
    if (!state.current || state.current._id !== partnerId) return;
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

function removeMessage(id) {
  state.messages.delete(id);
  const element = $("messages").querySelector(`[data-id="${CSS.escape(id)}"]`);
  if (element) element.remove();
}

function markReadIfVisible() {
  if (!state.current || document.visibilityState !== "visible") return;
  const conversation = state.conversations.get(state.current._id);
  const unread = [...state.messages.values()].some((m) => m.sender._id === state.current._id && !m.isRead);
  if (!unread && !(conversation && conversation.unreadCount)) return;
  state.socket.emit("markRead", { userId: state.current._id }, () => {});
  for (const message of state.messages.values()) {
    if (message.sender._id === state.current._id) message.isRead = true;
  }
  if (conversation) conversation.unreadCount = 0;
  renderConversations();
}

document.addEventListener("visibilitychange", markReadIfVisible);

// --- composing ----------------------------------------------------------------------------------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || !state.current) return;
  const clientId = crypto.randomUUID();
  const draft = { _id: "", clientId, text, sender: state.me, receiver: state.current, createdAt: new Date().toISOString() };
  const element = messageElement(draft, true);
  state.pending.set(clientId, element);
  $("messages").append(element);
  scrollToBottom();
  $("text").value = "";
  // The server clears the partner's "typing..." itself when a message is sent; the throttle
  // stays, so a quick exchange of short messages sends one `typing` per two seconds at most.
  clearTimeout(state.typingTimer);
  send({ receiverId: state.current._id, text, clientId }, element);
});

function send(payload, element) {
  // A clientId makes the retry after a reconnect safe: the server stores the message once.
  state.socket.timeout(10000).emit("sendMessage", payload, (error, ack) => {
    if (error) {
      state.socket.once("connect", () => send(payload, element));
      return;
    }
    if (ack.ok) {
      appendMessage(ack.message);
      return;
    }
    const status = element.querySelector(".status");
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

$("text").addEventListener("input", () => {
  if (!state.current || !state.socket.connected) return;
  const now = Date.now();
  if (now - state.typingSentAt > TYPING_EVERY_MS) {
    state.socket.emit("typing", state.current._id);
    state.typingSentAt = now;
  }
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
});

function stopTyping() {
  clearTimeout(state.typingTimer);
  if (state.typingSentAt && state.current && state.socket.connected) {
    state.socket.emit("stopTyping", state.current._id);
  }
  state.typingSentAt = 0;
}

$("back").addEventListener("click", () => {
  $("app").classList.remove("chatting");
  state.current = null;
  renderConversations();
});

// --- live events --------------------------------------------------------------------------------

function seen(id) {
  if (id && newer(id, state.lastSeenId)) state.lastSeenId = id;
}

function onMessage(message) {
  const mine = message.sender._id === state.me._id;
  const partner = mine ? message.receiver : message.sender;
  const open = belongsToCurrent(message);
  const alreadyHere = state.messages.has(message._id);
  if (open) appendMessage(message);
  seen(message._id);
  if (!alreadyHere) touchConversation(partner, message, !mine && !open ? 1 : 0);
  if (open) {
    scrollToBottom();
    if (!mine) { renderPartnerStatus(false); markReadIfVisible(); }
  }
}

async function catchUp() {
  // After a reconnect: everything since the newest message seen, deletions included.
  let cursor = state.lastSeenId;
  for (let page = 0; page < 50; page += 1) {
    const { body } = await api(`/api/messages/sync?after=${cursor}&limit=200`);
    for (const message of body.messages) onMessage(message);
    for (const deleted of body.deleted) onDeleted(deleted);
    cursor = body.next;
    if (!body.hasMore) break;
  }
}

function onDeleted(deleted) {
  removeMessage(deleted._id);
  const partnerId = deleted.sender === state.me._id ? deleted.receiver : deleted.sender;
  const conversation = state.conversations.get(partnerId);
  if (conversation && conversation.lastMessage && conversation.lastMessage._id === deleted._id) {
    loadConversations().catch(() => {});
  }
}

function connect(token) {
  const socket = io({ auth: { token }, transports: ["websocket", "polling"] });
  state.socket = socket;
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
  socket.on("messagesRead", ({ readerId, upTo }) => {
    const known = state.readUpTo.get(readerId);
    if (upTo && (!known || newer(upTo, known))) state.readUpTo.set(readerId, upTo);
    refreshStatuses();
  });
  socket.on("userTyping", (userId) => {
    if (!state.current || userId !== state.current._id) return;
    renderPartnerStatus(true);
    clearTimeout(state.partnerTypingTimer); // the server clears it too; this guards a lost event
    state.partnerTypingTimer = setTimeout(() => renderPartnerStatus(false), 8000);
  });
  socket.on("userStoppedTyping", (userId) => {
    if (state.current && userId === state.current._id) renderPartnerStatus(false);
  });
  socket.on("onlineUsers", (ids) => { for (const id of ids) state.online.add(id); presenceChanged(); });
  socket.on("userOnline", (id) => { state.online.add(id); presenceChanged(); });
  socket.on("userOffline", (id) => { state.online.delete(id); presenceChanged(); });
  socket.on("messageError", (error) => notice("sidebar-error", error.message));
}

async function start(token) {
  const userId = userIdOf(token);
  const { body: me } = await api(`/api/users/${encodeURIComponent(userId)}`);
  state.me = me;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("me").textContent = `@${me.userName}`;
  await loadConversations();
  connect(token);
}

const token = tokenFromCookie();
if (token && userIdOf(token)) {
  start(token).catch(() => showSignIn());
} else {
  showSignIn();
}
