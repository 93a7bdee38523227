// Small helpers every module of the web client shares: elements, notices, HTTP, avatars.
// Every piece of user text reaches the page through textContent, never as HTML.

export const $ = (id) => document.getElementById(id);

/** Message and group ids are decimal strings of any length: compare them as BigInts. */
export const newer = (a, b) => BigInt(a) > BigInt(b);

const NOTICE_MS = 6000;
const noticeTimers = {};

/** A short message in an element of the page, cleared after a few seconds. */
export function notice(where, text) {
  $(where).textContent = text || "";
  clearTimeout(noticeTimers[where]);
  if (text) noticeTimers[where] = setTimeout(() => { $(where).textContent = ""; }, NOTICE_MS);
}

/** An element with a class and, optionally, text (as text, never HTML). */
export function element(tag, className = "", text = null) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== null) made.textContent = text;
  return made;
}

// --- HTTP ---------------------------------------------------------------------------------------

export async function api(path, options = {}) {
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

/** The `before` cursor of the next older page, from a history answer's Link header. */
export function nextCursor(link) {
  const match = link && link.match(/[?&]before=(\d+)/);
  return match ? match[1] : null;
}

/** A profile by user name (GET /api/users/lookup), with a readable error when there is none. */
export async function lookupUser(userName) {
  try {
    const { body } = await api(`/api/users/lookup?userName=${encodeURIComponent(userName)}`);
    return body;
  } catch (error) {
    if (error.status === 404) error.message = `No user named ${userName}`;
    throw error;
  }
}

// --- names and avatars --------------------------------------------------------------------------

export const displayName = (profile) => (profile && (profile.name || profile.userName)) || "Someone";

/** The first word of a name: "Ada is typing..." rather than "Ada Lovelace is typing...". */
export const firstName = (profile) => displayName(profile).split(/\s+/)[0];

/**
 * The profile image, or initials on a colour of the profile's own. `seed` keeps a user and a
 * group with the same id ("17") apart in colour.
 */
export function avatarUrl(profile, seed = profile._id) {
  if (profile.profileImage) return profile.profileImage;
  const name = profile.name || profile.userName || "?";
  const initials = name.split(/\s+/).map((word) => word[0] || "").join("").slice(0, 2).toUpperCase();
  let hash = 0;
  for (const char of String(seed)) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="44" height="44">` +
    `<rect width="44" height="44" fill="hsl(${hash % 360},55%,55%)"/>` +
    `<text x="50%" y="55%" dominant-baseline="middle" text-anchor="middle" font-family="sans-serif" ` +
    `font-size="17" fill="#fff">${initials.replace(/[^A-Z0-9]/gi, "")}</text></svg>`;
  return "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg);
}

export const groupAvatarUrl = (group) =>
  avatarUrl({ _id: group._id, name: group.name, profileImage: group.image }, `group:${group._id}`);

/** "Ada is typing...", "Ada and Grace are typing...", "Ada, Grace and 2 others are typing...". */
export function typingText(names) {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing...`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing...`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]} are typing...`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} others are typing...`;
}
