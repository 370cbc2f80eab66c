// nextgpt web chat: plain JS, no build step, no asset from outside this server.
// Talks to the OpenAI-compatible API of `nextgpt serve` (docs/serving.md): attachments are uploaded with
// POST /v1/files and sent by file id; replies (streamed or not) carry generated media as image_url / video_url /
// audio_url / media parts of message.content, inline as data: URLs; the whole history, generated media included
// (by file id), is sent with every request, so the model sees what it made before.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = {
    model: $("model"), messages: $("messages"), form: $("composer"), prompt: $("prompt"), attach: $("attach"),
    attachments: $("attachments"), outputs: $("outputs"), seed: $("seed"), stream: $("stream"), send: $("send"),
    reset: $("reset"), status: $("status"), template: $("message-template"), keyForm: $("key-form"), key: $("key"),
  };
  // OpenAI's part type of a modality's media (any other modality is a nextgpt "media" part)
  const URL_PART = { image: "image_url", video: "video_url", audio: "audio_url" };
  const PART_MODALITY = { image_url: "image", video_url: "video", audio_url: "audio" };
  const SMALL = 256;  // media smaller than this (CSS px) are scaled up by a whole factor, pixels kept sharp

  const state = {
    modelId: null,
    formats: {},        // input modality -> {extensions, mime_types, by_suffix} (from /v1/models)
    history: [],        // OpenAI messages sent with every request
    pending: [],        // [{file, preview, modality, choices}] attached to the next message
    controller: null,   // AbortController of the request in flight
    key: sessionStorage.getItem("nextgpt-api-key") || "",
  };

  // ------------------------------------------------------------------ helpers
  function setStatus(text, isError) {
    els.status.textContent = text || "";
    els.status.classList.toggle("error", !!isError);
  }

  function api(path, options) {  // fetch with the API key, when one is set
    const opts = Object.assign({}, options || {});
    opts.headers = Object.assign({}, opts.headers || {});
    if (state.key) opts.headers.Authorization = `Bearer ${state.key}`;
    return fetch(path, opts);
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

  // a small picture or clip (the toy world's 32x32) is shown at a whole multiple of its size, pixels kept sharp
  function scaleUp(el, width, height) {
    if (!width || !height) return;
    const factor = Math.max(1, Math.floor(SMALL / Math.max(width, height)));
    el.style.width = `${width * factor}px`;
    el.style.height = `${height * factor}px`;
    el.dataset.scale = String(factor);
  }

  // a short sound gets its waveform drawn next to the player (decoded offline: no playback needed)
  async function drawWaveform(canvas, url) {
    try {
      const bytes = await (await (url.startsWith("data:") ? fetch(url) : api(url))).arrayBuffer();
      const audio = await new OfflineAudioContext(1, 1, 44100).decodeAudioData(bytes);
      const samples = audio.getChannelData(0);
      const ctx = canvas.getContext("2d");
      const { width, height } = canvas;
      ctx.fillStyle = "#f0f3f8";
      ctx.fillRect(0, 0, width, height);
      ctx.fillStyle = "#2f6fde";
      const step = Math.max(1, Math.floor(samples.length / width));
      let peak = 1e-9;
      for (let i = 0; i < samples.length; i++) peak = Math.max(peak, Math.abs(samples[i]));
      for (let x = 0; x < width; x++) {
        let lo = 0, hi = 0;
        for (let i = x * step; i < Math.min((x + 1) * step, samples.length); i++) {
          lo = Math.min(lo, samples[i]); hi = Math.max(hi, samples[i]);
        }
        const top = (1 - hi / peak) * height / 2, bottom = (1 - lo / peak) * height / 2;
        ctx.fillRect(x, top, 1, Math.max(1, bottom - top));
      }
      canvas.title = `${audio.duration.toFixed(2)} s`;
      canvas.dataset.drawn = "true";
    } catch (err) {
      canvas.remove();  // the player alone still works
    }
  }

  function mediaElement(modality, url, label) {
    let el;
    if (modality === "image") {
      el = document.createElement("img");
      el.alt = label || "image";
      el.addEventListener("load", () => { scaleUp(el, el.naturalWidth, el.naturalHeight); scrollDown(); });
      el.src = url;
    } else if (modality === "video") {
      el = document.createElement("video");
      el.controls = true;
      el.loop = true;
      el.muted = true;
      el.autoplay = true;  // a few frames: play them over and over
      el.playsInline = true;
      el.addEventListener("loadedmetadata", () => { scaleUp(el, el.videoWidth, el.videoHeight); scrollDown(); });
      el.src = url;
    } else if (modality === "audio") {
      el = document.createElement("span");
      el.className = "sound";
      const player = document.createElement("audio");
      player.controls = true;
      player.src = url;
      player.dataset.modality = "audio";
      const canvas = document.createElement("canvas");
      canvas.width = SMALL;
      canvas.height = 48;
      canvas.className = "waveform";
      el.append(canvas, player);
      drawWaveform(canvas, url);
      return el;
    } else {  // any other registered modality (depth, ...): a link to the file
      el = document.createElement("a");
      el.textContent = label || `${modality} file`;
      el.download = "";
      el.href = url;
    }
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

  // a reply's media part -> {modality, url, fileId}; null for a text part
  function mediaOf(part) {
    if (!part || part.type === "text") return null;
    if (part.type === "media") {
      const m = part.media || {};
      const url = m.data ? `data:${m.mime_type || "application/octet-stream"};base64,${m.data}` : m.url;
      return { modality: m.modality, url, fileId: m.file_id };
    }
    const ref = part[part.type] || {};
    return { modality: PART_MODALITY[part.type] || part.type, url: ref.url, fileId: ref.file_id };
  }

  // what the history keeps of a medium: its file, by id (the reply's inline data is not sent again)
  function historyPart(m) {
    const kind = URL_PART[m.modality];
    return kind ? { type: kind, [kind]: { url: m.fileId } } : { type: "media", media: { modality: m.modality, file_id: m.fileId } };
  }

  // ------------------------------------------------------------------ model card
  async function loadModel() {
    try {
      const response = await api("/v1/models");
      if (response.status === 401) { askForKey(); return; }
      if (!response.ok) throw new Error(await errorMessage(response));
      els.keyForm.hidden = true;
      const card = (await response.json()).data[0];
      state.modelId = card.id;
      state.formats = card.input_formats || {};
      const inputs = (card.input_modalities || []).filter((m) => m !== "text");
      const outputs = (card.output_modalities || []).filter((m) => m !== "text");
      els.model.textContent = `${card.id} · in: text${inputs.map((m) => ", " + m).join("")}` +
        ` · out: text${outputs.map((m) => ", " + m).join("")}`;
      els.outputs.querySelectorAll("label").forEach((label) => label.remove());
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
      els.outputs.hidden = !outputs.length;
      // the file picker offers exactly the files some input modality reads: their suffixes and MIME types
      const accept = new Set();
      for (const key of inputs) {
        const f = state.formats[key] || {};
        (f.extensions || []).forEach((e) => accept.add(e));
        (f.mime_types || []).forEach((m) => accept.add(m));
      }
      els.attach.disabled = !accept.size;
      els.attach.accept = [...accept].join(",");
      els.attach.closest("label").classList.toggle("disabled", !accept.size);
      document.body.dataset.ready = "true";
      setStatus("");
    } catch (err) {
      els.model.textContent = "server not reachable";
      setStatus(`cannot read /v1/models: ${err.message}`, true);
    }
  }

  function askForKey() {
    els.keyForm.hidden = false;
    els.model.textContent = "this server needs an API key";
    setStatus(state.key ? "the API key was refused" : "enter the server's API key", !!state.key);
    els.key.focus();
  }

  els.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = els.key.value.trim();
    sessionStorage.setItem("nextgpt-api-key", state.key);  // this tab only
    loadModel();
  });

  // ------------------------------------------------------------------ attachments
  function suffixOf(name) {
    const dot = name.lastIndexOf(".");
    return dot > 0 ? name.slice(dot).toLowerCase() : "";
  }

  // the input modalities that read a file, the one detected by suffix first (a .png is an image, or a depth map)
  function modalitiesFor(file) {
    const suffix = suffixOf(file.name);
    const found = Object.entries(state.formats).filter(([, f]) =>
      (suffix && (f.extensions || []).includes(suffix)) || (!suffix && (f.mime_types || []).includes(file.type)));
    found.sort((a, b) => Number(!!b[1].by_suffix) - Number(!!a[1].by_suffix));
    return found.map(([key]) => key);
  }

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
      if (item.choices.length > 1) {  // the same file type is read by several modalities: the user says which
        const pick = document.createElement("select");
        pick.title = `read ${item.file.name} as`;
        pick.className = "as-modality";
        for (const key of item.choices) pick.add(new Option(key, key, false, key === item.modality));
        pick.addEventListener("change", () => { item.modality = pick.value; });
        chip.appendChild(pick);
      }
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
    const refused = [];
    for (const file of els.attach.files) {
      const choices = modalitiesFor(file);
      if (!choices.length) { refused.push(file.name); continue; }
      state.pending.push({ file, preview: URL.createObjectURL(file), modality: choices[0], choices });
    }
    els.attach.value = "";
    renderAttachments();
    if (refused.length) setStatus(`${refused.join(", ")}: this model cannot read that file type (it reads ${els.attach.accept})`, true);
    else setStatus("");
  });

  async function upload(item) {
    const form = new FormData();
    form.append("file", item.file, item.file.name);
    form.append("purpose", "user_data");
    form.append("modality", item.modality);
    const response = await api("/v1/files", { method: "POST", body: form, signal: state.controller.signal });
    if (!response.ok) throw new Error(`${item.file.name}: ${await errorMessage(response)}`);
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
        const record = await upload(item);
        content.push(historyPart({ modality: record.modality, fileId: record.id }));
        showMedia(userNode, record.modality, item.preview, record.filename, record.id);  // the local copy
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
      const response = await api("/v1/chat/completions", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        signal: state.controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      const result = body.stream ? await readStream(response, reply) : await readCompletion(response, reply);
      reply.classList.remove("pending");
      // the turn is kept only once answered: the history the server sees is always complete
      state.history.push({ role: "user", content });
      const assistant = [];
      for (const piece of result.pieces) {
        if (typeof piece === "string") { if (piece.trim()) assistant.push({ type: "text", text: piece }); }
        else assistant.push(historyPart(piece));
      }
      state.history.push({ role: "assistant", content: assistant.length ? assistant : "" });
      const meta = document.createElement("div");
      meta.className = "muted meta";
      meta.textContent = [`seed ${result.seed}`, result.finish && result.finish !== "stop" ? result.finish : "",
                          ...(result.notices || [])].filter(Boolean).join(" · ");
      reply.querySelector(".body").appendChild(meta);
      els.prompt.value = "";
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

  function showPart(node, part, result) {
    if (typeof part === "string") {
      textBlock(node).textContent += part;
      result.pieces.push(part);
      return;
    }
    if (part.type === "text") { showPart(node, part.text, result); return; }
    const m = mediaOf(part);
    if (!m) return;
    showMedia(node, m.modality, m.url, null, m.fileId);
    result.pieces.push(m);
  }

  async function readCompletion(response, node) {
    const data = await response.json();
    const message = data.choices[0].message;
    const result = { pieces: [], seed: data.seed, notices: data.notices, finish: data.choices[0].finish_reason };
    const content = message.content;
    if (typeof content === "string") showPart(node, content, result);
    else for (const part of content || []) showPart(node, part, result);  // message.audio is its audio_url part
    return result;
  }

  async function readStream(response, node) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const result = { pieces: [], seed: null, notices: [], finish: null };
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
          if (typeof delta.content === "string") {
            if (delta.content) { showPart(node, delta.content, result); scrollDown(); }
          } else {
            for (const part of delta.content || []) showPart(node, part, result);
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
