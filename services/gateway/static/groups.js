// Groups: what the page knows of each (members, roles, read watermarks), the REST calls that
// change them, and the live events that keep them current on every member's page.

import { api, firstName, newer } from "./util.js";
import { groupKey, remember, state } from "./state.js";
import { renderConversations, upsertGroupConversation } from "./conversations.js";
import { refreshStatuses, renderHeader, updateComposer } from "./thread.js";
import { renderMembersPanel } from "./group-panel.js";

const TYPING_SHOWN_MS = 8000; // the server clears typing itself; this guards a lost event
const fetching = new Map(); // groupId -> promise of the group, so one fetch serves every caller
const leaving = new Set(); // groups I am leaving: their memberRemoved about me closes them quietly

export const groupSummary = (group) =>
  ({ _id: group._id, name: group.name, image: group.image, memberCount: group.members.length });

export const memberOf = (group, userId) => group && group.members.find((member) => member._id === userId);

export const amAdmin = (group) => {
  const me = memberOf(group, state.me._id);
  return Boolean(me && me.role === "admin");
};

/** The other members who have read up to `messageId` (my own watermark does not count). */
export function readersOf(groupId, messageId) {
  const group = state.groups.get(groupId);
  if (!group || !messageId) return [];
  return group.members.filter((member) =>
    member._id !== state.me._id && member.readUpTo && !newer(messageId, member.readUpTo));
}

/** Takes a whole group object (from REST or `groupUpdated`) as what the page knows of it. */
export function applyGroup(group) {
  const known = state.groups.get(group._id);
  for (const member of group.members) {
    remember(member);
    // A group object from an older answer must not move a read watermark back.
    const before = memberOf(known, member._id);
    if (before && before.readUpTo && (!member.readUpTo || newer(before.readUpTo, member.readUpTo))) {
      member.readUpTo = before.readUpTo;
    }
  }
  state.groups.set(group._id, group);
  const conversation = upsertGroupConversation(group);
  if (memberOf(group, state.me._id)) conversation.removed = false;
  groupChanged(group._id);
  return group;
}

export async function fetchGroup(groupId) {
  if (!fetching.has(groupId)) {
    const request = api(`/api/groups/${encodeURIComponent(groupId)}`)
      .then(({ body }) => applyGroup(body))
      .finally(() => fetching.delete(groupId));
    fetching.set(groupId, request);
  }
  return fetching.get(groupId);
}

export async function ensureGroup(groupId) {
  return state.groups.get(groupId) || fetchGroup(groupId);
}

/** Redraws whatever shows the group: its list entry, and the header, panel and receipts when open. */
function groupChanged(groupId) {
  renderConversations();
  if (state.current && state.current.key === groupKey(groupId)) {
    renderHeader();
    renderMembersPanel();
    refreshStatuses();
    updateComposer();
  }
}

// --- REST ---------------------------------------------------------------------------------------

export async function createGroup(name, memberIds) {
  const { body } = await api("/api/groups", { method: "POST", body: JSON.stringify({ name, memberIds }) });
  return applyGroup(body);
}

export async function addMembers(groupId, userIds) {
  const { body } = await api(`/api/groups/${encodeURIComponent(groupId)}/members`,
    { method: "POST", body: JSON.stringify({ userIds }) });
  if (body && Array.isArray(body.members)) applyGroup(body);
}

export async function renameGroup(groupId, name) {
  const { body } = await api(`/api/groups/${encodeURIComponent(groupId)}`,
    { method: "PATCH", body: JSON.stringify({ name }) });
  if (body && Array.isArray(body.members)) applyGroup(body);
}

export async function removeMember(groupId, userId) {
  await api(`/api/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(userId)}`, { method: "DELETE" });
  memberGone(groupId, userId);
}

export async function leaveGroup(groupId) {
  leaving.add(groupId);
  try {
    await api(`/api/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(state.me._id)}`,
      { method: "DELETE" });
  } catch (error) {
    leaving.delete(groupId);
    throw error;
  }
  forget(groupId);
}

/** Marks the group read (PUT .../read); my watermark moves to what the server says it is. */
export async function markGroupRead(groupId) {
  const { body } = await api(`/api/groups/${encodeURIComponent(groupId)}/read`, { method: "PUT" });
  if (body && body.upTo) movedWatermark(groupId, state.me._id, body.upTo);
}

// --- live events --------------------------------------------------------------------------------

export function onGroupUpdated({ group }) {
  if (group && Array.isArray(group.members)) applyGroup(group);
}

export function onMemberAdded({ groupId, member }) {
  const group = state.groups.get(groupId);
  remember(member);
  if (!group) {
    fetchGroup(groupId).catch(() => {});
    return;
  }
  if (!memberOf(group, member._id)) group.members.push(member);
  if (member._id === state.me._id) {
    const conversation = state.conversations.get(groupKey(groupId));
    if (conversation) conversation.removed = false;
  }
  upsertGroupConversation(group);
  groupChanged(groupId);
}

export function onMemberRemoved({ groupId, userId }) {
  if (userId === state.me._id && leaving.has(groupId)) {
    forget(groupId);
    return;
  }
  memberGone(groupId, userId);
}

function memberGone(groupId, userId) {
  const key = groupKey(groupId);
  const group = state.groups.get(groupId);
  if (group) {
    group.members = group.members.filter((member) => member._id !== userId);
    upsertGroupConversation(group);
  }
  stoppedTyping(key, userId);
  if (userId === state.me._id) {
    const conversation = state.conversations.get(key);
    if (conversation) conversation.removed = true;
    state.typists.delete(key);
  }
  groupChanged(groupId);
}

/** A group I left: gone from the list, and closed if it was open. */
function forget(groupId) {
  const key = groupKey(groupId);
  leaving.delete(groupId);
  state.groups.delete(groupId);
  state.conversations.delete(key);
  state.typists.delete(key);
  if (state.current && state.current.key === key) document.dispatchEvent(new Event("close-conversation"));
  renderConversations();
}

export function onGroupRead({ groupId, readerId, upTo }) {
  movedWatermark(groupId, readerId, upTo);
  if (readerId === state.me._id) { // read on another of my devices
    const conversation = state.conversations.get(groupKey(groupId));
    if (conversation && conversation.unreadCount) {
      conversation.unreadCount = 0;
      renderConversations();
    }
  }
}

/** Sending reads the group (DESIGN-15): a member's own message moves their watermark to it. */
export function sentBy(groupId, userId, messageId) {
  movedWatermark(groupId, userId, messageId);
}

function movedWatermark(groupId, userId, upTo) {
  const member = memberOf(state.groups.get(groupId), userId);
  if (!member || !upTo || (member.readUpTo && !newer(upTo, member.readUpTo))) return;
  member.readUpTo = upTo;
  if (state.current && state.current.key === groupKey(groupId)) refreshStatuses();
}

// --- typing -------------------------------------------------------------------------------------

export function onGroupTyping({ userId, groupId }) {
  if (userId === state.me._id) return;
  const key = groupKey(groupId);
  if (!state.typists.has(key)) state.typists.set(key, new Map());
  const typists = state.typists.get(key);
  clearTimeout(typists.get(userId));
  typists.set(userId, setTimeout(() => stoppedTyping(key, userId), TYPING_SHOWN_MS));
  if (state.current && state.current.key === key) renderHeader();
}

export function onGroupStoppedTyping({ userId, groupId }) {
  stoppedTyping(groupKey(groupId), userId);
}

export function stoppedTyping(key, userId) {
  const typists = state.typists.get(key);
  if (!typists || !typists.has(userId)) return;
  clearTimeout(typists.get(userId));
  typists.delete(userId);
  if (state.current && state.current.key === key) renderHeader();
}

/** First names of who is typing in a group, in the order they started. */
export function typingNames(key) {
  const typists = state.typists.get(key);
  if (!typists) return [];
  return [...typists.keys()].map((id) => firstName(state.people.get(id) || { name: "Someone" }));
}
