// Voice and video calls (issue 17): the call buttons of a 1:1 chat, the call screen (ringing,
// incoming with accept and decline, local and remote video, mute, camera off, hang up, duration)
// and the WebRTC side. Parley only relays the signalling: the media flows between the browsers
// (or through TURN, with the servers GET /api/calls/ice-servers gives).
//
// Candidates are relayed once a call is answered: the caller keeps its own until `callAnswered`,
// the callee until its `answerCall` is acknowledged; candidates that arrive before the remote
// description is set wait for it.

import { $, api, displayName, notice } from "./util.js";
import { state } from "./state.js";

const ENDED_SHOWN_MS = 2500;
const REASONS = {
  ended: "Call ended", rejected: "Declined", missed: "No answer", busy: "Busy", lost: "Connection lost",
  offline: "Not available",
};

// The one call this tab takes part in (or rings for), or null.
let call = null;
// Ends heard before `callUser`'s ack told us the id (a busy or offline callee): callId -> reason.
const endedEarly = new Map();
let hideTimer = null;

function emit(event, payload) {
  return new Promise((resolve) => state.socket.emit(event, payload, resolve));
}

// --- the screen ---------------------------------------------------------------------------------

function show(title, status, { incoming = false, active = false } = {}) {
  clearTimeout(hideTimer);
  const screen = $("call");
  screen.hidden = false;
  screen.classList.toggle("audio", call ? call.kind === "audio" : false);
  screen.classList.toggle("ringing", incoming);
  $("call-duration").hidden = !(call && call.connectedAt);
  $("call-title").textContent = title;
  $("call-status").textContent = status;
  $("call-incoming").hidden = !incoming;
  $("call-active").hidden = !active;
}

function setStatus(status) {
  $("call-status").textContent = status;
}

function hideSoon(text) {
  setStatus(text);
  $("call-incoming").hidden = true;
  $("call-active").hidden = true;
  hideTimer = setTimeout(() => { $("call").hidden = true; }, ENDED_SHOWN_MS);
}

function tickDuration() {
  if (!call || !call.connectedAt) return;
  const seconds = Math.floor((Date.now() - call.connectedAt) / 1000);
  $("call-duration").textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

/** The call buttons show for a 1:1 conversation that is open (thread.js's header calls this). */
export function renderCallButtons() {
  $("call-buttons").hidden = !(state.current && state.current.kind === "user" && state.current.id !== state.me._id);
}

// --- WebRTC -------------------------------------------------------------------------------------

async function peerConnection(kind) {
  const { body } = await api("/api/calls/ice-servers");
  const relayOnly = new URLSearchParams(location.search).get("relay") === "1"; // to prove TURN
  const pc = new RTCPeerConnection({ iceServers: body.iceServers, iceTransportPolicy: relayOnly ? "relay" : "all" });
  const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: kind === "video" });
  for (const track of local.getTracks()) pc.addTrack(track, local);
  $("local-video").srcObject = local;
  pc.addEventListener("icecandidate", ({ candidate }) => {
    if (!candidate || !call || call.pc !== pc) return;
    if (call.relaying) sendCandidate(candidate.toJSON()); else call.outgoing.push(candidate.toJSON());
  });
  pc.addEventListener("track", ({ streams }) => { $("remote-video").srcObject = streams[0]; });
  pc.addEventListener("connectionstatechange", () => {
    $("call").dataset.connection = pc.connectionState;
    if (!call || call.pc !== pc) return;
    // The other side's page went away (closed, reloaded) without hanging up: end it here.
    if (pc.connectionState === "failed" && call.id) emit("endCall", { callId: call.id });
    if (pc.connectionState === "connected" && !call.connectedAt) {
      call.connectedAt = Date.now();
      call.timer = setInterval(tickDuration, 1000);
      $("call-duration").hidden = false;
      setStatus("Connected");
    }
  });
  return { pc, local };
}

function sendCandidate(candidate) {
  emit("iceCandidate", { callId: call.id, candidate }).then((ack) => {
    if (!ack.ok) console.warn("candidate refused", ack.error);
  });
}

function startRelaying() {
  call.relaying = true;
  for (const candidate of call.outgoing.splice(0)) sendCandidate(candidate);
}

async function remoteDescription(type, sdp) {
  await call.pc.setRemoteDescription({ type, sdp });
  for (const candidate of call.incoming.splice(0)) await call.pc.addIceCandidate(candidate).catch(() => {});
}

function hangUpLocally() {
  if (!call) return;
  clearInterval(call.timer);
  if (call.pc) call.pc.close();
  if (call.local) for (const track of call.local.getTracks()) track.stop();
  $("local-video").srcObject = null;
  $("remote-video").srcObject = null;
  $("call").dataset.connection = "closed";
  call = null;
}

function newCall(fields) {
  return { id: null, pc: null, local: null, outgoing: [], incoming: [], relaying: false, connectedAt: null,
    timer: null, ...fields };
}

// --- placing a call -----------------------------------------------------------------------------

async function placeCall(kind) {
  if (call || !state.current || state.current.kind !== "user") return;
  const peer = state.current.profile || { _id: state.current.id };
  call = newCall({ kind, peer, role: "caller" });
  $("call-duration").textContent = "0:00";
  show(`Calling ${displayName(peer)}`, "Ringing...", { active: true });
  try {
    const { pc, local } = await peerConnection(kind);
    call.pc = pc;
    call.local = local;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const ack = await emit("callUser", { to: peer._id, kind, sdp: offer.sdp });
    if (!ack.ok) throw new Error(ack.error.message);
    call.id = ack.callId;
    if (endedEarly.has(call.id)) ended(call.id, endedEarly.get(call.id));
  } catch (error) {
    giveUp(error, "endCall");
  }
}

$("call-audio").addEventListener("click", () => placeCall("audio"));
$("call-video").addEventListener("click", () => placeCall("video"));

// --- being called -------------------------------------------------------------------------------

function onIncoming({ callId, from, kind, sdp }) {
  if (call) return; // in a call here already (the server says busy to anyone else)
  call = newCall({ id: callId, kind, peer: from, role: "callee", offer: sdp });
  $("call-duration").textContent = "0:00";
  show(`${displayName(from)} is calling`, `Incoming ${kind} call`, { incoming: true });
}

async function accept() {
  if (!call || call.role !== "callee" || call.pc) return;
  show(`In call with ${displayName(call.peer)}`, "Connecting...", { active: true });
  try {
    const { pc, local } = await peerConnection(call.kind);
    call.pc = pc;
    call.local = local;
    await remoteDescription("offer", call.offer);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    const ack = await emit("answerCall", { callId: call.id, sdp: answer.sdp });
    if (!ack.ok) throw new Error(ack.error.message);
    startRelaying();
  } catch (error) {
    giveUp(error, call && call.relaying ? "endCall" : "rejectCall");
  }
}

/** A call this tab cannot go on with (no camera allowed, a refused event): the server hears it. */
function giveUp(error, event) {
  if (call && call.id) emit(event, { callId: call.id });
  hangUpLocally();
  hideSoon(error.message);
}

$("call-accept").addEventListener("click", accept);
$("call-decline").addEventListener("click", async () => {
  if (call && call.role === "callee") await emit("rejectCall", { callId: call.id });
});
$("call-hangup").addEventListener("click", async () => {
  if (!call) return;
  if (!call.id) { hangUpLocally(); hideSoon(REASONS.ended); return; } // before callUser's ack
  const callId = call.id;
  const ack = await emit("endCall", { callId });
  // Refused (the server no longer knows the call): `callEnded` will not come, end it here.
  if (!ack.ok && call && call.id === callId) ended(callId, "ended");
});
$("call-mute").addEventListener("click", () => toggleTracks("getAudioTracks", $("call-mute")));
$("call-camera").addEventListener("click", () => toggleTracks("getVideoTracks", $("call-camera")));

function toggleTracks(which, button) {
  if (!call || !call.local) return;
  const off = button.getAttribute("aria-pressed") !== "true";
  for (const track of call.local[which]()) track.enabled = !off;
  button.setAttribute("aria-pressed", String(off));
}

// --- what the server tells ----------------------------------------------------------------------

async function onAnswered({ callId, sdp }) {
  if (!call || call.id !== callId || call.role !== "caller") return;
  show(`In call with ${displayName(call.peer)}`, "Connecting...", { active: true });
  await remoteDescription("answer", sdp);
  startRelaying();
}

async function onCandidate({ callId, candidate }) {
  if (!call || call.id !== callId || !call.pc) return;
  if (call.pc.remoteDescription) await call.pc.addIceCandidate(candidate).catch(() => {});
  else call.incoming.push(candidate);
}

function ended(callId, reason) {
  if (!call || call.id !== callId) {
    endedEarly.set(callId, reason);
    return;
  }
  hangUpLocally();
  hideSoon(REASONS[reason] || "Call ended");
}

function onAnsweredElsewhere({ callId }) {
  if (!call || call.id !== callId || call.pc) return;
  call = null;
  hideSoon("Answered on another device");
}

export function listenForCalls(socket) {
  socket.on("incomingCall", onIncoming);
  socket.on("callAnswered", onAnswered);
  socket.on("iceCandidate", onCandidate);
  socket.on("callAnsweredElsewhere", onAnsweredElsewhere);
  socket.on("callEnded", ({ callId, reason }) => ended(callId, reason));
  socket.on("callStarted", ({ to }) => notice("sidebar-error", `Calling ${displayName(to)} on another device`));
}
