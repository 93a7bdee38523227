// The group dialogs: "New group" (a name and members by user name), and the members panel of
// the open group (add by user name and remove: admins; leave: anyone).

import { $, avatarUrl, displayName, element, lookupUser, notice } from "./util.js";
import { remember, state } from "./state.js";
import { addMembers, amAdmin, createGroup, leaveGroup, memberOf, removeMember, renameGroup } from "./groups.js";
import { openGroup } from "./thread.js";

const MAX_NAME = 100;
const LEAVE_ARMED_MS = 4000;
let leaveArmed = null; // the timer that disarms "Click again to leave"

// --- New group ----------------------------------------------------------------------------------

const chosen = new Map(); // userId -> profile of the members picked so far

$("new-group").addEventListener("click", () => {
  chosen.clear();
  $("group-name").value = "";
  $("group-member-name").value = "";
  notice("group-error", "");
  renderChosen();
  $("group-dialog").showModal();
  $("group-name").focus();
});

$("group-cancel").addEventListener("click", () => $("group-dialog").close());

async function chooseMember() {
  const userName = $("group-member-name").value.trim();
  if (!userName) return;
  try {
    const profile = await lookupUser(userName);
    if (profile._id === state.me._id) throw new Error("You are in the group already");
    remember(profile);
    chosen.set(profile._id, profile);
    $("group-member-name").value = "";
    notice("group-error", "");
    renderChosen();
  } catch (error) {
    notice("group-error", error.message);
  }
  $("group-member-name").focus();
}

$("group-member-add").addEventListener("click", chooseMember);
$("group-member-name").addEventListener("keydown", (event) => {
  if (event.key === "Enter") { // adds the person; the form is submitted by its own button
    event.preventDefault();
    chooseMember();
  }
});

function renderChosen() {
  $("group-chosen").replaceChildren(...[...chosen.values()].map((profile) => {
    const chip = element("li", "chip");
    chip.dataset.user = profile._id;
    chip.append(element("span", "", displayName(profile)));
    const drop = element("button", "chip-remove", "×");
    drop.type = "button";
    drop.setAttribute("aria-label", `Remove ${displayName(profile)}`);
    drop.addEventListener("click", () => { chosen.delete(profile._id); renderChosen(); });
    chip.append(drop);
    return chip;
  }));
}

$("group-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("group-name").value.trim();
  if (!name || name.length > MAX_NAME) { notice("group-error", `A name of 1 to ${MAX_NAME} characters`); return; }
  if (!chosen.size) { notice("group-error", "Add at least one person"); return; }
  try {
    const group = await createGroup(name, [...chosen.keys()]);
    $("group-dialog").close();
    await openGroup(group._id);
  } catch (error) {
    notice("group-error", error.message);
  }
});

// --- members panel ------------------------------------------------------------------------------

$("members-button").addEventListener("click", () => {
  const panel = $("members-panel");
  panel.hidden = !panel.hidden;
  $("members-button").setAttribute("aria-expanded", String(!panel.hidden));
  renderMembersPanel();
});

$("members-close").addEventListener("click", closeMembersPanel);

export function closeMembersPanel() {
  disarmLeave();
  $("members-panel").hidden = true;
  $("members-button").setAttribute("aria-expanded", "false");
}

/** Fills the panel from what the page knows of the open group (when the panel is shown). */
export function renderMembersPanel() {
  if ($("members-panel").hidden || !state.current || state.current.kind !== "group") return;
  const group = state.groups.get(state.current.id);
  const conversation = state.conversations.get(state.current.key);
  const removed = Boolean(conversation && conversation.removed);
  const admin = !removed && amAdmin(group);
  $("add-member-form").hidden = !admin;
  $("rename-form").hidden = !admin;
  if (group && document.activeElement !== $("rename-name")) $("rename-name").value = group.name;
  $("leave-group").hidden = removed || !memberOf(group, state.me._id);
  const members = group ? [...group.members] : [];
  // Admins first, then by name; me among them as "You".
  members.sort((a, b) => (a.role === b.role ? displayName(a).localeCompare(displayName(b)) : a.role === "admin" ? -1 : 1));
  $("members-title").textContent = removed ? "Members (you were removed)" : `Members (${members.length})`;
  $("members-list").replaceChildren(...members.map((member) => memberItem(member, admin)));
}

function memberItem(member, admin) {
  const me = member._id === state.me._id;
  const item = element("li", "member");
  item.dataset.user = member._id;
  const avatar = element("img", "avatar small");
  avatar.alt = "";
  avatar.src = avatarUrl(member);
  const name = element("span", "member-name", me ? `${displayName(member)} (you)` : displayName(member));
  item.append(avatar, name);
  if (member.role === "admin") item.append(element("span", "role", "admin"));
  if (admin && !me) {
    const remove = element("button", "member-remove secondary", "Remove");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove ${displayName(member)}`);
    remove.addEventListener("click", () => act(() => removeMember(state.current.id, member._id)));
    item.append(remove);
  }
  return item;
}

async function act(change) {
  try {
    await change();
    notice("members-error", "");
  } catch (error) {
    notice("members-error", error.message);
  }
}

$("add-member-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const userName = $("add-member-name").value.trim();
  if (!userName || !state.current) return;
  const groupId = state.current.id;
  act(async () => {
    const profile = await lookupUser(userName);
    remember(profile);
    await addMembers(groupId, [profile._id]);
    $("add-member-name").value = "";
  });
});

// Leaving takes two clicks (no confirm(): the page opens no dialogs of the browser's own).
function disarmLeave() {
  clearTimeout(leaveArmed);
  leaveArmed = null;
  $("leave-group").textContent = "Leave group";
}

$("leave-group").addEventListener("click", () => {
  if (!state.current || state.current.kind !== "group") return;
  if (!leaveArmed) {
    $("leave-group").textContent = "Click again to leave";
    leaveArmed = setTimeout(disarmLeave, LEAVE_ARMED_MS);
    return;
  }
  disarmLeave();
  const groupId = state.current.id;
  act(() => leaveGroup(groupId));
});

// --- renaming (admins) --------------------------------------------------------------------------

$("rename-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("rename-name").value.trim();
  if (!state.current || state.current.kind !== "group") return;
  if (!name || name.length > MAX_NAME) { notice("members-error", `A name of 1 to ${MAX_NAME} characters`); return; }
  const groupId = state.current.id;
  act(() => renameGroup(groupId, name));
});
