// tocsin's web app script. Pages are rendered by the server; this file only sends forms to
// the JSON API (with the session's CSRF token), shows its answers, merges new notifications
// into the inbox, previews a feed, copies, and registers the service worker.
// It never writes markup from data: text goes in with textContent.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

function setPath(obj, path, value) {
  const parts = path.split(".");
  let o = obj;
  for (const p of parts.slice(0, -1)) {
    if (typeof o[p] !== "object" || o[p] === null) o[p] = {};
    o = o[p];
  }
  o[parts[parts.length - 1]] = value;
}

class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

// The JSON body a form stands for: its data-json, then each named field by its data-kind.
function body(form) {
  let out = form.dataset.json ? JSON.parse(form.dataset.json) : {};
  let any = !!form.dataset.json;
  for (const el of form.elements) {
    if (!el.name || el.disabled || el.type === "submit" || el.type === "button") continue;
    // a field that only means something with another (a digest's time, with its kind)
    if (el.dataset.needs && !form.elements[el.dataset.needs]?.value) continue;
    any = true;
    const kind = el.dataset.kind;
    let v;
    if (el.type === "checkbox") v = el.checked;
    else if (kind === "list") v = el.value.split(/[,\n]/).map((s) => s.trim()).filter((s) => s);
    else if (kind === "int") {
      if (el.value === "") continue;
      v = Number(el.value);
    } else if (kind === "from-now-secs") v = Date.now() + Number(el.value) * 1000;
    else if (kind === "json") {
      try {
        v = JSON.parse(el.value);
      } catch (e) {
        throw new FieldError(el.name, "not valid JSON: " + e.message);
      }
    } else {
      if (el.value === "") continue;
      v = el.value;
    }
    if (el.name === "$") out = v;
    else setPath(out, el.name, v);
  }
  return any ? out : null;
}

// The form's body; undefined once the reason it cannot be made (bad JSON) is shown.
function bodyOrShow(form) {
  try {
    return body(form);
  } catch (e) {
    showError(form, e.message, e.field);
    return undefined;
  }
}

function statusOf(form) {
  return form.querySelector(".form-status") ?? form.parentElement.querySelector(".form-status");
}

function clearErrors(form) {
  for (const el of form.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute("aria-invalid");
  const s = statusOf(form);
  if (s) {
    s.textContent = "";
    s.classList.remove("error");
  }
}

// The field an API error names (`filter.any`, `steps.0.wait_secs`): the form's field of that
// name, or of its first part, or the JSON editor.
function fieldFor(form, field) {
  if (!field) return null;
  const names = [field, field.split(".")[0], field.split("[")[0]];
  for (const n of names) {
    const el = form.querySelector(`[name="${CSS.escape(n)}"]`);
    if (el) return el;
  }
  return form.querySelector('[name="$"]');
}

// The API's refusal `{error: {message, field}}` of answer `r`, shown in `form`.
function showRefusal(form, r) {
  const err = r.data?.error ?? {};
  showError(form, err.message ?? `the server answered ${r.status}`, err.field);
}

function showError(form, message, field) {
  const s = statusOf(form);
  if (s) {
    s.textContent = message;
    s.classList.add("error");
    s.setAttribute("role", "alert");
  }
  const el = fieldFor(form, field);
  if (el) {
    el.setAttribute("aria-invalid", "true");
    el.focus();
  }
}

async function send(url, method, payload) {
  const headers = { "X-CSRF-Token": csrf() };
  const init = { method, headers, credentials: "same-origin" };
  if (payload !== null && method !== "GET" && method !== "DELETE") {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  const r = await fetch(url, init);
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  return { ok: r.ok, status: r.status, data };
}

async function submit(form) {
  clearErrors(form);
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
  const payload = bodyOrShow(form);
  if (payload === undefined) return;
  const button = form.querySelector('button[type="submit"]');
  if (button) button.disabled = true;
  try {
    const r = await send(form.dataset.api, form.dataset.method || "POST", payload);
    if (!r.ok) {
      if (r.status === 401 && !form.dataset.api.endsWith("/v1/session")) {
        location.assign("/app/sign-in");
        return;
      }
      showRefusal(form, r);
      return;
    }
    if (form.dataset.done) {
      const p = document.createElement("p");
      p.className = "done";
      p.textContent = form.dataset.done;
      form.replaceWith(p);
      return;
    }
    if (form.dataset.say) {
      // the answer in words: a test message's result, failed or not
      const s = statusOf(form);
      const ok = !form.dataset.ok || r.data?.[form.dataset.ok] === true;
      s.textContent = (ok ? "✓ " : "✗ ") + (r.data?.[form.dataset.say] ?? "");
      s.classList.toggle("error", !ok);
      return;
    }
    if (form.dataset.show) {
      const shown = form.parentElement.querySelector(".shown");
      const input = shown?.querySelector("input");
      if (input) {
        // a name, or a path into the answer (`feed.atom`)
        const value = form.dataset.show.split(".").reduce((o, k) => o?.[k], r.data);
        input.value = value ?? "";
        shown.hidden = false;
        input.focus();
        input.select();
      }
      return;
    }
    const then = form.dataset.then;
    if (then === "reload") location.reload();
    else if (then) location.assign(then);
  } catch (e) {
    showError(form, "the server is out of reach: " + e.message);
  } finally {
    if (button) button.disabled = false;
  }
}

// "Preview": fetch the feed now and show which items the filter lets through, and why.
async function preview(form) {
  clearErrors(form);
  const section = document.getElementById("preview");
  const payload = bodyOrShow(form);
  if (payload === undefined) return;
  const s = statusOf(form);
  if (s) s.textContent = "Fetching the feed…";
  const r = await send(form.dataset.preview, "POST", payload);
  if (s) s.textContent = "";
  if (!r.ok) {
    showRefusal(form, r);
    return;
  }
  const list = section.querySelector(".preview-items");
  list.replaceChildren();
  const items = r.data.items ?? [];
  const matching = items.filter((i) => i.matches).length;
  section.querySelector(".preview-summary").textContent =
    `${r.data.title ? r.data.title + ": " : ""}${matching} of ${items.length} items would notify you.`;
  for (const item of items) {
    const li = document.createElement("li");
    li.dataset.match = String(item.matches);
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = (item.matches ? "✓ " : "✗ ") + item.title;
    const why = document.createElement("span");
    why.className = "why";
    why.textContent = item.why;
    li.append(title, why);
    list.append(li);
  }
  section.hidden = false;
}

// New notifications: on each live event, fetch this page again and put the items it has
// that this one lacks at the top (the server renders them, as every other item).
function live(list) {
  if (new URLSearchParams(location.search).get("cursor")) return;
  let pending = null;
  const merge = async () => {
    pending = null;
    const r = await fetch(location.href, { credentials: "same-origin" });
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    const fresh = [...doc.querySelectorAll("#inbox > li.item")].filter(
      (li) => !document.getElementById(li.id),
    );
    for (const li of fresh.reverse()) {
      const node = document.importNode(li, true);
      node.classList.add("new");
      list.prepend(node);
    }
    if (fresh.length) {
      document.querySelector(".empty")?.remove();
      const note = document.getElementById("live-note");
      if (note) note.textContent = `${fresh.length} new notification${fresh.length > 1 ? "s" : ""}`;
    }
  };
  const events = new EventSource(list.dataset.live);
  events.addEventListener("notification", () => {
    if (!pending) pending = setTimeout(merge, 250);
  });
}

async function copy(button) {
  const input = document.querySelector(button.dataset.copy);
  if (!input) return;
  try {
    await navigator.clipboard.writeText(input.value);
  } catch (_) {
    input.select();
    document.execCommand("copy");
  }
  button.textContent = "Copied";
}

function keyBytes(b64url) {
  const s = atob(b64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (b64url.length % 4)) % 4));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

// "Notify this device": subscribe this browser to Web Push with the server's key, then add
// the subscription as a push destination like any other.
async function subscribePush(button) {
  const s = button.parentElement.querySelector(".form-status");
  const say = (text, bad) => {
    s.textContent = text;
    s.classList.toggle("error", !!bad);
  };
  try {
    if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
      say("This browser cannot receive push messages.", true);
      return;
    }
    const k = await send("/v1/push/key", "GET", null);
    if (!k.ok) {
      say(k.data?.error?.message ?? `the server answered ${k.status}`, true);
      return;
    }
    if ((await Notification.requestPermission()) !== "granted") {
      say("Notifications are blocked for this site: allow them in the browser's settings.", true);
      return;
    }
    const reg = await navigator.serviceWorker.ready;
    const sub = await reg.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(k.data.public_key),
    });
    const j = sub.toJSON();
    const r = await send("/v1/destinations", "POST", {
      channel: "push",
      push_format: "web_push",
      address: j.endpoint,
      secret: `${j.keys.p256dh}.${j.keys.auth}`,
      label: button.dataset.label || "This browser",
    });
    if (!r.ok) {
      say(r.data?.error?.message ?? `the server answered ${r.status}`, true);
      return;
    }
    location.reload();
  } catch (e) {
    say("Push could not be turned on: " + e.message, true);
  }
}

// "Import": an OPML file's feeds become sources; what was added and what was not, and why.
async function importOpml(button) {
  const s = button.parentElement.querySelector(".form-status");
  const say = (text, bad) => {
    s.textContent = text;
    s.classList.toggle("error", !!bad);
  };
  const file = document.getElementById(button.dataset.file)?.files?.[0];
  if (!file) {
    say("Choose an OPML file first.", true);
    return;
  }
  const r = await fetch("/v1/sources/opml", {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf(), "Content-Type": "text/x-opml" },
    body: await file.text(),
  });
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    say(data?.error?.message ?? `the server answered ${r.status}`, true);
    return;
  }
  const skipped = data.skipped.map((x) => `${x.url} (${x.reason})`).join("; ");
  say(`Added ${data.added.length} feed(s).` + (skipped ? ` Not added: ${skipped}.` : ""), false);
}

document.addEventListener("submit", (e) => {
  const form = e.target.closest("form[data-api]");
  if (!form) return;
  e.preventDefault();
  submit(form);
});

document.addEventListener("click", (e) => {
  const b = e.target.closest("button");
  if (!b) return;
  if (b.dataset.action === "preview") preview(b.form);
  else if (b.dataset.action === "push-subscribe") subscribePush(b);
  else if (b.dataset.action === "opml-import") importOpml(b);
  else if (b.dataset.copy) copy(b);
});

const inbox = document.getElementById("inbox");
if (inbox?.dataset.live) live(inbox);

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
}
