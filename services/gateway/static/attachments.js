// Attachments (issue 16): attach with the button, by dropping files on the conversation, or by
// pasting; each file uploads at once (POST /api/attachments, with a progress bar) and waits in
// the tray until the message is sent with their ids. Received images show their thumbnail (a
// click opens the full image); other files are a card with name and size. Every URL comes from
// the server's answer; names reach the page through textContent only.

import { $, element, notice } from "./util.js";

const MAX_BYTES = 25 * 1024 * 1024;
const MAX_PER_MESSAGE = 10;
// Uploaded and not yet sent: {id, name, chip}. Uploads under way are not in it.
const ready = [];
let uploading = 0;

export function readyAttachmentIds() {
  return ready.map((item) => item.id);
}

export function uploadsInProgress() {
  return uploading > 0;
}

/** Empties the tray once the message carrying its attachments is on its way. */
export function clearTray() {
  for (const item of ready.splice(0)) item.chip.remove();
}

export function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** What a message shows of its attachments (an empty fragment when it has none). */
export function attachmentsElement(message) {
  const box = element("div", "attachments");
  for (const attachment of message.attachments || []) {
    if (attachment.thumbnailUrl) {
      const link = element("a", "attachment-image");
      link.href = attachment.url;
      link.target = "_blank";
      link.rel = "noopener";
      const image = element("img");
      image.src = attachment.thumbnailUrl;
      image.alt = attachment.name;
      image.loading = "lazy";
      if (attachment.width && attachment.height) {
        const scale = Math.min(1, 320 / Math.max(attachment.width, attachment.height));
        image.width = Math.round(attachment.width * scale);
        image.height = Math.round(attachment.height * scale);
      }
      link.append(image);
      box.append(link);
    } else {
      const card = element("a", "attachment-file");
      card.href = attachment.url;
      card.download = attachment.name;
      card.append(element("span", "file-name", attachment.name), element("span", "file-size", humanSize(attachment.size)));
      box.append(card);
    }
  }
  return box;
}

function upload(file) {
  if (file.size > MAX_BYTES) {
    notice("composer-error", `${file.name} is larger than 25 MB`);
    return;
  }
  if (ready.length + uploading >= MAX_PER_MESSAGE) {
    notice("composer-error", `At most ${MAX_PER_MESSAGE} attachments per message`);
    return;
  }
  const chip = element("li", "attachment-chip");
  const label = element("span", "chip-name", file.name);
  const bar = element("progress");
  bar.max = 1;
  bar.value = 0;
  chip.append(label, bar);
  $("attachment-tray").append(chip);
  const body = new FormData();
  body.append("file", file, file.name);
  const request = new XMLHttpRequest();
  request.open("POST", "/api/attachments");
  request.withCredentials = true;
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) bar.value = event.loaded / event.total;
  });
  uploading += 1;
  request.addEventListener("loadend", () => {
    uploading -= 1;
    let answer = null;
    try { answer = JSON.parse(request.responseText); } catch { answer = null; }
    if (request.status !== 201 || !answer) {
      chip.remove();
      notice("composer-error", (answer && answer.message) || `${file.name} could not be uploaded`);
      return;
    }
    bar.remove();
    const remove = element("button", "chip-remove", "\u00d7");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove ${file.name}`);
    const item = { id: answer._id, name: answer.name, chip };
    remove.addEventListener("click", () => {
      ready.splice(ready.indexOf(item), 1);
      chip.remove();
    });
    chip.append(element("span", "chip-size", humanSize(answer.size)), remove);
    chip.dataset.id = answer._id;
    ready.push(item);
  });
  request.send(body);
}

function uploadAll(files) {
  for (const file of files) upload(file);
}

$("attach").addEventListener("click", () => $("attach-input").click());
$("attach-input").addEventListener("change", () => {
  uploadAll([...$("attach-input").files]);
  $("attach-input").value = "";
});

for (const zone of [$("messages"), $("composer")]) {
  zone.addEventListener("dragover", (event) => {
    if (!$("composer").hidden && event.dataTransfer && [...event.dataTransfer.types].includes("Files")) {
      event.preventDefault();
      zone.classList.add("dropping");
    }
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dropping"));
  zone.addEventListener("drop", (event) => {
    zone.classList.remove("dropping");
    if ($("composer").hidden || !event.dataTransfer || !event.dataTransfer.files.length) return;
    event.preventDefault();
    uploadAll([...event.dataTransfer.files]);
  });
}

$("text").addEventListener("paste", (event) => {
  const files = event.clipboardData ? [...event.clipboardData.files] : [];
  if (!files.length) return;
  event.preventDefault();
  uploadAll(files);
});
