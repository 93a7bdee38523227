// The page's one state object, and the conversation keys every module uses.
//
// A conversation is keyed `user:<id>` (1:1, by the partner's id) or `group:<id>`, so a user id
// "17" never collides with a group "17".

export const state = {
  me: null,
  socket: null,
  everConnected: false,
  // key -> {key, kind: "user"|"group", id, profile, lastMessage, unreadCount, removed}
  // `profile`: the partner's profile, or the group's summary {_id, name, image, memberCount}.
  conversations: new Map(),
  groups: new Map(), // groupId -> the whole group {_id, name, image, createdBy, members: [...]}
  people: new Map(), // userId -> profile, from messages, members and look-ups (for sender names)
  online: new Set(),
  current: null, // the open conversation: {key, kind, id, profile}
  messages: new Map(), // _id -> message of the open conversation
  pending: new Map(), // clientId -> element of a message not yet acknowledged
  oldestCursor: null, // `before` of the next older page, null when none is left
  loadingOlder: false,
  unreadInOpen: false, // someone else's message arrived in the open conversation since it was read
  readUpTo: new Map(), // partnerId -> newest of my 1:1 message ids they have read
  lastSeenId: "0", // newest message id seen: where `sync` resumes after a reconnect
  typingSentAt: 0,
  typingTimer: null,
  partnerTypingTimer: null,
  typists: new Map(), // group key -> Map userId -> timer: who is typing in each group
};

export const userKey = (id) => `user:${id}`;
export const groupKey = (id) => `group:${id}`;

/** The key of the conversation a message belongs to, seen from me. */
export function keyOfMessage(message) {
  if (message.groupId) return groupKey(message.groupId);
  const senderId = idOf(message.sender);
  return userKey(senderId === state.me._id ? idOf(message.receiver) : senderId);
}

/** A message's sender or receiver: a profile in live messages, an id in list summaries. */
export const idOf = (party) => (party && typeof party === "object" ? party._id : party);

export const isMine = (message) => idOf(message.sender) === state.me._id;

/** Remembers a profile, so a group's messages and typing can name their senders. */
export function remember(profile) {
  if (profile && typeof profile === "object" && profile._id) {
    state.people.set(profile._id, { ...state.people.get(profile._id), ...profile });
  }
}

export function seen(id) {
  if (id && BigInt(id) > BigInt(state.lastSeenId)) state.lastSeenId = id;
}
