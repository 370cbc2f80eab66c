// nextgpt web chat: plain JS, no build step, no asset from outside this server.
// Talks to the OpenAI-compatible API of `nextgpt serve` (docs/serving.md): attachments are uploaded with
// POST /v1/files and sent as media parts by file id; replies stream as server-sent events; the whole history,
// generated media included (by file id), is sent with every request, so the model sees what it made before.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = {
    model: $("model"), messages: $("messages"), form: $("composer"), prompt: $("prompt"), attach: $("attach"),
    attachments: $("attachments"), outputs: $("outputs"), seed: $("seed"), stream: $("stream"), send: $("send"),
    reset: $("reset"), status: $("status"), template: $("message-template"),
  };
  const ACCEPT = { image: "image/*", video: "video/*", audio: "audio/*" };

  const state = {
    modelId: null,
    history: [],        // OpenAI messages sent with every request
    pending: [],        // [{file: File, preview: objectURL}] attached to the next message
    controller: null,   // AbortController of the request in flight
  };

  // ------------------------------------------------------------------ helpers
  function setStatus(text, isError) {
    els.status.textContent = text || "";
    els.status.classList.toggle("error", !!isError);
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (_) { /* not JSON */ }
    return `${response.status} ${response.statusText}`;
  }

  function addMessage(role, extraClass) {
    const node = els.template.content.firstElementChild.cloneNode(true);
    node.classList.add(role);
    if (extraClass) node.classList.add(extraClass);
    node.querySelector(".role").textContent = role === "user" ? "you" : role === "assistant" ? "nextgpt" : role;
    els.messages.appendChild(node);
    scrollDown();
    return node;
  }

  function scrollDown() { els.messages.scrollTop = els.messages.scrollHeight; }

  function textBlock(message) {
    const body = message.querySelector(".body");
    let block = body.lastElementChild;
    if (!block || !block.classList.contains("text")) {
      block = document.createElement("div");
      block.className = "text";
      body.appendChild(block);
    }
    return block;
  }

  function mediaElement(modality, url, label) {
    let el;
    if (modality === "image") {
      el = document.createElement("img");
      el.alt = label || "image";
      el.addEventListener("load", scrollDown);
    } else if (modality === "video") {
      el = document.createElement("video");
      el.controls = true;
      el.loop = true;
      el.muted = true;
      el.playsInline = true;
    } else if (modality === "audio") {
      el = document.createElement("audio");
      el.controls = true;
    } else {  // any other registered modality (depth, ...): a link to the file
      el = document.createElement("a");
      el.textContent = label || `${modality} file`;
      el.download = "";
      el.href = url;
    }
    if (el.tagName !== "A") el.src = url;
    el.dataset.modality = modality;
    return el;
  }

  function showMedia(message, modality, url, label, fileId) {
    const body = message.querySelector(".body");
    let row = body.lastElementChild;
    if (!row || !row.classList.contains("media")) {
      row = document.createElement("div");
      row.className = "media";
      body.appendChild(row);
    }
    const el = mediaElement(modality, url, label);
    if (fileId) el.dataset.fileId = fileId;
    row.appendChild(el);
    scrollDown();
    return el;
  }

  function mediaPart(part) {  // a reply's {"type": "media", "media": {...}} -> {modality, url, file_id}
    const m = (part && part.media) || {};
    let url = m.url;
    if (!url && m.data) url = `data:${m.mime_type || "application/octet-stream"};base64,${m.data}`;
    return { modality: m.modality, url, fileId: m.file_id };
  }

  // ------------------------------------------------------------------ model card
  async function loadModel() {
    try {
      const response = await fetch("/v1/models");
      if (!response.ok) throw new Error(await errorMessage(response));
      const card = (await response.json()).data[0];
      state.modelId = card.id;
      const inputs = (card.input_modalities || []).filter((m) => m !== "text");
      const outputs = (card.output_modalities || []).filter((m) => m !== "text");
      els.model.textContent = `${card.id} · in: text${inputs.map((m) => ", " + m).join("")}` +
        ` · out: text${outputs.map((m) => ", " + m).join("")}`;
      for (const key of outputs) {
        const label = document.createElement("label");
        const box = document.createElement("input");
        box.type = "checkbox";
        box.value = key;
        box.name = "want";
        box.id = `want-${key}`;
        label.append(box, " " + key);
        els.outputs.appendChild(label);
      }
      if (!outputs.length) els.outputs.hidden = true;
      // the file picker offers what the model reads; an unknown modality (e.g. depth) allows any file
      const accepts = inputs.map((m) => ACCEPT[m]);
      if (!inputs.length) els.attach.disabled = true;
      else if (accepts.every(Boolean)) els.attach.accept = accepts.join(",");
      else els.attach.removeAttribute("accept");
      document.body.dataset.ready = "true";
    } catch (err) {
      els.model.textContent = "server not reachable";
      setStatus(`cannot read /v1/models: ${err.message}`, true);
    }
  }

  // ------------------------------------------------------------------ attachments
  function renderAttachments() {
    els.attachments.replaceChildren();
    state.pending.forEach((item, index) => {
      const chip = document.createElement("span");
      chip.className = "chip";
      if (item.file.type.startsWith("image/")) {
        const img = document.createElement("img");
        img.src = item.preview;
        img.alt = "";
        chip.appendChild(img);
      }
      chip.appendChild(document.createTextNode(item.file.name));
      const remove = document.createElement("button");
      remove.type = "button";
      remove.title = `remove ${item.file.name}`;
      remove.textContent = "×";
      remove.addEventListener("click", () => {
        URL.revokeObjectURL(item.preview);
        state.pending.splice(index, 1);
        renderAttachments();
      });
      chip.appendChild(remove);
      els.attachments.appendChild(chip);
    });
  }

  els.attach.addEventListener("change", () => {
    for (const file of els.attach.files) state.pending.push({ file, preview: URL.createObjectURL(file) });
    els.attach.value = "";
    renderAttachments();
  });

  async function upload(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("purpose", "user_data");
    const response = await fetch("/v1/files", { method: "POST", body: form, signal: state.controller.signal });
    if (!response.ok) throw new Error(`${file.name}: ${await errorMessage(response)}`);
    return response.json();  // {id, modality, url, ...}
  }

  // ------------------------------------------------------------------ one request
  function wanted() {
    return [...els.outputs.querySelectorAll("input[name=want]:checked")].map((box) => box.value);
  }

  function setBusy(busy) {
    els.send.textContent = busy ? "Stop" : "Send";
    els.send.classList.toggle("stop", busy);
    els.prompt.disabled = busy;
    els.reset.disabled = busy;
  }

  async function send() {
    const text = els.prompt.value.trim();
    const attachments = state.pending.slice();
    if (!text && !attachments.length) return;
    state.controller = new AbortController();
    setBusy(true);
    setStatus(attachments.length ? "uploading…" : "");
    const userNode = addMessage("user");
    let reply = null;
    try {
      const content = [];
      for (const item of attachments) {
        const record = await upload(item.file);
        content.push({ type: "media", media: { modality: record.modality, file_id: record.id } });
        showMedia(userNode, record.modality, record.url, record.filename, record.id);
      }
      if (text) {
        content.push({ type: "text", text });
        textBlock(userNode).textContent = text;
      }
      const body = { messages: [...state.history, { role: "user", content }], modalities: ["text", ...wanted()],
                     stream: els.stream.checked };
      if (state.modelId) body.model = state.modelId;
      if (els.seed.value !== "") body.seed = Number(els.seed.value);
      setStatus("generating…");
      reply = addMessage("assistant", "pending");
      const response = await fetch("/v1/chat/completions", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        signal: state.controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      const result = body.stream ? await readStream(response, reply) : await readCompletion(response, reply);
      reply.classList.remove("pending");
      // the turn is kept only once answered: the history the server sees is always complete
      state.history.push({ role: "user", content });
      const assistant = [];
      if (result.text) assistant.push({ type: "text", text: result.text });
      for (const m of result.media) assistant.push({ type: "media", media: { modality: m.modality, file_id: m.fileId } });
      state.history.push({ role: "assistant", content: assistant.length ? assistant : "" });
      const meta = document.createElement("div");
      meta.className = "muted meta";
      meta.textContent = [`seed ${result.seed}`, result.finish && result.finish !== "stop" ? result.finish : "",
                          ...(result.notices || [])].filter(Boolean).join(" · ");
      reply.querySelector(".body").appendChild(meta);
      els.prompt.value = "";
      attachments.forEach((item) => URL.revokeObjectURL(item.preview));
      state.pending = state.pending.filter((item) => !attachments.includes(item));
      renderAttachments();
      setStatus("");
    } catch (err) {
      // nothing of this turn stays in the history; the typed text and attachments stay in the composer
      userNode.remove();
      if (reply) reply.remove();
      const aborted = err.name === "AbortError";
      const note = addMessage(aborted ? "stopped" : "error", "error");
      textBlock(note).textContent = aborted ? "request stopped" : err.message;
      setStatus(aborted ? "stopped" : "the last message was not sent", !aborted);
    } finally {
      state.controller = null;
      setBusy(false);
      els.prompt.focus();
    }
  }

  async function readCompletion(response, node) {
    const data = await response.json();
    const message = data.choices[0].message;
    const media = [];
    for (const part of message.parts || []) {
      if (part.type === "text") textBlock(node).textContent += part.text;
      else if (part.type === "media") {
        const m = mediaPart(part);
        showMedia(node, m.modality, m.url, null, m.fileId);
        media.push(m);
      }
    }
    return { text: message.content || "", media, seed: data.seed, notices: data.notices, finish: data.choices[0].finish_reason };
  }

  async function readStream(response, node) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const result = { text: "", media: [], seed: null, notices: [], finish: null };
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (value) buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const payload = line.slice(5).trim();
          if (payload === "[DONE]") return result;
          const chunk = JSON.parse(payload);
          if (chunk.error) throw new Error(chunk.error.message || "the server failed");
          const choice = (chunk.choices || [])[0] || {};
          const delta = choice.delta || {};
          if (delta.content) {
            result.text += delta.content;
            textBlock(node).textContent += delta.content;
            scrollDown();
          }
          for (const part of delta.media || []) {
            const m = mediaPart(part);
            showMedia(node, m.modality, m.url, null, m.fileId);
            result.media.push(m);
          }
          if (choice.finish_reason) {
            result.finish = choice.finish_reason;
            result.seed = chunk.seed;
            result.notices = chunk.notices || [];
          }
        }
      }
      if (done) return result;
    }
  }

  // ------------------------------------------------------------------ wiring
  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.controller) state.controller.abort();  // the button reads "Stop" while a request runs
    else send();
  });
  els.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!state.controller) send();
    }
  });
  els.reset.addEventListener("click", () => {
    state.history = [];
    state.pending.forEach((item) => URL.revokeObjectURL(item.preview));
    state.pending = [];
    renderAttachments();
    els.messages.replaceChildren();
    setStatus("new conversation");
    els.prompt.focus();
  });

  loadModel();
})();
